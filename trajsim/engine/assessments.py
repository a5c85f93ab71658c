"""What the patient reports at a visit, answered from the chart: the scores of the screening
questionnaires a screening carries (PHQ-2, then PHQ-9 after a positive PHQ-2, at a depression
screening, `knowledge/questionnaires.py`) and the pregnancy status of a woman of reproductive age
at every encounter. Both follow the conditions active at the visit, so a depressed patient screens
positive at the instrument's published sensitivity and a woman is recorded pregnant exactly while
her chart holds a pregnancy. Whichever source proposed the screening or the visit, the answers are
the engine's.
"""

from __future__ import annotations

from trajsim.engine.chart import ChartKeeper
from trajsim.engine.schedules import active_keys
from trajsim.engine.source import Fact, PatientState, Visit
from trajsim.events import PREGNANCY_STATUS
from trajsim.knowledge import Knowledge
from trajsim.knowledge.lifecycles import PREGNANCY
from trajsim.knowledge.questionnaires import questionnaires

PREGNANT, NOT_PREGNANT = "SNOMED/77386006", "SNOMED/60001007"
# Ages asked, from and below: women of reproductive age as NCHS counts them (15-44 years).
REPRODUCTIVE_AGES = (15.0, 45.0)


class AssessmentKeeper(ChartKeeper):
    """Adds to every encounter the answers its screenings call for and, for a woman of reproductive
    age, her pregnancy status, in place of any a source proposed."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.k = knowledge

    def vet(self, patient: PatientState, visit: Visit) -> None:
        if visit.encounter_class is None:
            return
        answers = {q.code for q in questionnaires()} | {PREGNANCY_STATUS}
        visit.facts[:] = [f for f in visit.facts if f.code not in answers]  # a source's own answers give way
        codes = {f.code for f in visit.facts}
        asked = {q.screening for q in questionnaires()} & codes
        if asked:
            visit.facts += self._answers(patient, visit, asked)
        if patient.sex == "F" and REPRODUCTIVE_AGES[0] <= patient.age_at(visit.day) < REPRODUCTIVE_AGES[1]:
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

