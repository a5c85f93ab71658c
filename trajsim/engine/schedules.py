"""Scheduled care: well visits on the periodicity schedule, what is due at any visit (complications,
monitoring labs, vaccines (`immunization.py`), screenings, smoking status), allergies and the day of death. Orders,
renewals and stops of drugs are the `Prescriber`'s (`prescriptions.py`), for every source.

A `Schedule` writes only the fact kinds it is given. The engine runs one per patient for the kinds
its trajectory source does not author (`engine_kinds`); the reference source, which authors them,
runs one as its own. Facts are built from the knowledge tables by the helpers below, which the
reference source shares.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from trajsim.clock import DAYS_PER_YEAR, MINUTES_PER_DAY, is_weekend, office_slot
from trajsim.engine.immunization import Immunizer
from trajsim.engine.population import draw_death_day
from trajsim.engine.prescriptions import prescribe
from trajsim.engine.source import WELL_ADULT, WELL_CHILD, Fact, FactKind, PatientState, Visit
from trajsim.events import SMOKING_STATUS
from trajsim.knowledge import Knowledge, Screening
from trajsim.knowledge.labs import LAB_GRACE_DAYS, lab_panels, lab_screenings
from trajsim.knowledge.physiology import BMI, HEAD_CIRCUMFERENCE, HEIGHT, SPO2, VITAL_SIGNS, WEIGHT, measured_at
from trajsim.knowledge.acute import NEWBORN_STAY, sudden_onsets
from trajsim.knowledge.procedures import IndicatedProcedure, indicated_procedures
from trajsim.knowledge.smoking import RECORDED_FROM_AGE, smoking_curve
from trajsim.knowledge.tables import per_knowledge
from trajsim.vocab import domain_of

# Emergency triage takes the oxygen saturation with the vital signs: SpO2 below 92% is a danger-zone
# vital sign of the Emergency Severity Index (ESI Implementation Handbook v4, AHRQ 2012).
TRIAGE_VITAL_SIGNS = (*VITAL_SIGNS, SPO2)
ACUTE_CARE = ("EMER", "IMP")  # encounters that take triage vital signs


def office_hours(patient: PatientState, day: float) -> float:
    """The first weekday slot at or after `day` (and not before now): clinics see patients in
    quarter-hour slots within opening hours."""
    hour = office_slot(patient.rng)
    start = math.floor(day)
    while is_weekend(start) or start + hour < patient.now:
        start += 1
    return start + hour


def active_keys(knowledge: Knowledge, patient: PatientState, day: float, facts: list[Fact] = ()) -> set[str]:
    """Keys of the conditions active at `day`, including those diagnosed among `facts`."""
    by_code = knowledge.conditions_by_code
    codes = patient.active_conditions(day) | {f.code for f in facts}
    return {by_code[c].key for c in codes if c in by_code}


def vitals(knowledge: Knowledge, patient: PatientState, day: float, active: set[str]) -> list[Fact]:
    """Height, weight, BMI, a young child's head circumference and the vital signs taken at this age;
    their values are the body's (`body.py`), set when the visit is vetted."""
    age = patient.age_at(day)
    return [Fact(code) for code in (HEIGHT, WEIGHT, BMI, HEAD_CIRCUMFERENCE, *VITAL_SIGNS)
            if measured_at(knowledge, code, patient.sex, age, active)]


def workup(knowledge: Knowledge, condition: str, encounter_class: str) -> list[Fact]:
    """The labs and panels a condition calls for at every visit of this class made for it
    (`monitoring.csv` rows of 0 days: the blood count of a fever in the ED), for a reason found
    after the schedule's labs were due (the ED reason a keeper draws)."""
    return [Fact(lab.code) for lab in knowledge.monitoring.get(condition, ())
            if lab.interval_days == 0 and (not lab.settings or encounter_class in lab.settings)]


@per_knowledge
def complications_of(knowledge: Knowledge) -> dict[str, list[str]]:
    """Condition key -> the conditions it makes likelier (complications.csv), in the graph's order."""
    return {key: list(knowledge.complications.successors(key)) for key in knowledge.complications}


@per_knowledge
def deadly_conditions(knowledge: Knowledge) -> set[str]:
    """Keys of the conditions that change the death hazard."""
    return set(knowledge.mortality_hazard_ratios)


class Schedule:
    """One patient's scheduled care, writing the fact kinds in `kinds` and no others."""

    def __init__(self, knowledge: Knowledge, patient: PatientState, kinds: frozenset[FactKind]) -> None:
        self.k, self.patient, self.kinds = knowledge, patient, kinds
        self.well_index, self.next_well = 0, None
        self.last_well = -math.inf  # day of the last well visit
        self.immunizer = Immunizer(knowledge, patient) if FactKind.IMMUNIZATIONS in kinds else None
        self.last_lab: dict[str, float] = {}
        self.last_check_age = patient.age_at(patient.entry_day)
        self.death_conditions: frozenset[str] = frozenset()
        self.last_screening: dict[str, float] = {}
        self.last_procedure: dict[str, float] = {}  # procedure code -> day it was last done for the chart
        self.allergies = self._draw_allergies() if FactKind.ALLERGIES in kinds else []

    # --- history -------------------------------------------------------------------------------
    def _draw_allergies(self) -> list[Visit]:
        """Allergies at their cited prevalence: those of a child from about age one, those of an
        adult within the ten years before the record starts. Drawn when the patient is created, so a
        source that plans ahead already knows them."""
        p = self.patient
        age = p.age_at(p.entry_day)
        history = []
        for allergy in self.k.allergies:
            if p.rng.random() < (allergy.prevalence_child if age < 18 else allergy.prevalence_adult):
                onset = max(p.entry_day - p.rng.uniform(0, 10) * DAYS_PER_YEAR, p.birth_day + DAYS_PER_YEAR)
                history.append(Visit(onset, None, 0.0, [Fact(allergy.code)]))
                p.allergies.add(allergy.code)
        return history

    def allergy_history(self) -> list[Visit]:
        """The allergies to record, outside any visit, when the record starts."""
        return self.allergies

    # --- well visits ---------------------------------------------------------------------------
    def next_visit(self, proposal: Visit | None) -> tuple[Visit | None, Visit | None]:
        """The visit to take next and the proposal still waiting: a well visit due before the
        proposal comes first, if this schedule writes well visits."""
        if FactKind.WELL_VISITS in self.kinds and (proposal is None or self.next_well_day() < proposal.day):
            return self.well_visit(), proposal
        return proposal, None

    def next_well_day(self) -> float:
        """Day of the next well visit on the periodicity schedule, fixed once drawn; visits due
        before the record began are skipped. A visit falls a half-normal spread (`well_visit_spread_days`)
        after its age, and a yearly one no sooner than a year less a month after the last (a late
        visit is not followed by one eleven months early)."""
        p, ages = self.patient, self.k.well_visit_days
        while self.next_well is None:
            i = self.well_index
            age_days = ages[i] if i < len(ages) else ages[-1] + (i - len(ages) + 1) * self.k.well_visit_repeat_days
            # booked on or after the age, as the vaccines due at it may not be given before their minimum age
            day = p.birth_day + age_days + abs(p.rng.normal(0, self.k.well_visit_spread_days(age_days)))
            if i >= len(ages):  # the yearly repeats after the last age of the schedule
                day = max(day, self.last_well + self.k.well_visit_repeat_after_days)
            if day < p.entry_day:
                self.well_index += 1
            else:
                self.next_well = max(day, p.now)
        return self.next_well

    def well_visit(self) -> Visit:
        """The well visit due next, with its measurements if this schedule writes them."""
        p = self.patient
        day = office_hours(p, self.next_well_day())
        self.well_index, self.next_well, self.last_well = self.well_index + 1, None, day
        facts = [Fact(WELL_CHILD if p.age_at(day) < 18 else WELL_ADULT)]
        if FactKind.MEASUREMENTS in self.kinds:
            facts += vitals(self.k, p, day, active_keys(self.k, p, day))
        return Visit(day, "AMB", p.rng.uniform(15, 40) / MINUTES_PER_DAY, facts)

    # --- what is due at a visit ----------------------------------------------------------------
    def due_at(self, visit: Visit) -> list[Fact]:
        """Complications, monitoring labs and measurements (pulse oximetry in acute care and with a
        respiratory condition), vaccines and screenings due at this visit, of the kinds this
        schedule writes."""
        kinds = self.kinds
        facts = self._complications(visit) if FactKind.DIAGNOSES in kinds else []
        well = any(f.code in (WELL_CHILD, WELL_ADULT) for f in visit.facts)
        if FactKind.MEASUREMENTS in kinds:
            active = active_keys(self.k, self.patient, visit.day, visit.facts + facts)
            facts += self._monitoring(visit.day, visit.encounter_class, active)
            if visit.encounter_class in ACUTE_CARE:
                facts.append(Fact(SPO2))  # a second reading of the visit is dropped by the body
            if well:
                facts += self._screenings(visit.day, lab_screenings(), active)
        # vaccines are given at clinic visits, and the hepatitis B birth dose in the birth stay (ACIP:
        # within 24 hours of birth)
        birth_stay = any(f.code == NEWBORN_STAY for f in visit.facts)
        if FactKind.IMMUNIZATIONS in kinds and (visit.encounter_class == "AMB" or birth_stay):
            facts += self.immunizer.due(visit.day, visit.facts)
        if FactKind.PROCEDURES in kinds:
            facts += self._indicated_procedures(visit)
            if well:
                facts += self._screenings(visit.day, self.k.screenings)
        p = self.patient
        if FactKind.SOCIAL_HISTORY in kinds and well and p.age_at(visit.day) >= RECORDED_FROM_AGE:
            status = smoking_curve().status(p.sex, p.age_at(visit.day), p.smoking_draws)
            facts.append(Fact(SMOKING_STATUS, text=status))  # asked at every well visit from adolescence
        return facts

    def _screenings(self, day: float, screenings: Iterable[Screening], active: set[str] = frozenset()) -> list[Fact]:
        """Screening procedures (or laboratory panels, `labs.py`) due at a well visit. A patient
        entering within the screening ages was last screened at a random point of the interval, one
        followed since before them not yet; one who declines is offered it again a year later."""
        p, facts = self.patient, []
        age = p.age_at(day)
        for screening in screenings:
            if not screening.applies(p.sex, age):
                continue
            if screening.condition is not None and screening.condition not in active:
                continue
            interval = screening.interval_years * DAYS_PER_YEAR
            if screening.code not in self.last_screening:
                # one followed since before the ages has not been screened yet; one entering within
                # them was last screened at a random point of the interval
                entered_within = p.age_at(p.entry_day) >= screening.age_min
                self.last_screening[screening.code] = day - p.rng.uniform(0, interval) if entered_within else -math.inf
            last = self.last_screening[screening.code]
            if day - last < interval:
                continue
            if p.rng.random() < screening.uptake:
                facts.append(Fact(screening.code))
                self.last_screening[screening.code] = day
            else:
                self.last_screening[screening.code] = day - interval + DAYS_PER_YEAR
        return facts

    def _indicated_procedures(self, visit: Visit) -> list[Fact]:
        """The procedures the chart calls for at this visit (`procedures.csv`): at a condition's
        diagnosis, at the visits whose type names it (an exacerbation's, a prenatal visit), or while
        it lasts once an interval."""
        p, k = self.patient, self.k
        age, facts, done = p.age_at(visit.day), [], set()
        recorded = {f.code for f in visit.facts}
        # a visit's type names the known condition it is made for (an exacerbation) in its text
        named = {f.text for f in visit.facts if f.text and domain_of(f.code) == "encounter_type"}
        active = active_keys(k, p, visit.day, visit.facts)
        for procedure in indicated_procedures():
            if (procedure.code in done or age < procedure.age_min
                    or procedure.settings and visit.encounter_class not in procedure.settings
                    or not self._indicated(procedure, visit, recorded, named, active)):
                continue
            if procedure.share < 1 and p.rng.random() >= procedure.share:
                continue
            done.add(procedure.code)
            self.last_procedure[procedure.code] = visit.day
            offset = visit.duration_days if procedure.moment == "end" else 0.0
            reason = k.conditions[procedure.condition].code if procedure.condition else None
            facts.append(Fact(procedure.code, offset_days=offset, text=reason))
        return facts

    def _indicated(self, procedure: IndicatedProcedure, visit: Visit, recorded: set[str], named: set[str],
                   active: set[str]) -> bool:
        """Whether this visit calls for the procedure: `recorded` holds the codes the visit records,
        `named` the conditions its type names, `active` the keys of the conditions active at it."""
        if procedure.condition is None:
            return visit.day >= self.last_procedure.get(procedure.code, -math.inf) + procedure.interval_days
        code = self.k.conditions[procedure.condition].code
        if procedure.due_at == "diagnosis":  # recorded while not active: a first diagnosis, a new episode
            return code in recorded and self.patient.conditions.get(code, -math.inf) <= visit.day
        if procedure.due_at == "reason":
            return code in named
        return (procedure.condition in active
                and visit.day >= self.last_procedure.get(procedure.code, -math.inf) + procedure.interval_days)

    def _complications(self, visit: Visit) -> list[Fact]:
        """Onsets of conditions made likelier by active ones: each active condition adds its excess
        hazard, baseline x (relative risk - 1), over the time since the last check."""
        p, k = self.patient, self.k
        age, facts = p.age_at(visit.day), []
        active = active_keys(k, p, visit.day, visit.facts)
        raised = complications_of(k)
        targets = {t for key in active if key in raised for t in raised[key]}
        targets -= active | sudden_onsets()  # the chart's EmergencyKeeper dates those on their own day
        if targets:
            baseline, _ = k.chronic_changes(p.sex, self.last_check_age, age)
            for i, condition in enumerate(k.chronic):
                if condition.key not in targets:
                    continue
                excess = sum(ratio - 1.0 for parent, ratio in k.risk_ratios[condition.key].items() if parent in active)
                if p.rng.random() < -math.expm1(-baseline[i] * excess):
                    facts.append(Fact(condition.code))
                    if FactKind.PRESCRIPTIONS in self.kinds:
                        facts += prescribe(k, condition, p)
        self.last_check_age = age
        return facts

    def _monitoring(self, day: float, encounter_class: str | None, active: set[str]) -> list[Fact]:
        """The labs and panels the active conditions call for at a visit of this class; a panel's
        results not taken at the patient's age are dropped by the body."""
        facts = []
        for key in sorted(active):
            for lab in self.k.monitoring.get(key, ()):
                if lab.settings and encounter_class not in lab.settings:
                    continue
                if day + LAB_GRACE_DAYS >= self.last_lab.get(lab.code, -math.inf) + lab.interval_days:
                    if lab.code in lab_panels() or measured_at(self.k, lab.code, self.patient.sex,
                                                               self.patient.age_at(day), active):
                        facts.append(Fact(lab.code))
                    self.last_lab[lab.code] = day
        return facts

    def update_death(self, day: float, facts: list[Fact] = ()) -> None:
        """Redraw the day of death from `day` when the active conditions, with those diagnosed among
        `facts`, change the death hazard."""
        p = self.patient
        if FactKind.DEATHS not in self.kinds or p.death_settled or p.death_day is not None and p.death_day <= day:
            return
        conditions = frozenset(active_keys(self.k, p, day, facts) & deadly_conditions(self.k))
        if conditions != self.death_conditions:
            self.death_conditions = conditions
            p.death_day = draw_death_day(self.k, p.rng, p.sex, p.birth_day, day, p.end_day, set(conditions))

