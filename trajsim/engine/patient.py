"""One patient's life as a SimPy process: enter, ask for the next visit, live through it, repeat
until death or the end of the period. The engine, not the source, enforces the timeline: visits
are ordered and never overlap, and nothing is recorded after death."""

from __future__ import annotations

from datetime import datetime, timedelta

import simpy

from trajsim.events import (
    BIRTH, CONDITION_END, DEATH, MEDICATION_END, SEX_FEMALE, SEX_MALE, VISIT_END, Event, visit_start_code,
)
from trajsim.engine.sampler import VisitSampler
from trajsim.engine.source import ACTIVE, PatientState, TrajectorySource, Visit
from trajsim.vocab import load_vocabulary

EPOCH = datetime(1970, 1, 1)
MINUTES_PER_DAY = 1440


def to_datetime(day: float) -> datetime:
    """Engine day number -> wall-clock time, to the minute."""
    return EPOCH + timedelta(minutes=round(day * MINUTES_PER_DAY))


class PatientRecord:
    """The events recorded for one patient, in time order once the patient's process ends."""

    def __init__(self, patient: PatientState) -> None:
        self.patient = patient
        self.events: list[Event] = []
        self._visits = 0
        self._domains = {concept.code: concept.domain for concept in load_vocabulary()}

    @property
    def subject_id(self) -> int:
        return self.patient.subject_id

    def add(self, day: float, code: str, encounter_id: int | None = None, value: float | None = None,
            unit: str | None = None, text: str | None = None) -> None:
        self.events.append(Event(self.patient.subject_id, to_datetime(day), encounter_id, code, value, unit, text))

    def add_visit(self, visit: Visit) -> None:
        """Record a visit's facts, dropping any that would fall after the record's end, and update
        the patient's active conditions and medications from them."""
        patient, exit_day = self.patient, self.patient.exit_day
        encounter_id, visit_end = None, visit.day + visit.duration_days
        if visit.encounter_class is not None:
            self._visits += 1
            encounter_id = (patient.subject_id << 20) | self._visits
            visit_end = min(visit_end, exit_day)
            self.add(visit.day, visit_start_code(visit.encounter_class), encounter_id)
        for fact in visit.facts:
            day = visit.day + fact.offset_days
            if day > exit_day:
                continue
            self._apply(fact.code, fact.text, day)
            in_visit = encounter_id if day <= visit_end else None
            self.add(day, fact.code, in_visit, fact.value, fact.unit, fact.text)
        if encounter_id is not None:
            self.add(visit_end, VISIT_END, encounter_id)

    def _apply(self, code: str, text: str | None, day: float) -> None:
        domain = self._domains.get(code)
        if domain == "condition":
            self.patient.conditions[code] = ACTIVE
        elif domain == "medication":
            self.patient.medications[code] = ACTIVE
        elif code == CONDITION_END and text:
            self.patient.conditions[text] = day
        elif code == MEDICATION_END and text:
            self.patient.medications[text] = day

    def finish(self) -> None:
        self.events.sort(key=lambda event: event.time)


def patient_life(env: simpy.Environment, record: PatientRecord, sampler: VisitSampler, source: TrajectorySource):
    """The SimPy process of one patient."""
    patient = record.patient
    yield env.timeout(patient.entry_day - env.now)
    record.add(patient.birth_day, BIRTH)
    record.add(patient.birth_day, SEX_FEMALE if patient.sex == "F" else SEX_MALE)
    for history in source.admit(patient):
        record.add_visit(history)
    while True:
        patient.now = env.now
        visit = yield sampler.next_visit(patient)
        if visit is None or visit.day >= patient.exit_day:
            break
        visit.day = max(visit.day, env.now)  # a source may not schedule into the past
        yield env.timeout(visit.day - env.now)
        record.add_visit(visit)
        yield env.timeout(min(visit.day + visit.duration_days, patient.exit_day) - env.now)
    if patient.death_day is not None and patient.death_day <= patient.end_day:
        record.add(patient.death_day, DEATH)
    record.finish()
