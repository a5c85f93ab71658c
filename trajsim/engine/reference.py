"""The rule-based reference simulator: a trajectory source built from the knowledge tables alone.

It drives the engine before any model is trained and produces the default model's training cohort.
Each next visit is the earlier of the next follow-up of an active chronic condition and the next
acute episode (a Poisson process at the age/sex-specific episode rate, redrawn at every visit
because it is memoryless). Chronic conditions start at visits with the baseline onset hazard
implied by the rise in prevalence since the last check, and resolve where prevalence falls.
Well visits, vaccines, monitoring labs, screenings and complications come from the
source's own `Schedule` (`schedules.py`), so it authors every kind of fact except allergies and
deaths, which the engine draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from trajsim.clock import DAYS_PER_YEAR, MINUTES_PER_DAY
from trajsim.engine import pregnancy
from trajsim.engine.draws import pick
from trajsim.engine.prescriptions import prescribe
from trajsim.engine.schedules import Schedule, active_keys, office_hours, vitals
from trajsim.engine.source import ENGINE_KINDS, Fact, FactKind, PatientState, TrajectorySource, Visit
from trajsim.events import CONDITION_END
from trajsim.knowledge import Condition, Knowledge, load_knowledge
from trajsim.knowledge.acute import sudden_onsets
from trajsim.knowledge.comorbidity import prevalence_given
from trajsim.knowledge.hazards import AgeSegments
from trajsim.knowledge.lifecycles import PREGNANCY, lifecycles


@dataclass(slots=True)
class ReferenceState:
    """What the reference simulator keeps of one patient."""

    schedule: Schedule  # its scheduled care
    last_check_age: float  # age at the last check for new and resolved chronic conditions
    last_review: dict[str, float] = field(default_factory=dict)  # condition code -> day of its last follow-up
    proposal: Visit | None = None  # the next sick or follow-up visit, waiting while well visits come first
    proposals_done: bool = False  # no sick or follow-up visit will come again
    conception: tuple[float, float] | None = None  # a pregnancy's conception and first visit days, until that visit


class ReferenceSource(TrajectorySource[ReferenceState]):
    """Trajectory source that follows published incidence, prevalence and guidelines."""

    authors = frozenset(FactKind) - ENGINE_KINDS

    def __init__(self, knowledge: Knowledge | None = None) -> None:
        self.k = knowledge or load_knowledge()
        self.chronic = self.k.chronic
        # chronic conditions that start at a visit; the engine dates the sudden ones (myocardial infarction)
        self.starts_at_visits = [c.key not in sudden_onsets() for c in self.chronic]
        # acute conditions with episode rates; the engine dates injuries and ED-only reasons (acute_rates.csv,
        # emergency_reasons.csv)
        self.acute = [c for c in self.k.conditions.values() if c.course == "acute" and c.key in self.k.episode_rates]
        self.lifecycles = lifecycles(self.k)
        # the rates change only where a band of episode rates or a lifecycle's onset ages starts or ends
        edges = [*(edge for c in self.acute for b in self.k.episode_rates[c.key] for edge in (b.age_min, b.age_max)),
                 *(edge for c in self.acute if c.code in self.lifecycles
                   for edge in (self.lifecycles[c.code].onset_age_min, self.lifecycles[c.code].onset_age_max))]
        self._rates_by_age = {sex: AgeSegments(edges, partial(self._rates_at_age, sex)) for sex in ("F", "M")}

    # --- entry -------------------------------------------------------------------------------
    def new_state(self, patient: PatientState[ReferenceState]) -> ReferenceState:
        schedule = Schedule(self.k, patient, self.authors - {FactKind.VISITS})
        return ReferenceState(schedule, last_check_age=patient.age_at(patient.entry_day))

    def admit(self, patient: PatientState[ReferenceState]) -> list[Visit]:
        """Chronic conditions already present when the record starts, with their current drugs."""
        rng = patient.rng
        age = patient.age_at(patient.entry_day)
        history, present = [], set()
        for condition in self.chronic:  # in table order: hypertension before the conditions clustering with it
            if rng.random() >= prevalence_given(self.k, condition.key, patient.sex, age, present):
                continue
            first_age = self.k.prevalence[condition.key][0].age_min
            years_back = rng.uniform(0, min(10.0, max(age - first_age, 0.0)))
            lifecycle = self.lifecycles.get(condition.code)
            if lifecycle is not None and not lifecycle.onset_plausible(age - years_back):
                # diagnosed at an age it can start at (ADHD in childhood), if longer ago than 10 years
                low, high = max(first_age, lifecycle.onset_age_min), min(age, lifecycle.onset_age_max)
                if low >= high:
                    continue
                years_back = age - rng.uniform(low, high)
            present.add(condition.key)
            onset = max(patient.entry_day - years_back * DAYS_PER_YEAR - 1, patient.birth_day)
            history.append(Visit(onset, None, 0.0, [Fact(condition.code), *prescribe(self.k, condition, patient, onset)]))
        return history

    # --- the next visit ------------------------------------------------------------------------
    def next_visits(self, patients: Sequence[PatientState[ReferenceState]]) -> list[Visit | None]:
        """Each patient's next sick or follow-up visit, or the well visit due before it."""
        return [self._next_visit_or_well_visit(p) for p in patients]

    def _next_visit_or_well_visit(self, p: PatientState[ReferenceState]) -> Visit | None:
        state = p.source_state
        if state.proposal is None and not state.proposals_done:
            state.proposal = self._next_visit(p)
            state.proposals_done = state.proposal is None
        visit, state.proposal = state.schedule.next_visit(state.proposal)
        return visit

    def _next_visit(self, p: PatientState[ReferenceState]) -> Visit | None:
        now = p.now
        review_day, review_of = math.inf, None
        for code in sorted(p.active_conditions(now)):
            condition = self.k.conditions_by_code.get(code)
            if condition and condition.follow_up_days:
                due = p.source_state.last_review.get(code, now) + condition.follow_up_days
                if due < review_day:
                    review_day, review_of = due, condition
        conception = p.source_state.conception
        if conception is not None and conception[1] <= review_day:
            p.source_state.conception = None
            return pregnancy.first_visit(self.k, p, *conception)
        acute_day = math.inf
        total_rate = sum(self._episode_rates(p, now))
        if total_rate > 0:
            acute_day = now + p.rng.exponential(1.0 / total_rate) * DAYS_PER_YEAR
        if acute_day < review_day:
            episode = self._draw_episode(p, acute_day)
            if episode is not None and episode.code == PREGNANCY:
                p.source_state.conception = (acute_day, pregnancy.first_visit_day(p.rng, acute_day))
                return self._next_visit(p)
            if episode is not None:
                return self._acute_visit(p, acute_day, episode)
        if review_of is None:
            return None if acute_day == math.inf else Visit(acute_day, None, 0.0, [])
        return self._follow_up_visit(p, review_day, review_of)

    def _episode_rates(self, p: PatientState, day: float) -> list[float]:
        """Each acute condition's episodes per person-year for this patient on `day` (0 where it
        cannot start: before its first day, or outside its lifecycle's onset ages)."""
        rates = self._rates_by_age[p.sex].at(p.age_at(day))
        return [0.0 if c.first_day is not None and day < c.first_day else rate for c, rate in zip(self.acute, rates)]

    def _rates_at_age(self, sex: str, age: float) -> tuple[float, ...]:
        """The acute conditions' episode rates at an age, before their first days."""
        return tuple(self._rate_at_age(c, sex, age) for c in self.acute)

    def _rate_at_age(self, condition: Condition, sex: str, age: float) -> float:
        lifecycle = self.lifecycles.get(condition.code)
        if lifecycle is not None and not lifecycle.onset_plausible(age):
            return 0.0
        rate = self.k.episode_rate(condition.key, sex, age)
        return rate * pregnancy.conception_factor() if condition.code == PREGNANCY else rate

    def _draw_episode(self, p: PatientState, day: float) -> Condition | None:
        active = p.active_conditions(p.now)
        if p.source_state.conception is not None:
            active.add(PREGNANCY)
        rates = [0.0 if c.code in active else rate for c, rate in zip(self.acute, self._episode_rates(p, day))]
        total = sum(rates)
        if total == 0:
            return None
        return self.acute[pick(p.rng, [r / total for r in rates])]

    # --- visit contents ------------------------------------------------------------------------
    def complete_visit(self, p: PatientState[ReferenceState], visit: Visit) -> list[Fact]:
        """What the clinician finds when a visit happens: new and resolved chronic conditions since
        the last visit, then the complications, labs, vaccines and screenings now due."""
        found = self._check_chronic(p, visit.day)
        return found + p.source_state.schedule.due_at(replace(visit, facts=visit.facts + found))

    def _follow_up_visit(self, p: PatientState[ReferenceState], day: float, condition: Condition) -> Visit:
        day = office_hours(p, day)
        facts = [Fact(condition.visit_type), *vitals(self.k, p, day, active_keys(self.k, p, day))]
        for code in p.active_conditions(day):
            p.source_state.last_review[code] = day
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
                 Fact(CONDITION_END, offset_days=self._episode_days(condition, duration, rng), text=condition.code)]
        return Visit(day, condition.visit_class, duration, facts)

    def _episode_days(self, condition: Condition, stay: float, rng: np.random.Generator) -> float:
        """How long an episode lasts: drawn from its lifecycle, and not shorter than its visit."""
        lifecycle = self.lifecycles.get(condition.code)
        return max(lifecycle.draw_duration(rng), stay) if lifecycle and lifecycle.episodic else stay

    def _check_chronic(self, p: PatientState[ReferenceState], day: float) -> list[Fact]:
        """Chronic conditions starting since the last check (at the baseline hazard: complications
        add their excess in the schedule), and ones resolving where prevalence falls."""
        age, facts = p.age_at(day), []
        hazard, remission = self.k.chronic_changes(p.sex, p.source_state.last_check_age, age)
        draws = p.rng.random(len(self.chronic)).tolist()
        active = p.active_conditions(day)
        onset_chances = (-np.expm1(-hazard)).tolist()
        for i, condition in enumerate(self.chronic):
            if condition.code in active:
                if draws[i] < remission[i]:
                    facts.append(Fact(CONDITION_END, text=condition.code))  # its drugs stop in the schedule
            elif draws[i] < onset_chances[i] and self.starts_at_visits[i]:
                facts += [Fact(condition.code), *prescribe(self.k, condition, p)]
                p.source_state.last_review[condition.code] = day
        p.source_state.last_check_age = age
        return facts
