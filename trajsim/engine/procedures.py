"""The chart keeper of procedures: a procedure is done once in a visit, whichever source proposes
it (a model that learned a screening and its questionnaire may write the screening again after
each answer; three mammographies in one visit are a charting error a clinician would flag)."""

from __future__ import annotations

import math

from trajsim.engine.chart import ChartKeeper
from trajsim.engine.source import PatientState, Visit
from trajsim.vocab import domain_of


class ProcedureKeeper(ChartKeeper):
    """Drops a procedure already recorded in the same visit (for history outside any visit, on the
    same day)."""

    def vet(self, patient: PatientState, visit: Visit) -> None:
        seen: set[tuple[str, float]] = set()
        kept = []
        for fact in visit.facts:
            if domain_of(fact.code) == "procedure":
                day = 0.0 if visit.encounter_class is not None else float(math.floor(visit.day + fact.offset_days))
                if (fact.code, day) in seen:
                    continue
                seen.add((fact.code, day))
            kept.append(fact)
        visit.facts[:] = kept
