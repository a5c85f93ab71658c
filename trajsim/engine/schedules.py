"""Scheduled care: well visits on the periodicity schedule, what is due at any visit (complications,
monitoring labs, vaccines (`immunization.py`), screenings), refills and stops of chronic
prescriptions between visits, allergies and the day of death.

A `Schedule` writes only the fact kinds it is given. The engine runs one per patient for the kinds
its trajectory source does not author (`engine_kinds`); the reference source, which authors them,
runs one as its own. Facts are built from the knowledge tables by the helpers below, which the
reference source shares.
"""

from __future__ import annotations

import math

from trajsim.clock import DAYS_PER_YEAR, MINUTES_PER_DAY, is_weekend, office_slot
from trajsim.engine.immunization import Immunizer
from trajsim.engine.population import draw_death_day
from trajsim.engine.source import ACTIVE, WELL_ADULT, WELL_CHILD, Fact, FactKind, PatientState, Visit
from trajsim.events import MEDICATION_END
from trajsim.knowledge import Condition, Knowledge, Medication
from trajsim.knowledge.acute import sudden_onsets

ONE_MINUTE = 1 / MINUTES_PER_DAY  # in days
LAB_GRACE_DAYS = 14.0  # a lab due within two weeks is drawn at the visit rather than waiting for the next
OBESITY_WEIGHT_FACTOR = 1.3  # BMI about 32 instead of the median 25
VITAL_SIGNS = ("LOINC/8480-6", "LOINC/8462-4", "LOINC/8867-4", "LOINC/9279-1", "LOINC/8310-5")


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


def measure(knowledge: Knowledge, code: str, value: float) -> Fact:
    """A measurement rounded to its reporting precision and kept within physiological bounds."""
    m = knowledge.measurements[code]
    return Fact(code, value=round(min(max(value, m.low), m.high), m.decimals), unit=m.unit)


def draw_measurement(knowledge: Knowledge, patient: PatientState, code: str, day: float, active: set[str]) -> list[Fact]:
    """One value from the distribution for this sex, age and conditions (none if not taken at this age)."""
    dist = knowledge.value_distribution(code, patient.sex, patient.age_at(day), active)
    return [] if dist is None else [measure(knowledge, code, patient.rng.normal(dist.mean, dist.sd))]


def vitals(knowledge: Knowledge, patient: PatientState, day: float, active: set[str]) -> list[Fact]:
    """Height, weight, BMI (from age 2) and vital signs, from growth charts and condition-aware ranges."""
    height, weight = knowledge.growth_at(patient.sex, patient.age_at(day))
    height *= 1 + 0.04 * patient.height_z
    weight *= patient.weight_factor * (OBESITY_WEIGHT_FACTOR if "obesity" in active else 1.0)
    facts = [measure(knowledge, "LOINC/8302-2", height), measure(knowledge, "LOINC/29463-7", weight)]
    if patient.age_at(day) >= 2:
        facts.append(measure(knowledge, "LOINC/39156-5", weight / (height / 100) ** 2))
    for code in VITAL_SIGNS:
        facts += draw_measurement(knowledge, patient, code, day, active)
    return facts


def prescribe(knowledge: Knowledge, condition: Condition, patient: PatientState) -> list[Fact]:
    """One drug from each group of first-line alternatives for this indication, leaving out drugs
    the patient's allergies rule out (a group with none left is skipped); a drug with a fixed course
    ends after it."""
    groups: dict[str, list[Medication]] = {}
    ruled_out = knowledge.contraindications
    for med in knowledge.medications.get(condition.key, ()):
        groups.setdefault(med.group, [])
        if not ruled_out.get(med.code, frozenset()) & patient.allergies:
            groups[med.group].append(med)
    facts = []
    for options in filter(None, groups.values()):
        weights = [m.weight for m in options]
        med = options[int(patient.rng.choice(len(options), p=[w / sum(weights) for w in weights]))]
        facts.append(Fact(med.code, text=condition.code))
        if med.course_days:
            facts.append(Fact(MEDICATION_END, offset_days=med.course_days, text=med.code))
    return facts


class Schedule:
    """One patient's scheduled care, writing the fact kinds in `kinds` and no others."""

    def __init__(self, knowledge: Knowledge, patient: PatientState, kinds: frozenset[FactKind]) -> None:
        self.k, self.patient, self.kinds = knowledge, patient, kinds
        self.well_index, self.next_well = 0, None
        self.immunizer = Immunizer(knowledge, patient) if FactKind.IMMUNIZATIONS in kinds else None
        self.last_lab: dict[str, float] = {}
        self.fills: dict[str, tuple[float, str, float]] = {}  # drug -> (last fill day, indication, refill days)
        self.last_check_age = patient.age_at(patient.entry_day)
        self.death_conditions: frozenset[str] = frozenset()
        self.last_screening: dict[str, float] = {}
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
        before the record began are skipped. Timing varies by about a tenth of the child's age."""
        p, ages = self.patient, self.k.well_visit_days
        while self.next_well is None:
            i = self.well_index
            age_days = ages[i] if i < len(ages) else ages[-1] + (i - len(ages) + 1) * self.k.well_visit_repeat_days
            day = p.birth_day + age_days + p.rng.normal(0, min(20.0, 0.1 * age_days))
            if day < p.entry_day:
                self.well_index += 1
            else:
                self.next_well = max(day, p.now)
        return self.next_well

    def well_visit(self) -> Visit:
        """The well visit due next, with its measurements if this schedule writes them."""
        p = self.patient
        day = office_hours(p, self.next_well_day())
        self.well_index, self.next_well = self.well_index + 1, None
        facts = [Fact(WELL_CHILD if p.age_at(day) < 18 else WELL_ADULT)]
        if FactKind.MEASUREMENTS in self.kinds:
            facts += vitals(self.k, p, day, active_keys(self.k, p, day))
        return Visit(day, "AMB", p.rng.uniform(15, 40) / MINUTES_PER_DAY, facts)

    # --- what is due at a visit ----------------------------------------------------------------
    def due_at(self, visit: Visit) -> list[Fact]:
        """Complications, monitoring labs, vaccines and screenings due at this visit, of the kinds
        this schedule writes."""
        kinds = self.kinds
        facts = self._complications(visit) if FactKind.DIAGNOSES in kinds else []
        if FactKind.MEASUREMENTS in kinds:
            facts += self._monitoring(visit.day, active_keys(self.k, self.patient, visit.day, visit.facts + facts))
        if FactKind.IMMUNIZATIONS in kinds and visit.encounter_class == "AMB":
            facts += self.immunizer.due(visit.day)
        if FactKind.PROCEDURES in kinds and any(f.code in (WELL_CHILD, WELL_ADULT) for f in visit.facts):
            facts += self._screenings(visit.day)
        return facts

    def _screenings(self, day: float) -> list[Fact]:
        """Screening procedures due at a well visit. A patient entering mid-life was last screened
        at a random point of the interval; one who declines is offered it again a year later."""
        p, facts = self.patient, []
        age = p.age_at(day)
        for screening in self.k.screenings:
            if screening.sex not in (None, p.sex) or not screening.age_min <= age < screening.age_max:
                continue
            interval = screening.interval_years * DAYS_PER_YEAR
            last = self.last_screening.setdefault(screening.code, day - p.rng.uniform(0, interval))
            if day - last < interval:
                continue
            if p.rng.random() < screening.uptake:
                facts.append(Fact(screening.code))
                self.last_screening[screening.code] = day
            else:
                self.last_screening[screening.code] = day - interval + DAYS_PER_YEAR
        return facts

    def _complications(self, visit: Visit) -> list[Fact]:
        """Onsets of conditions made likelier by active ones: each active condition adds its excess
        hazard, baseline x (relative risk - 1), over the time since the last check."""
        p, k = self.patient, self.k
        age, facts = p.age_at(visit.day), []
        active = active_keys(k, p, visit.day, visit.facts)
        targets = {t for key in active if key in k.complications for t in k.complications.successors(key)}
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

    def _monitoring(self, day: float, active: set[str]) -> list[Fact]:
        facts = []
        for key in sorted(active):
            for lab in self.k.monitoring.get(key, ()):
                if day + LAB_GRACE_DAYS >= self.last_lab.get(lab.code, -math.inf) + lab.interval_days:
                    facts += draw_measurement(self.k, self.patient, lab.code, day, active)
                    self.last_lab[lab.code] = day
        return facts

    # --- between visits ------------------------------------------------------------------------
    def recorded(self, visit: Visit) -> None:
        """Start refill clocks for this visit's new long-term prescriptions whose indication is active."""
        if FactKind.PRESCRIPTIONS not in self.kinds:
            return
        active = self.patient.active_conditions(visit.day)
        for fact in visit.facts:
            every = self.k.refill_days.get(fact.code)
            if every and fact.text in active and fact.code not in self.fills:
                self.fills[fact.code] = (visit.day + fact.offset_days, fact.text, every)

    def refills(self, until: float) -> list[tuple[float, Fact]]:
        """Refills of long-term drugs falling before `until`, outside any visit. A drug stops when its
        indication ends (a MEDICATION_END on that day) and may be prescribed afresh later."""
        due = []
        for code, (last, indication, every) in sorted(self.fills.items()):
            ends = self.patient.conditions.get(indication, ACTIVE)
            day = last + every
            while day < min(until, ends - ONE_MINUTE):  # times are recorded to the minute
                due.append((day, Fact(code, text=indication)))
                last, day = day, day + every
            self.fills[code] = (last, indication, every)
            if ends <= until:
                due.append((ends, Fact(MEDICATION_END, text=code)))
                del self.fills[code]
        return due

    def update_death(self, day: float) -> None:
        """Redraw the day of death from `day` when the active conditions change the death hazard."""
        p = self.patient
        if FactKind.DEATHS not in self.kinds or p.death_day is not None and p.death_day <= day:
            return
        conditions = frozenset(active_keys(self.k, p, day) & set(self.k.mortality_hazard_ratios))
        if conditions != self.death_conditions:
            self.death_conditions = conditions
            p.death_day = draw_death_day(self.k, p.rng, p.sex, p.birth_day, day, p.end_day, set(conditions))

