"""Prescriptions that follow the chart, whichever source proposes them.

A prescription is a decision taken at an encounter, so the `Prescriber` keeps orders inside
encounters: a drug proposed outside one (history before the record, a refill between visits) is not
an order; a chronic drug the patient already takes is ordered at the next encounter instead, and
nothing is dated before the record starts. A drug already active is not ordered again (nor twice in
one visit, nor a second drug of a group already covered) until its renewal falls due at a visit, at
most once every `RENEWAL_DAYS`; refills between visits are the pharmacy's, carried by the order's
repeats. Renewals, and long-term drugs carried from before the record, wait for an office visit
(`RENEWING_CLASSES`): an emergency department treats the acute problem and may start a drug for it,
it does not renew a statin. Children get the children's product of a drug, or none below its age.
At every encounter an active condition that lacks its guideline therapy (`guideline_therapy.csv`)
gets it (one with thresholds, `therapy_thresholds.csv`, when a reading of the visit reaches one: a
diagnosed hypertension at 140/90 mm Hg starts an antihypertensive), a chronic condition's long-term therapy in the ED only when the ED diagnoses it and the
therapy is one the ED starts (`ed_starts`: coronary disease found at a chest-pain visit starts its
statin there; a diabetes found there is left to the office). A chronic drug stops when its
indication ends, unless another of its indications is active, and when a lab value rules it out
(`drug_lab_limits.csv`: metformin once the eGFR is below 30), which also keeps it from being started,
and at the first encounter of a pregnancy when the pregnancy rules it out (`pregnancy_drugs.csv`:
lisinopril, losartan, statins, warfarin), replaced there by a drug of its group the pregnancy allows
(labetalol or nifedipine for hypertension, ACOG 2019) where there is one; nothing a pregnancy rules
out is started during it. A patient still above goal at an office visit after three months on one
drug gets a second (`step_up_therapy.csv`: another first-line antihypertensive at 140/90 mm Hg,
ACC/AHA 2017; a GLP-1 receptor agonist beside metformin at an HbA1c of 8%, ADA 2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from trajsim.engine.chart import ChartKeeper
from trajsim.engine.draws import pick
from trajsim.engine.source import ACTIVE, NEVER_RECORDED, Fact, PatientState, Visit
from trajsim.events import CONDITION_END, MEDICATION_END
from trajsim.knowledge import Condition, Knowledge, Medication
from trajsim.knowledge.lifecycles import PREGNANCY
from trajsim.knowledge.physiology import SAME_MEASUREMENT
from trajsim.knowledge.tables import per_knowledge
from trajsim.knowledge.therapy import (
    RENEWAL_DAYS, added_only, adult_product, drug_groups, drug_indications, drug_lab_limits, guideline_therapies,
    pregnancy_drugs, product_for_age, step_ups, supply_days, therapy_ages,
)
from trajsim.vocab import domain_of

# Where a long-term drug is renewed or continued: office visits, whose clinician keeps the patient's
# medication list (an ED visit treats the acute problem; renewals are left to the usual source of care).
RENEWING_CLASSES = frozenset({"AMB"})


def choose(knowledge: Knowledge, options: list[Medication], patient: PatientState,
           pregnant: bool = False) -> Medication | None:
    """One of the alternatives `options` by weight, leaving out drugs the patient's allergies rule
    out; while `pregnant`, also those a pregnancy rules out, and among the rest those preferred in
    pregnancy by their own weights where `pregnancy_drugs.csv` names some (labetalol or nifedipine
    for hypertension). None when no alternative is left."""
    ruled_out = knowledge.contraindications
    allowed = [m for m in options if not ruled_out.get(m.code, frozenset()) & patient.allergies]
    weights = [m.weight for m in allowed]
    if pregnant:
        drugs = pregnancy_drugs(knowledge)
        allowed = [m for m in allowed if m.code not in drugs.avoided]
        preferred = [m for m in allowed if m.code in drugs.preferred.get((m.condition, m.group), {})]
        allowed = preferred or allowed
        weights = [drugs.preferred[m.condition, m.group][m.code] if preferred else m.weight for m in allowed]
    if sum(weights) <= 0:  # nothing left, or only drugs chosen in pregnancy alone (weight 0)
        return None
    return allowed[pick(patient.rng, [w / sum(weights) for w in weights])]


def pregnant_on(knowledge: Knowledge, patient: PatientState, day: float) -> bool:
    """Whether a pregnancy (under any of its codes) is active on `day`."""
    by_code = knowledge.conditions_by_code
    return any(by_code[c].code == PREGNANCY for c in patient.active_conditions(day) if c in by_code)


def order(medication: Medication, condition: Condition) -> list[Fact]:
    """The facts of one order: the drug for its indication, and its end after a fixed course."""
    facts = [Fact(medication.code, text=condition.code)]
    if medication.course_days:
        facts.append(Fact(MEDICATION_END, offset_days=medication.course_days, text=medication.code))
    return facts


def prescribe(knowledge: Knowledge, condition: Condition, patient: PatientState, day: float | None = None) -> list[Fact]:
    """One drug from each group of first-line alternatives for this indication, leaving out drugs
    the patient's allergies rule out (a group with none left is skipped) and groups a guideline
    limits to other ages (statins for diabetics 40-75), judged at the age on `day` (the history's
    day of diagnosis; `patient.now` unless given), and drugs a pregnancy then rules out; the drugs
    only a step-up adds wait for it; a drug with a fixed course ends after it."""
    groups: dict[str, list[Medication]] = {}
    day = patient.now if day is None else day
    age, ages, pregnant = patient.age_at(day), therapy_ages(), pregnant_on(knowledge, patient, day)
    for medication in knowledge.medications.get(condition.key, ()):
        low, high = ages.get((condition.key, medication.group), (0.0, math.inf))
        if low <= age < high and (condition.key, medication.group) not in added_only(knowledge):
            groups.setdefault(medication.group, []).append(medication)
    chosen = (choose(knowledge, options, patient, pregnant) for options in groups.values())
    return [fact for medication in chosen if medication is not None for fact in order(medication, condition)]


@per_knowledge
def groups_by_indication(knowledge: Knowledge) -> dict[tuple[str, str], str]:
    """(drug code, SNOMED CT code of an indication) -> the drug's `medications.csv` group for it."""
    return {(m.code, knowledge.conditions[m.condition].code): m.group for ms in knowledge.medications.values() for m in ms}


first_line_indications = per_knowledge(drug_indications)  # the knowledge's own, shared by every patient's Prescriber


@per_knowledge
def course_days(knowledge: Knowledge) -> dict[str, float]:
    """Drug code -> the days of its fixed course, for the drugs that have one."""
    return {m.code: m.course_days for ms in knowledge.medications.values() for m in ms if m.course_days}


class Prescriber(ChartKeeper):
    """Holds every source's prescriptions to encounters, renewals, the guidelines and the patient's age.
    With `renews`, it also renews drugs taken at the visits that fall due (a source that learned its
    records' orders renews them itself); `indications` and `judged` are the source's
    (`TrajectorySource.indications`, `.judged`)."""

    def __init__(self, knowledge: Knowledge, renews: bool = True,
                 indications: Mapping[str, tuple[str, ...]] | None = None,
                 judged: frozenset[str] | None = None) -> None:
        self.k, self.renews = knowledge, renews
        self.indications = first_line_indications(knowledge) if indications is None else indications
        self.judged = frozenset(knowledge.indications) if judged is None else judged
        self.groups = drug_groups(knowledge)
        self.group_for = groups_by_indication(knowledge)
        self.therapies = guideline_therapies(knowledge)
        self.step_ups = step_ups(knowledge)
        self.started: dict[str, float] = {}  # drug ordered -> the day its course taken now began
        self.supply = supply_days(knowledge)
        self.course = course_days(knowledge)
        self.last_order: dict[str, float] = {}  # drug ordered -> day of its last order
        self.indication: dict[str, str] = {}  # drug ordered -> the condition code it is taken for
        self.carried: dict[str, str | None] = {}  # drug taken from before an encounter -> its indication
        self.pending: set[str] = set()  # drugs ordered at the visit being vetted, not recorded yet
        self.stopping: dict[str, str | None] = {}  # drugs stopped at the visit being vetted -> their indication
        self.pregnancy = pregnancy_drugs(knowledge)
        self.pregnant = False  # whether a pregnancy is active at the visit being vetted
        self.lab_limits = drug_lab_limits(knowledge)
        self.limit_labs = frozenset(limit.lab for limit in self.lab_limits)
        self.latest: dict[str, float] = {}  # lab code -> its latest value, for the limits

    def vet(self, patient: PatientState, visit: Visit) -> None:
        self.pending.clear()
        self.stopping.clear()
        if visit.encounter_class is None:
            kept = (self._outside_encounter(patient, visit, fact) for fact in visit.facts)
            visit.facts[:] = [fact for fact in kept if fact is not None]
            return
        day, age = visit.day, patient.age_at(visit.day)
        active = self._active_conditions(patient, visit)
        self.pregnant = PREGNANCY in active
        diagnosed = self._diagnosed_in(patient, visit)
        readings: dict[str, float] = {}  # measurement -> its highest value at this visit, for therapy thresholds
        for f in visit.facts:
            if f.value is not None:
                code = SAME_MEASUREMENT.get(f.code, f.code)
                readings[code] = max(f.value, readings.get(code, -math.inf))
                if code in self.limit_labs:
                    self.latest[code] = f.value
        ordered: dict[str, tuple[str, float]] = {}  # drug proposed at this visit -> the product ordered, when
        kept = []
        for fact in visit.facts:
            if domain_of(fact.code) == "medication":
                product = product_for_age(fact.code, age)
                if product is not None and self._ruled_out(product):
                    continue
                # a judged drug needs one of its indications active now, whatever the source
                # believed when it wrote the visit; another (a source's own formulary, ordered for
                # many reasons) cannot be judged: it names an active reason if it has one
                known = adult_product(fact.code) in self.judged
                indication = self._indication(fact.code, active, fact.text)
                if (product is None or (known and indication is None)
                        or not self._may_order(patient, product, indication, day, visit.encounter_class)):
                    continue
                # ordered once its indication is diagnosed, not before it in a stay of several days
                offset = min(max(fact.offset_days, diagnosed.get(self._snomed(indication), 0.0)), visit.duration_days)
                ordered[adult_product(fact.code)] = product, offset
                fact = replace(fact, code=product, text=indication, offset_days=offset)
                self._ordered(patient, product, fact.text, day)
            elif fact.code == MEDICATION_END and domain_of(fact.text or "") is None:
                pass  # the stop of a source's own drug code (MIMIC's local NDCs), which no rule judges
            elif fact.code == MEDICATION_END:
                # the stop may name the drug proposed, its adult product or the product ordered
                order = ordered.get(adult_product(fact.text)) or next(
                    (o for o in ordered.values() if o[0] == fact.text), None)
                if order is not None and fact.offset_days <= order[1]:
                    continue  # a stop at its own order is no course taken: the course's end is dated below
                ended = order[0] if order else self._taken(patient, fact.text, day)
                self.carried.pop(fact.text, None)
                if (ended is None or (order is None and patient.medications.get(ended) != ACTIVE)
                        or any(f.code == MEDICATION_END and f.text == ended for f in kept)):
                    continue  # not taken, or its end is dated already (a course's): one stop per order
                fact = replace(fact, text=ended)
            kept.append(fact)
        ending = {fact.text for fact in kept if fact.code == MEDICATION_END}
        kept += [Fact(MEDICATION_END, offset_days=offset + self.course[adult_product(code)], text=code)
                 for code, offset in ordered.values() if adult_product(code) in self.course and code not in ending]
        for code in sorted(self.last_order):  # a lab value or a pregnancy now rules out a drug taken: it stops today
            if self._ruled_out(code) and self._taken(patient, code, day) == code and code not in ending:
                kept.append(Fact(MEDICATION_END, text=code, always_recorded=True))
                del self.last_order[code]
                self.stopping[code] = self.indication.pop(code, None)
        visit.facts[:] = kept + self._due(patient, visit, active, diagnosed, readings)

    def _outside_encounter(self, patient: PatientState, visit: Visit, fact: Fact) -> Fact | None:
        """A fact outside any encounter as kept (None: dropped): a drug not taken yet is carried to the
        next encounter instead (a refill of one taken is the pharmacy's), and the stop of a drug taken
        is kept, naming the product taken, unless its end is dated already."""
        day = visit.day + fact.offset_days
        if domain_of(fact.code) == "medication":
            if self._taken(patient, fact.code, day) is None:
                self.carried[fact.code] = fact.text
            return None
        if fact.code == MEDICATION_END and domain_of(fact.text or "") is None:
            return fact  # a source's own drug code, which no rule judges
        if fact.code == MEDICATION_END and fact.text in self.carried:
            del self.carried[fact.text]
            return None
        if fact.code == MEDICATION_END:
            taken = self._taken(patient, fact.text, day)
            if taken is None or patient.medications.get(taken) != ACTIVE:
                return None  # not taken, or its end is dated already (a course's): one stop per order
            return replace(fact, text=taken)
        return fact

    # --- what an encounter adds ----------------------------------------------------------------
    def _due(self, patient: PatientState, visit: Visit, active: set[str], diagnosed: dict[str, float],
             readings: dict[str, float]) -> list[Fact]:
        """Renewals falling due and long-term drugs carried from before the encounter (at an office
        visit), course drugs carried, and missing guideline therapy (a long-term drug at an ED visit only
        for a condition it diagnoses, when the ED starts that therapy; one with thresholds only when
        the visit's `readings` reach one: an antihypertensive at a stage-2 blood pressure),
        each ordered once its indication is diagnosed (`diagnosed`: offsets of this visit's diagnoses)."""
        day, age, facts = visit.day, patient.age_at(visit.day), []
        renewing = visit.encounter_class in RENEWING_CLASSES
        by_code = self.k.conditions_by_code

        def add(code: str, indication: str) -> None:
            offset = min(diagnosed.get(self._snomed(indication), 0.0), visit.duration_days)
            facts.append(Fact(code, offset_days=offset, text=indication))
            if adult_product(code) in self.course:
                facts.append(Fact(MEDICATION_END, offset_days=offset + self.course[adult_product(code)], text=code))
            self._ordered(patient, code, indication, day)

        for code in sorted(self.last_order) if self.renews and renewing else ():
            if code in self.supply and self._taken(patient, code, day) and self._may_order(patient, code, None, day):
                indication = self._indication(code, active)
                if indication is not None:
                    add(code, indication)
        for code, indication in sorted(self.stopping.items()) if self.pregnant else ():
            # a drug the pregnancy rules out gives way to one of its group the pregnancy allows
            group = self.group_for.get((adult_product(code), self._snomed(indication))) if indication else None
            if group is None:
                continue
            medication = choose(self.k, [m for m in self.k.medications[by_code[indication].key] if m.group == group],
                                patient, pregnant=True)
            product = None if medication is None else product_for_age(medication.code, age)
            if product is not None and not self._ruled_out(product) and self._may_order(patient, product, indication, day):
                add(product, indication)
        for code, proposed in sorted(self.carried.items()):
            if not renewing and adult_product(code) in self.supply:
                continue  # a long-term drug taken from before waits for the office visit
            product, indication = product_for_age(code, age), self._indication(code, active, proposed)
            if (product is not None and indication is not None and not self._ruled_out(product)
                    and self._may_order(patient, product, indication, day)):
                add(product, indication)
            del self.carried[code]
        for therapy in self.therapies:
            condition = self.k.conditions[therapy.condition]
            if (condition.code not in active or not therapy.due(age, readings)
                    or (visit.encounter_class == "EMER" and condition.course == "chronic"
                        and not (therapy.ed_starts and condition.code in diagnosed))
                    or any(self._taken(patient, c, day) for c in therapy.codes)):
                continue
            medication = choose(self.k, [m for m in self.k.medications[therapy.condition] if m.group == therapy.group],
                                patient, self.pregnant)
            product = None if medication is None else product_for_age(medication.code, age)
            if product is not None and not self._ruled_out(product):
                add(product, condition.code)
        for step in self.step_ups if renewing else ():
            condition = self.k.conditions[step.condition]
            taken = {c for c in self.last_order if self._taken(patient, c, day)
                     and {step.group, step.add_group} & self.groups.get(c, frozenset())}
            base = [c for c in taken if step.group in self.groups.get(c, frozenset())]
            if (condition.code not in active or not step.due(age, readings) or len(taken) != 1 or not base
                    or day - self.started.get(base[0], day) < step.after_days):
                continue
            options = [m for m in self.k.medications[step.condition] if m.group == step.add_group and m.code not in taken]
            medication = choose(self.k, options, patient, self.pregnant)
            product = None if medication is None else product_for_age(medication.code, age)
            if product is not None and not self._ruled_out(product):
                add(product, condition.code)
        return facts

    def _active_conditions(self, patient: PatientState, visit: Visit) -> set[str]:
        """SNOMED CT codes of the conditions active at the visit's start, counting its own diagnoses."""
        codes = patient.active_conditions(visit.day) | {f.code for f in visit.facts if domain_of(f.code) == "condition"}
        codes -= {f.text for f in visit.facts if f.code == CONDITION_END and f.offset_days <= 0}
        return {self._snomed(c) for c in codes}

    def _diagnosed_in(self, patient: PatientState, visit: Visit) -> dict[str, float]:
        """SNOMED CT codes of the conditions first diagnosed at this visit -> the offset of the diagnosis."""
        before = {self._snomed(c) for c in patient.active_conditions(visit.day)}
        diagnosed: dict[str, float] = {}
        for fact in visit.facts:
            if domain_of(fact.code) == "condition" and (code := self._snomed(fact.code)) not in before:
                diagnosed[code] = min(diagnosed.get(code, fact.offset_days), fact.offset_days)
        return diagnosed

    def _indication(self, code: str, active: set[str], preferred: str | None = None) -> str | None:
        """The active condition a drug is taken for: `preferred` or its last one, else another of its indications."""
        for candidate in (preferred, self.indication.get(code)):
            if candidate is not None and self._snomed(candidate) in active:
                return candidate
        return next((c for c in self.indications.get(adult_product(code), ()) if c in active), None)

    # --- the drugs a patient takes -------------------------------------------------------------
    def _may_order(self, patient: PatientState, code: str, indication: str | None, day: float,
                   encounter_class: str | None = "AMB") -> bool:
        """A drug taken may be renewed at an office visit once its last order is `RENEWAL_DAYS` old;
        a new one may be ordered unless a drug taken already covers its group for this indication."""
        if self._taken(patient, code, day) is not None:
            return (encounter_class in RENEWING_CLASSES
                    and day - self.last_order.get(code, day - RENEWAL_DAYS) >= RENEWAL_DAYS)
        group = self.group_for.get((adult_product(code), self._snomed(indication))) if indication else None
        return group is None or not any(group in self.groups.get(other, ()) for other in self.last_order
                                        if self._taken(patient, other, day) is not None)

    def _ruled_out(self, code: str) -> bool:
        """Whether the latest value of a lab is below a limit of this drug's group (metformin, eGFR < 30),
        or the visit's pregnancy rules the drug out (lisinopril)."""
        return (self.pregnant and code in self.pregnancy.avoided) or any(
            code in limit.codes and self.latest.get(limit.lab, math.inf) < limit.below for limit in self.lab_limits)

    def _taken(self, patient: PatientState, code: str | None, day: float) -> str | None:
        """The drug `code`, or its children's product, if the patient takes it on `day`."""
        if code is None:
            return None
        candidates = (code, *(c for c in self.last_order if c != code and adult_product(c) == code))
        return next((c for c in candidates if c in self.pending or c not in self.stopping
                     and patient.medications.get(c, NEVER_RECORDED) > day), None)

    def _ordered(self, patient: PatientState, code: str, indication: str | None, day: float) -> None:
        if self._taken(patient, code, day) != code:
            self.started[code] = day  # a new course, not a renewal
        self.last_order[code] = day
        self.pending.add(code)
        if indication is not None:
            self.indication[code] = indication

    def _snomed(self, code: str) -> str:
        condition = self.k.conditions_by_code.get(code)
        return condition.code if condition else code

    # --- between visits ------------------------------------------------------------------------
    def between_visits(self, patient: PatientState, until: float) -> list[tuple[float, Fact]]:
        """Stops of chronic drugs whose indication ended, unless another indication is active then."""
        due = []
        for code in sorted(self.last_order):
            indication = self.indication.get(code)
            end = patient.conditions.get(indication, ACTIVE) if indication else ACTIVE
            if end >= until or patient.medications.get(code, NEVER_RECORDED) != ACTIVE:
                continue
            other = self._indication(code, {self._snomed(c) for c in patient.active_conditions(end)})
            if other is not None:
                self.indication[code] = other
                continue
            due.append((end, Fact(MEDICATION_END, text=code)))
            del self.last_order[code], self.indication[code]
        return due
