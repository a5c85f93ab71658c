"""The rule-based reference simulator: a trajectory source built from the knowledge tables alone.

It drives the engine before any model is trained and produces the default model's training cohort.
Each next visit is the earliest of: the next well visit on the periodicity schedule, the next
follow-up of an active chronic condition, and the next acute episode (a Poisson process at the
age/sex-specific episode rate, redrawn at every visit because it is memoryless). Chronic conditions
are diagnosed at visits with the onset probability implied by the rise in prevalence since the
last visit.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from trajsim.events import CONDITION_END, MEDICATION_END
from trajsim.knowledge import Condition, Knowledge, Medication, load_knowledge
from trajsim.engine.source import DAYS_PER_YEAR, Fact, PatientState, Visit

WELL_CHILD = "SNOMED/410620009"
WELL_ADULT = "SNOMED/162673000"
OFFICE_OPEN_HOURS = (8.0, 17.0)
FLU_SEASON_MONTHS = (9, 10, 11, 12, 1, 2, 3)
RENEWAL_GRACE_DAYS = 14.0


def _weekday(day: float) -> int:
    """Monday = 0 (1970-01-01 was a Thursday)."""
    return (int(math.floor(day)) + 3) % 7


def _month(day: float) -> int:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).month


class ReferenceSource:
    """Trajectory source that follows published incidence, schedules and guidelines."""

    def __init__(self, knowledge: Knowledge | None = None) -> None:
        self.k = knowledge or load_knowledge()
        self.chronic = [c for c in self.k.conditions.values() if c.course == "chronic"]
        self.acute = [c for c in self.k.conditions.values() if c.course == "acute"]
        self.by_code = {c.code: c for c in self.k.conditions.values()}

    # --- entry -------------------------------------------------------------------------------
    def admit(self, patient: PatientState) -> list[Visit]:
        """Chronic conditions already present when the record starts, with their current drugs."""
        rng, memory = patient.rng, patient.memory
        age = patient.age_at(patient.entry_day)
        memory.update(
            height_z=rng.normal(), weight_factor=math.exp(rng.normal(0, 0.18)), well_index=0, next_well=None,
            last_check_age=age, doses=set(), flu_seasons=set(), last_lab={}, last_review={}, prescribed={},
        )
        history = []
        for condition in self.chronic:
            if rng.random() >= self.k.prevalence_at(condition.key, patient.sex, age):
                continue
            first_age = self.k.prevalence[condition.key][0].age_min
            years_back = rng.uniform(0, min(10.0, max(age - first_age, 0.0)))
            onset = patient.entry_day - years_back * DAYS_PER_YEAR - 1
            history.append(Visit(onset, None, 0.0, [Fact(condition.code), *self._prescribe(condition, patient, onset)]))
        return history

    # --- the next visit ------------------------------------------------------------------------
    def next_visits(self, patients: Sequence[PatientState]) -> list[Visit | None]:
        return [self._next_visit(p) for p in patients]

    def _next_visit(self, p: PatientState) -> Visit:
        now, rng = p.now, p.rng
        well_day = self._next_well_day(p)
        review_day, review_of = math.inf, None
        for code in p.active_conditions(now):
            condition = self.by_code.get(code)
            if condition and condition.follow_up_days:
                due = p.memory["last_review"].get(code, now) + condition.follow_up_days
                if due < review_day:
                    review_day, review_of = due, condition
        acute_day = math.inf
        total_rate = sum(self.k.episode_rate(c.key, p.sex, p.age_at(now)) for c in self.acute)
        if total_rate > 0:
            acute_day = now + rng.exponential(1.0 / total_rate) * DAYS_PER_YEAR
        day = min(well_day, review_day, acute_day)
        if day == acute_day:
            episode = self._draw_episode(p, day)
            if episode is not None:
                return self._acute_visit(p, day, episode)
            day = min(well_day, review_day)
        if day == well_day:
            p.memory["well_index"] += 1
            p.memory["next_well"] = None
            kind = WELL_CHILD if p.age_at(day) < 18 else WELL_ADULT
            return self._office_visit(p, day, kind, well=True)
        return self._office_visit(p, day, review_of.visit_type, well=False)

    def _next_well_day(self, p: PatientState) -> float:
        """Day of the next well visit on the periodicity schedule, fixed once drawn; visits due
        before the record began are skipped. Timing varies by about a tenth of the child's age."""
        memory = p.memory
        while memory["next_well"] is None:
            i, ages = memory["well_index"], self.k.well_visit_days
            age_days = ages[i] if i < len(ages) else ages[-1] + (i - len(ages) + 1) * self.k.well_visit_repeat_days
            day = p.birth_day + age_days + p.rng.normal(0, min(20.0, 0.1 * age_days))
            if day < p.entry_day:
                memory["well_index"] += 1
            else:
                memory["next_well"] = max(day, p.now)
        return memory["next_well"]

    def _draw_episode(self, p: PatientState, day: float) -> Condition | None:
        age, active = p.age_at(day), p.active_conditions(p.now)
        rates = [0.0 if c.code in active else self.k.episode_rate(c.key, p.sex, age) for c in self.acute]
        total = sum(rates)
        if total == 0:
            return None
        return self.acute[int(p.rng.choice(len(self.acute), p=[r / total for r in rates]))]

    # --- visit contents ------------------------------------------------------------------------
    def _office_visit(self, p: PatientState, day: float, visit_type: str, well: bool) -> Visit:
        day = self._office_hours(p, day)
        facts = [Fact(visit_type)]
        facts += self._vitals(p, day, set())
        facts += self._diagnose_chronic(p, day)
        facts += self._review_chronic(p, day)
        if well:
            facts += self._immunizations(p, day)
        facts += self._flu_shot(p, day)
        return Visit(day, "AMB", p.rng.uniform(15, 40) / 1440, facts)

    def _acute_visit(self, p: PatientState, day: float, condition: Condition) -> Visit:
        rng = p.rng
        if condition.visit_class == "AMB":
            day, duration = self._office_hours(p, day), rng.uniform(15, 30) / 1440
        elif condition.visit_class == "EMER":
            duration = rng.uniform(2, 6) / 24
        else:
            duration = max(1.0, rng.lognormal(math.log(condition.stay_days or 3), 0.5))
        facts = [Fact(condition.visit_type), *self._vitals(p, day, {condition.key}), Fact(condition.code)]
        facts += self._prescribe(condition, p, day)
        facts.append(Fact(CONDITION_END, offset_days=condition.duration_days or duration, text=condition.code))
        facts += self._diagnose_chronic(p, day)
        return Visit(day, condition.visit_class, duration, facts)

    def _office_hours(self, p: PatientState, day: float) -> float:
        """Clinics see patients on weekdays, in quarter-hour slots within opening hours."""
        slot = p.rng.integers(0, int((OFFICE_OPEN_HOURS[1] - OFFICE_OPEN_HOURS[0]) * 4))
        start = math.floor(day)
        while _weekday(start) >= 5 or start + (OFFICE_OPEN_HOURS[0] + slot / 4) / 24 < p.now:
            start += 1
        return start + (OFFICE_OPEN_HOURS[0] + slot / 4) / 24

    def _vitals(self, p: PatientState, day: float, acute: set[str]) -> list[Fact]:
        age, memory = p.age_at(day), p.memory
        active = acute | {self.by_code[c].key for c in p.active_conditions(day) if c in self.by_code}
        height, weight = self.k.growth_at(p.sex, age)
        height *= 1 + 0.04 * memory["height_z"]
        weight *= memory["weight_factor"]
        facts = [self._measure("LOINC/8302-2", height), self._measure("LOINC/29463-7", weight)]
        if age >= 2:
            facts.append(self._measure("LOINC/39156-5", weight / (height / 100) ** 2))
        for code in ("LOINC/8480-6", "LOINC/8462-4", "LOINC/8867-4", "LOINC/9279-1", "LOINC/8310-5"):
            facts += self._draw_measurement(p, code, age, active)
        return facts

    def _draw_measurement(self, p: PatientState, code: str, age: float, active: set[str]) -> list[Fact]:
        dist = self.k.value_distribution(code, p.sex, age, active)
        if dist is None:
            return []
        return [self._measure(code, p.rng.normal(dist.mean, dist.sd))]

    def _measure(self, code: str, value: float) -> Fact:
        """A measurement rounded to its reporting precision and kept within physiological bounds."""
        m = self.k.measurements[code]
        return Fact(code, value=round(min(max(value, m.low), m.high), m.decimals), unit=m.unit)

    def _diagnose_chronic(self, p: PatientState, day: float) -> list[Fact]:
        age, facts = p.age_at(day), []
        active = p.active_conditions(day)
        for condition in self.chronic:
            if condition.code in active:
                continue
            if p.rng.random() < self.k.onset_probability(condition.key, p.sex, p.memory["last_check_age"], age):
                facts.append(Fact(condition.code))
                facts += self._prescribe(condition, p, day)
                facts += self._order_labs(p, day, condition, force=True)
                p.memory["last_review"][condition.code] = day
        p.memory["last_check_age"] = age
        return facts

    def _review_chronic(self, p: PatientState, day: float) -> list[Fact]:
        """Monitoring labs that are due and renewal of chronic prescriptions running out."""
        facts = []
        for code in sorted(p.active_conditions(day)):
            condition = self.by_code.get(code)
            if condition is None or condition.course != "chronic":
                continue
            facts += self._order_labs(p, day, condition, force=False)
            p.memory["last_review"][code] = day
            for med in self.k.medications.get(condition.key, ()):
                last = p.memory["prescribed"].get(med.code)
                if last is not None and med.refill_days and day + RENEWAL_GRACE_DAYS >= last + med.refill_days:
                    facts.append(Fact(med.code, text=condition.code))
                    p.memory["prescribed"][med.code] = day
        return facts

    def _order_labs(self, p: PatientState, day: float, condition: Condition, force: bool) -> list[Fact]:
        facts, last_lab = [], p.memory["last_lab"]
        active = {condition.key} | {self.by_code[c].key for c in p.active_conditions(day) if c in self.by_code}
        for lab in self.k.monitoring.get(condition.key, ()):
            if force or day + RENEWAL_GRACE_DAYS >= last_lab.get(lab.code, -math.inf) + lab.interval_days:
                facts += self._draw_measurement(p, lab.code, p.age_at(day), active)
                last_lab[lab.code] = day
        return facts

    def _prescribe(self, condition: Condition, p: PatientState, day: float) -> list[Fact]:
        """One drug from each group of first-line alternatives for this indication."""
        groups: dict[str, list[Medication]] = {}
        for med in self.k.medications.get(condition.key, ()):
            groups.setdefault(med.group, []).append(med)
        facts = []
        for options in groups.values():
            weights = [m.weight for m in options]
            med = options[int(p.rng.choice(len(options), p=[w / sum(weights) for w in weights]))]
            facts.append(Fact(med.code, text=condition.code))
            if med.course_days:
                facts.append(Fact(MEDICATION_END, offset_days=med.course_days, text=med.code))
            else:
                p.memory["prescribed"][med.code] = day
        return facts

    def _immunizations(self, p: PatientState, day: float) -> list[Fact]:
        """Scheduled doses now due; doses due before the record began are taken as given."""
        age_days = day - p.birth_day
        entry_age_days = p.entry_day - p.birth_day
        given, facts = p.memory["doses"], []
        for dose in self.k.doses:
            if dose.season_uptake is not None:
                continue
            due = dose.age_days
            while due <= age_days:
                key = (dose.code, due)
                if key not in given and due >= entry_age_days - 30:
                    facts.append(Fact(dose.code))
                given.add(key)
                if not dose.repeat_days:
                    break
                due += dose.repeat_days
        return facts

    def _flu_shot(self, p: PatientState, day: float) -> list[Fact]:
        """One seasonal influenza decision per season, taken at the first visit in it."""
        month = _month(day)
        if month not in FLU_SEASON_MONTHS:
            return []
        season = int((day - 244) // DAYS_PER_YEAR)  # seasons start around 1 September
        if season in p.memory["flu_seasons"]:
            return []
        p.memory["flu_seasons"].add(season)
        facts = []
        for dose in self.k.doses:
            if dose.season_uptake is not None and day - p.birth_day >= dose.age_days and p.rng.random() < dose.season_uptake:
                facts.append(Fact(dose.code))
        return facts
