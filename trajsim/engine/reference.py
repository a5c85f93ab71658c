"""The rule-based reference simulator: a trajectory source built from the knowledge tables alone.

It drives the engine before any model is trained and produces the default model's training cohort.
Each next visit is the earlier of the next follow-up of an active chronic condition and the next
acute episode (a Poisson process at the age/sex-specific episode rate, redrawn at every visit
because it is memoryless). Chronic conditions start at visits with the baseline onset hazard
implied by the rise in prevalence since the last check, and resolve where prevalence falls.
Well visits, vaccines, monitoring labs, refills, complications and death are the engine's
scheduled care (`schedules.py`), shared with every source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from trajsim.clock import DAYS_PER_YEAR, MINUTES_PER_DAY
from trajsim.engine.schedules import active_keys, office_hours, prescribe, vitals
from trajsim.engine.source import Fact, PatientState, Visit
from trajsim.events import CONDITION_END
from trajsim.knowledge import Condition, Knowledge, load_knowledge


class ReferenceSource:
    """Trajectory source that follows published incidence, prevalence and guidelines."""

    def __init__(self, knowledge: Knowledge | None = None) -> None:
        self.k = knowledge or load_knowledge()
        self.chronic = self.k.chronic
        self.acute = [c for c in self.k.conditions.values() if c.course == "acute"]

    # --- entry -------------------------------------------------------------------------------
    def admit(self, patient: PatientState) -> list[Visit]:
        """Chronic conditions already present when the record starts, with their current drugs."""
        rng = patient.rng
        age = patient.age_at(patient.entry_day)
        patient.memory.update(last_check_age=age, last_review={})
        history = []
        for condition in self.chronic:
            if rng.random() >= self.k.prevalence_at(condition.key, patient.sex, age):
                continue
            first_age = self.k.prevalence[condition.key][0].age_min
            years_back = rng.uniform(0, min(10.0, max(age - first_age, 0.0)))
            onset = max(patient.entry_day - years_back * DAYS_PER_YEAR - 1, patient.birth_day)
            history.append(Visit(onset, None, 0.0, [Fact(condition.code), *prescribe(self.k, condition, patient)]))
        return history

    # --- the next visit ------------------------------------------------------------------------
    def next_visits(self, patients: Sequence[PatientState]) -> list[Visit | None]:
        return [self._next_visit(p) for p in patients]

    def _next_visit(self, p: PatientState) -> Visit | None:
        now = p.now
        review_day, review_of = math.inf, None
        for code in sorted(p.active_conditions(now)):
            condition = self.k.conditions_by_code.get(code)
            if condition and condition.follow_up_days:
                due = p.memory["last_review"].get(code, now) + condition.follow_up_days
                if due < review_day:
                    review_day, review_of = due, condition
        acute_day = math.inf
        total_rate = sum(self._episode_rate(c, p, now) for c in self.acute)
        if total_rate > 0:
            acute_day = now + p.rng.exponential(1.0 / total_rate) * DAYS_PER_YEAR
        if acute_day < review_day:
            episode = self._draw_episode(p, acute_day)
            if episode is not None:
                return self._acute_visit(p, acute_day, episode)
        if review_of is None:
            return None if acute_day == math.inf else Visit(acute_day, None, 0.0, [])
        return self._follow_up_visit(p, review_day, review_of)

    def _episode_rate(self, condition: Condition, p: PatientState, day: float) -> float:
        if condition.first_day is not None and day < condition.first_day:
            return 0.0
        return self.k.episode_rate(condition.key, p.sex, p.age_at(day))

    def _draw_episode(self, p: PatientState, day: float) -> Condition | None:
        active = p.active_conditions(p.now)
        rates = [0.0 if c.code in active else self._episode_rate(c, p, day) for c in self.acute]
        total = sum(rates)
        if total == 0:
            return None
        return self.acute[int(p.rng.choice(len(self.acute), p=[r / total for r in rates]))]

    # --- visit contents ------------------------------------------------------------------------
    def complete_visit(self, p: PatientState, visit: Visit) -> list[Fact]:
        """What the clinician finds when a visit happens (proposed or scheduled): new and resolved
        chronic conditions since the last visit."""
        return self._check_chronic(p, visit.day)

    def _follow_up_visit(self, p: PatientState, day: float, condition: Condition) -> Visit:
        day = office_hours(p, day)
        facts = [Fact(condition.visit_type), *vitals(self.k, p, day, active_keys(self.k, p, day))]
        for code in p.active_conditions(day):
            p.memory["last_review"][code] = day
        return Visit(day, "AMB", p.rng.uniform(15, 40) / MINUTES_PER_DAY, facts)

    def _acute_visit(self, p: PatientState, day: float, condition: Condition) -> Visit:
        rng = p.rng
        if condition.visit_class == "AMB":
            day, duration = office_hours(p, day), rng.uniform(15, 30) / MINUTES_PER_DAY
        elif condition.visit_class == "EMER":
            duration = rng.uniform(2, 6) / 24
        else:
            duration = max(1.0, rng.lognormal(math.log(condition.stay_days or 3), 0.5))
        facts = [Fact(condition.visit_type), *vitals(self.k, p, day, active_keys(self.k, p, day) | {condition.key}),
                 Fact(condition.code), *prescribe(self.k, condition, p),
                 Fact(CONDITION_END, offset_days=condition.duration_days or duration, text=condition.code)]
        return Visit(day, condition.visit_class, duration, facts)

    def _check_chronic(self, p: PatientState, day: float) -> list[Fact]:
        """Chronic conditions starting since the last check (at the baseline hazard: complications
        add their excess in the engine's schedule), and ones resolving where prevalence falls."""
        age, facts = p.age_at(day), []
        hazard, remission = self.k.chronic_changes(p.sex, p.memory["last_check_age"], age)
        draws = p.rng.random(len(self.chronic))
        active = p.active_conditions(day)
        present = np.array([c.code in active for c in self.chronic])
        for i in np.flatnonzero(np.where(present, draws < remission, draws < -np.expm1(-hazard))):
            condition = self.chronic[i]
            if present[i]:
                facts.append(Fact(CONDITION_END, text=condition.code))  # its drugs stop in the schedule
            else:
                facts += [Fact(condition.code), *prescribe(self.k, condition, p)]
                p.memory["last_review"][condition.code] = day
        p.memory["last_check_age"] = age
        return facts
