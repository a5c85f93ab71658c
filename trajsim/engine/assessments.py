"""What the patient reports at a visit, answered from the chart: the scores of the screening
questionnaires a screening carries (PHQ-2, then PHQ-9 after a positive PHQ-2, at a depression
screening, `knowledge/questionnaires.py`) and the pregnancy status of a woman of reproductive age
at every encounter. Both follow the conditions active at the visit, so a depressed patient screens
positive at the instrument's published sensitivity and a woman is recorded pregnant exactly while
her chart holds a pregnancy. Whichever source proposed the screening or the visit, the answers are
the engine's, and so is the smoking status a source asks (from the patient's smoking history). A
source that keeps to its own care (`asks=False`) is asked nothing it did not ask: the keeper
answers the questions it proposed and adds none (Synthea's charts hold no pregnancy status or PHQ-2).
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from trajsim.engine.chart import ChartKeeper
from trajsim.engine.schedules import active_keys
from trajsim.engine.source import Fact, PatientState, Visit
from trajsim.events import PREGNANCY_STATUS, SMOKING_STATUS
from trajsim.knowledge import Knowledge
from trajsim.knowledge.lifecycles import PREGNANCY
from trajsim.knowledge.questionnaires import questionnaires
from trajsim.knowledge.smoking import smoking_curve

PREGNANT, NOT_PREGNANT = "SNOMED/77386006", "SNOMED/60001007"
# Ages asked, from and below: women of reproductive age as NCHS counts them (15-44 years).
REPRODUCTIVE_AGES = (15.0, 45.0)


@cache
def answered_codes() -> frozenset[str]:
    """The questions whose answers are the engine's, whoever asks them: a source may propose these
    codes (that the question was asked), never their answers."""
    return frozenset({q.code for q in questionnaires()} | {PREGNANCY_STATUS, SMOKING_STATUS})


class AssessmentKeeper(ChartKeeper):
    """Answers an encounter's questions in place of any answer a source proposed: the scores its
    screenings call for, a woman of reproductive age's pregnancy status, a smoking status asked.
    With `asks`, it also asks the first two of its own accord."""

    def __init__(self, knowledge: Knowledge, asks: bool = True) -> None:
        self.k, self.asks = knowledge, asks

    def vet(self, patient: PatientState, visit: Visit) -> None:
        if visit.encounter_class is None:
            return
        proposed = {f.code for f in visit.facts}
        answers = answered_codes() - {SMOKING_STATUS}
        visit.facts[:] = [f for f in visit.facts if f.code not in answers]  # a source's own answers give way
        if SMOKING_STATUS in proposed:  # asked once, answered where it was asked
            status = smoking_curve().status(patient.sex, patient.age_at(visit.day), patient.smoking_draws)
            first = next(i for i, f in enumerate(visit.facts) if f.code == SMOKING_STATUS)
            visit.facts[:] = [replace(f, text=status) if i == first else f for i, f in enumerate(visit.facts)
                              if i == first or f.code != SMOKING_STATUS]
        codes = {f.code for f in visit.facts}
        asked = ({q.screening for q in questionnaires()} & codes if self.asks
                 else {q.screening for q in questionnaires() if q.code in proposed})
        if asked:
            visit.facts += self._answers(patient, visit, asked)
        reproductive = patient.sex == "F" and REPRODUCTIVE_AGES[0] <= patient.age_at(visit.day) < REPRODUCTIVE_AGES[1]
        if reproductive and (self.asks or PREGNANCY_STATUS in proposed):
            pregnant = PREGNANCY in codes or PREGNANCY in patient.active_conditions(visit.day)
            visit.facts.append(Fact(PREGNANCY_STATUS, text=PREGNANT if pregnant else NOT_PREGNANT))

    def _answers(self, patient: PatientState, visit: Visit, asked: set[str]) -> list[Fact]:
        """The total scores of the instruments of the screenings in `asked`; a follow-up only after
        a positive first step, and never below the score of the items it repeats."""
        active = active_keys(self.k, patient, visit.day, visit.facts)
        scores: dict[str, int] = {}
        cutoffs = {q.name: q.cutoff for q in questionnaires()}
        facts = []
        for q in questionnaires():
            if q.screening not in asked:
                continue
            before = scores.get(q.asked_after) if q.asked_after else None
            if q.asked_after and (before is None or before < cutoffs[q.asked_after]):
                continue
            scores[q.name] = q.score(patient.rng, q.condition in active, before or 0)
            facts.append(Fact(q.code, value=float(scores[q.name]), unit="{score}"))
        return facts

