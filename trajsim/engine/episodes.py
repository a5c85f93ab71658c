"""The chart keeper of condition lifecycles, whichever source proposes the diagnoses.

It drops a diagnosis dated before its code exists (COVID-19 before 2020) or, for a first diagnosis
(and every episode of an acute condition), outside the ages it can start at; an acute condition
diagnosed again while its episode is still active (no two pregnancies at once); and the end of an
episode that is not active. An episode the source leaves open ends after a duration drawn from the
lifecycle table, dated between visits (a pregnancy's end is the pregnancy keeper's, which plans its
course); an end proposed beyond the longest plausible episode is
brought back to it, and one dated at or before the episode's onset is dropped. A drug prescribed for a dropped diagnosis or an ended episode is kept for
another active indication, or goes. A follow-up visit left with no condition to follow (none active,
none diagnosed there: its episode ended or its diagnosis was dropped) is an encounter for a problem.
"""

from __future__ import annotations

from dataclasses import replace

from trajsim.engine.chart import ChartKeeper
from trajsim.engine.pregnancy import office_visit_type
from trajsim.engine.source import ACTIVE, NEVER_RECORDED, Fact, PatientState, Visit
from trajsim.events import CONDITION_END, FOLLOW_UP_VISIT
from trajsim.knowledge import Knowledge
from trajsim.knowledge.lifecycles import PREGNANCY, lifecycles, same_condition
from trajsim.vocab import domain_of


class EpisodeKeeper(ChartKeeper):
    """Keeps every condition within its lifecycle (`trajsim/knowledge/data/lifecycles.csv`)."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.k = knowledge
        self.lifecycles = lifecycles(knowledge)
        self.open: dict[str, float] = {}  # code of an episode with no end yet -> its onset day
        self.planned: dict[str, float] = {}  # code of an episode left open -> the day the keeper ends it
        self.pregnancy = frozenset(same_condition(knowledge, PREGNANCY))  # whose end is the pregnancy keeper's

    def vet(self, patient: PatientState, visit: Visit) -> None:
        ends: dict[str, float] = {}  # condition code -> end day as of the facts vetted so far
        dropped: set[str] = set()
        replaced: dict[int, Fact | None] = {}  # position in visit.facts -> amended fact (None: dropped)
        ending: list[Fact] = []  # ends the keeper adds to the visit
        order = sorted(range(len(visit.facts)), key=lambda i: visit.facts[i].offset_days)
        closed_here = self._closed_here(visit, order)

        def end_of(code: str) -> float:
            return ends.get(code, patient.conditions.get(code, NEVER_RECORDED))

        for i in order:
            fact, day = visit.facts[i], visit.day + visit.facts[i].offset_days
            for code, end in sorted(self.planned.items(), key=lambda item: item[1]) if self.planned else ():
                if end <= day:  # it ends within the visit (a history before entry spans years)
                    del self.planned[code], self.open[code]
                    if end_of(code) > end:
                        ending.append(Fact(CONDITION_END, offset_days=end - visit.day, text=code))
                        ends[code] = end
            lifecycle = self.lifecycles.get(fact.text if fact.code == CONDITION_END else fact.code)
            if fact.code == CONDITION_END and lifecycle is not None and lifecycle.episodic:
                # not active, or dated at or before the onset of the open episode (an end proposed
                # outside visits on a visit's day, or during a stay whose diagnosis comes later)
                if end_of(fact.text) <= day or day <= self.open.get(fact.text, NEVER_RECORDED):
                    replaced[i] = None
                    continue
                onset = self.open.pop(fact.text, None)
                self.planned.pop(fact.text, None)
                if onset is not None and day > onset + lifecycle.max_days:
                    day = onset + lifecycle.max_days
                    replaced[i] = Fact(CONDITION_END, offset_days=day - visit.day, text=fact.text)
                ends[fact.text] = day
            elif lifecycle is not None and domain_of(fact.code) == "condition":
                codes = same_condition(self.k, fact.code)
                first = lifecycle.episodic or not any(c in patient.conditions or c in ends for c in codes)
                if ((lifecycle.valid_from is not None and day < lifecycle.valid_from)
                        or (first and not lifecycle.onset_plausible(patient.age_at(day)))
                        or (lifecycle.episodic and any(end_of(c) > day for c in codes))):
                    replaced[i] = None
                    dropped.add(fact.code)
                    continue
                ends[fact.code] = ACTIVE
                if lifecycle.episodic:
                    self.open[fact.code] = day
                    if i not in closed_here and fact.code not in self.pregnancy:
                        self.planned[fact.code] = day + lifecycle.draw_duration(patient.rng)
            elif fact.text in dropped or (fact.text in self.lifecycles and self.lifecycles[fact.text].episodic
                                          and end_of(fact.text) <= day and domain_of(fact.code) == "medication"):
                # a drug for a diagnosis dropped or an episode ended: for another active indication, or none
                indication = next((c for c in sorted(self.k.indications.get(fact.code, ())) if end_of(c) > day), None)
                replaced[i] = None if indication is None else replace(fact, text=indication)
        if replaced or ending:
            amended = (replaced.get(i, fact) for i, fact in enumerate(visit.facts))
            visit.facts = [fact for fact in amended if fact is not None]
        if ending:  # in time order, so that the chart records each episode's end after its onset
            visit.facts = sorted(visit.facts + ending, key=lambda f: f.offset_days)
        if any(f.code == FOLLOW_UP_VISIT for f in visit.facts) and not any(domain_of(f.code) == "condition" for f in visit.facts):
            kind = office_visit_type(patient, visit.day)
            visit.facts = [replace(f, code=kind) if f.code == FOLLOW_UP_VISIT else f for f in visit.facts]

    @staticmethod
    def _closed_here(visit: Visit, order: list[int]) -> set[int]:
        """Positions of the diagnoses whose episode the source ends later in the same visit."""
        closed, pending = set(), {}
        for i in order:
            fact = visit.facts[i]
            if fact.code == CONDITION_END and fact.text in pending:
                closed.add(pending.pop(fact.text))
            elif domain_of(fact.code) == "condition":
                pending[fact.code] = i
        return closed

    def between_visits(self, patient: PatientState, until: float) -> list[tuple[float, Fact]]:
        due = []
        for code, day in list(self.planned.items()):
            if day < until:
                del self.planned[code], self.open[code]
                if patient.conditions.get(code, NEVER_RECORDED) > day:
                    due.append((day, Fact(CONDITION_END, text=code)))
        return due
