"""The chart keeper of procedures, for every source: a procedure is done once in a visit (a model
that learned a screening and its questionnaire may write the screening again after each answer;
three mammographies in one visit are a charting error a clinician would flag), within the visit's
time, and for the condition that calls for it where the chart has one (a cesarean for the
pregnancy, spirometry for the COPD), named in the fact's text as a prescription names its
indication. A medication reconciliation is done only where there are drugs to reconcile, and at every
stay where there are (The Joint Commission's NPSG.03.06.01): the shipped model left it out of 26 of
the 47 stays with drugs it wrote."""

from __future__ import annotations

import dataclasses
import math
from functools import cache

from trajsim.engine.chart import ChartKeeper
from trajsim.engine.source import Fact, PatientState, Visit
from trajsim.knowledge import Knowledge
from trajsim.knowledge.acute import admissions, treatments
from trajsim.knowledge.lifecycles import DELIVERIES, PREGNANCY
from trajsim.knowledge.procedures import IndicatedProcedure, indicated_procedures
from trajsim.knowledge.tables import per_knowledge
from trajsim.vocab import domain_of


@per_knowledge
def indications(knowledge: Knowledge) -> dict[str, tuple[str, ...]]:
    """Procedure code -> the condition codes it is done for, in the order the tables that order it
    give them (none for one every visit of a class gets); a delivery is done for the pregnancy."""
    pairs = [(p.code, p.condition) for p in indicated_procedures()]
    pairs += [(t.procedure, t.condition) for t in treatments().values() if t.procedure]
    pairs += [(a.procedure, a.condition) for a in admissions() if a.procedure]
    codes: dict[str, list[str]] = {}
    for procedure, condition in pairs:
        codes.setdefault(procedure, [])
        if condition in knowledge.conditions and knowledge.conditions[condition].code not in codes[procedure]:
            codes[procedure].append(knowledge.conditions[condition].code)
    return {code: tuple(conditions) for code, conditions in codes.items()} | {d: (PREGNANCY,) for d in DELIVERIES}


@cache
def visit_class_procedures() -> dict[str, frozenset[str]]:
    """Procedure code -> the encounter classes it is done at, for those every visit of a class gets
    rather than a condition (medication reconciliation at the end of a stay)."""
    rows = indicated_procedures()
    return {p.code: p.settings for p in rows
            if p.condition is None and p.settings and all(q.condition is None for q in rows if q.code == p.code)}


@cache
def reconciliations() -> tuple[IndicatedProcedure, ...]:
    """The procedures done where, and only where, the patient takes or is ordered a drug (medication
    reconciliation), at visits of their `settings`."""
    return tuple(p for p in indicated_procedures() if p.due_at == "medications")


@cache
def medication_list_procedures() -> frozenset[str]:
    """Procedure codes done only where the patient takes or is ordered a drug (medication reconciliation)."""
    return frozenset(p.code for p in reconciliations())


def takes_medications(patient: PatientState, visit: Visit) -> bool:
    """Whether the patient takes a drug at the visit's start or is ordered one in it, as a reader of
    the chart sees it: in a chart that records no stops (a model of Synthea's FHIR orders), a drug
    stopped unrecorded is still taken; a source's own drug code (MIMIC's local NDCs), which no rule
    knows as a drug, does not count."""
    return (any((end > visit.day or code in patient.unrecorded_stops) and domain_of(code) == "medication"
                for code, end in patient.medications.items())
            or any(domain_of(fact.code) == "medication" for fact in visit.facts))


class ProcedureKeeper(ChartKeeper):
    """Drops a procedure already recorded in the same visit (for history outside any visit, on the
    same day), moves one dated after the visit's end to its end, and names the reason of one that
    has none: the first of its indications the visit records or is made for, else one the patient
    has (a procedure no table gives indications for: the condition the visit is for). A procedure
    of a visit class at a visit of another is dropped (a stay's discharge reconciliation left in the
    ED visit the stay was turned into), and so is a medication reconciliation where the patient
    takes and is ordered no drug (a healthy newborn's birth stay: no list to reconcile), and added at
    the end of a stay with drugs that has none; a delivery outside a pregnancy is the pregnancy keeper's."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.indications = indications(knowledge)

    def vet(self, patient: PatientState, visit: Visit) -> None:
        seen: set[tuple[str, float]] = set()
        kept = []
        # the visit's conditions: those it records, and the one its type names (an exacerbation's)
        named = [fact.text for fact in visit.facts if fact.text and domain_of(fact.code) == "encounter_type"]
        in_visit = {fact.code for fact in visit.facts} | set(named)
        by_class = visit_class_procedures()
        unreconciled = medication_list_procedures() if not takes_medications(patient, visit) else frozenset()
        for fact in visit.facts:
            if domain_of(fact.code) == "procedure":
                day = 0.0 if visit.encounter_class is not None else float(math.floor(visit.day + fact.offset_days))
                if ((fact.code, day) in seen or fact.code in unreconciled
                        or visit.encounter_class not in by_class.get(fact.code, (visit.encounter_class,))):
                    continue
                seen.add((fact.code, day))
                if visit.encounter_class is not None and fact.offset_days > visit.duration_days:
                    fact = dataclasses.replace(fact, offset_days=visit.duration_days)
                if fact.text is None:
                    fact = dataclasses.replace(fact, text=self._reason(patient, visit, fact.code, in_visit, named))
            kept.append(fact)
        if not unreconciled and visit.encounter_class is not None:
            done = {fact.code for fact in kept}
            kept += [Fact(p.code, offset_days=visit.duration_days if p.moment == "end" else 0.0)
                     for p in reconciliations() if visit.encounter_class in p.settings and p.code not in done
                     and patient.age_at(visit.day) >= p.age_min]
        visit.facts[:] = kept

    def _reason(self, patient: PatientState, visit: Visit, code: str, in_visit: set[str], named: list[str]) -> str | None:
        if code not in self.indications:  # no table says what it is for: the condition the visit is for (hospice's)
            return named[0] if named else None
        candidates = self.indications[code]
        # a condition ending on the visit's day is still its reason (the pregnancy a delivery ends)
        had = {c for c, end in patient.conditions.items() if end >= visit.day}
        return next((c for c in candidates if c in in_visit), None) or next((c for c in candidates if c in had), None)
