"""One patient's life as a SimPy process: enter, take the next visit (the source's proposal, a
scheduled well visit or a visit the chart's keepers call for, whichever comes first), live through
it, repeat until death, recorded with its cause, or the end of the period. The engine, not the
source, enforces the timeline: visits are ordered and never overlap, and nothing is recorded after
death. The engine's scheduled care (`schedules.py`) writes the kinds of fact the source does not
author, so each kind has one author."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import NamedTuple

import simpy

from trajsim.clock import encounter_id, next_office_slot, to_datetime
from trajsim.events import (
    BIRTH, CONDITION_END, DEATH, MEDICATION_END, SEX_FEMALE, SEX_MALE, VISIT_END, Event, visit_start_code,
)
from trajsim.engine.chart import ChartKeeper
from trajsim.engine.mortality import cause_of_death
from trajsim.engine.sampler import VisitSampler
from trajsim.engine.schedules import Schedule
from trajsim.engine.source import ACTIVE, Fact, PatientState, TrajectorySource, Visit
from trajsim.knowledge.acute import SAME_STAY_GAP_DAYS, stay_type
from trajsim.vocab import domain_of

ENDS = frozenset({CONDITION_END, MEDICATION_END})


class RecordedEncounter(NamedTuple):
    """An encounter as recorded: its id, start and end days and class."""

    id: int
    start: float
    end: float
    encounter_class: str


class PatientRecord:
    """The events recorded for one patient, in time order once the patient's process ends. Without
    `records_stops` (`TrajectorySource.records_stops`) a drug's end still ends it for the engine but
    is not recorded, as its source's charts record none."""

    def __init__(self, patient: PatientState, records_stops: bool = True) -> None:
        self.patient, self.records_stops = patient, records_stops
        self.events: list[Event] = []
        self.last_day = patient.entry_day  # the latest day anything was recorded for
        self.last_encounter: RecordedEncounter | None = None
        self._visits = 0

    @property
    def subject_id(self) -> int:
        return self.patient.subject_id

    def add(self, day: float, code: str, encounter_id: int | None = None, value: float | None = None,
            unit: str | None = None, text: str | None = None) -> None:
        self.events.append(Event(self.patient.subject_id, to_datetime(day), encounter_id, code, value, unit, text))
        if day > self.last_day:
            self.last_day = day

    def add_fact(self, day: float, fact: Fact, encounter_id: int | None = None) -> None:
        """Record a fact and update the patient's active conditions and medications from it."""
        domain = domain_of(fact.code)
        if domain == "condition":
            self.patient.conditions[fact.code] = ACTIVE
        elif domain == "medication":
            self.patient.medications[fact.code] = ACTIVE
            self.patient.unrecorded_stops.discard(fact.code)
        elif domain == "allergy":
            self.patient.allergies.add(fact.code)
        elif fact.code == CONDITION_END and fact.text:
            self.patient.conditions[fact.text] = day
        elif fact.code == MEDICATION_END and fact.text:
            self.patient.medications[fact.text] = day
        if fact.code == MEDICATION_END and not (self.records_stops or fact.always_recorded):
            self.patient.unrecorded_stops.add(fact.text)
            return
        if fact.code == MEDICATION_END:
            self.patient.unrecorded_stops.discard(fact.text)
        self.add(day, fact.code, encounter_id, fact.value, fact.unit, fact.text)

    def add_visit(self, visit: Visit) -> None:
        """Record a visit's facts, dropping any that would fall after the record's end; facts dated
        before or after the visit (a pregnancy's onset, a course's end) are recorded outside it. A
        stay that starts as the last stay ends goes on with it (`in_stay`)."""
        exit_day = self.patient.exit_day
        encounter, start, visit_end = None, visit.day, visit.day + visit.duration_days
        facts = visit.facts
        if visit.encounter_class is not None:
            visit_end = min(visit_end, exit_day)
            if visit.encounter_class == "IMP" and self.in_stay(visit.day):
                encounter, start = self.last_encounter.id, self.last_encounter.start
                facts = self._continued_stay(visit, visit_end)
            else:
                self._visits += 1
                encounter = encounter_id(self.patient.subject_id, self._visits)
                self.add(visit.day, visit_start_code(visit.encounter_class), encounter)
        for fact in facts:
            day = visit.day + fact.offset_days
            if day <= exit_day:  # what is dated outside the visit (an onset before it) is not of it
                self.add_fact(day, fact, encounter if visit.day <= day <= visit_end else None)
        if encounter is not None:
            self.add(visit_end, VISIT_END, encounter)
            self.last_encounter = RecordedEncounter(encounter, start, visit_end, visit.encounter_class)

    def in_stay(self, day: float) -> bool:
        """Whether a stay starting on `day` continues the last encounter, a stay: it starts before
        that stay has ended or within the hour after (`SAME_STAY_GAP_DAYS`). A model that learned
        admissions from the ED writes its own stay after one the emergency keeper has admitted, or
        an observation stay and then the admission it turned into: one stay, not a patient
        discharged and admitted again the same minute."""
        last = self.last_encounter
        return last is not None and last.encounter_class == "IMP" and day <= last.end + SAME_STAY_GAP_DAYS

    def _continued_stay(self, visit: Visit, visit_end: float) -> list[Fact]:
        """The facts of `visit` that the last stay, its end moved to `visit_end` and its type to what
        a stay that long is (an observation stay past 48 hours is an admission), does not already
        hold: no second encounter type, no procedure done twice (a second reconciliation), no
        measurement taken twice at one time (the stay's discharge labs)."""
        encounter, start = self.last_encounter.id, self.last_encounter.start
        held: set[str] = set()
        measured: set[tuple[str, datetime]] = set()
        events = []
        for event in self.events:
            if event.encounter_id == encounter:
                if event.code == VISIT_END:
                    continue
                if domain_of(event.code) == "encounter_type":
                    event = event._replace(code=stay_type(event.code, visit_end - start))
                held.add(event.code)
                if event.numeric_value is not None:
                    measured.add((event.code, event.time))
            events.append(event)
        self.events[:] = events
        return [f for f in visit.facts if domain_of(f.code) != "encounter_type"
                and not (domain_of(f.code) == "procedure" and f.code in held)
                and (f.value is None or (f.code, to_datetime(visit.day + f.offset_days)) not in measured)]

    def add_death(self, day: float, cause: str) -> None:
        """Record the death with its cause, under the encounter it ends if the patient dies in one.
        Death is final: a fact recorded ahead of time (an episode's planned end) that falls after a
        death drawn again since is void."""
        died = to_datetime(day)
        self.events[:] = [event for event in self.events if event.time <= died]
        encounter = self.last_encounter
        self.add(day, DEATH, encounter.id if encounter and encounter.end >= day else None, text=cause)

    def finish(self) -> None:
        self.events.sort(key=lambda event: event.time)


def patient_life(env: simpy.Environment, record: PatientRecord, sampler: VisitSampler, source: TrajectorySource,
                 care: Schedule, keepers: list[ChartKeeper]):
    """The SimPy process of one patient. `care` is the engine's scheduled care: the kinds of fact
    the source does not author; `keepers` vet every visit before it is recorded."""
    patient = record.patient
    yield env.timeout(patient.entry_day - env.now)
    record.add(patient.birth_day, BIRTH)
    record.add(patient.birth_day, SEX_FEMALE if patient.sex == "F" else SEX_MALE)
    for history in [*care.allergy_history(), *source.admit(patient)]:
        record_visit(record, history, source, keepers)
    care.update_death(record.last_day)
    proposal, source_done, waiting = None, False, None
    while True:
        patient.now = env.now
        if waiting is None:
            if proposal is None and not source_done:
                proposal = yield sampler.next_visit(patient)
                source_done = proposal is None
            waiting, proposal = care.next_visit(proposal)
        visit = unplanned_visit(keepers, patient, patient.exit_day if waiting is None else waiting.day)
        if visit is None:
            visit, waiting = waiting, None
        if visit is None or visit.day >= patient.exit_day:
            break
        if visit.day < env.now and visit.encounter_class is None:  # facts outside visits (a refill) keep their day
            record_visit(record, not_before(visit, env.now), source, keepers)
            continue
        if visit.day < env.now and visit.encounter_class == "IMP" and record.in_stay(visit.day):
            rest_of_stay(visit, env.now)  # a stay proposed during the last one goes on with it
        elif visit.day < env.now:  # a source may not schedule a visit into the past; a clinic gives its next slot
            visit.day = next_office_slot(env.now) if visit.encounter_class == "AMB" else env.now
            if visit.day >= patient.exit_day:
                break
        yield env.timeout(visit.day - env.now)
        record_between_visits(record, source, keepers, until=visit.day)
        if visit.encounter_class is not None:
            visit.facts += source.complete_visit(patient, visit)
            visit.facts += care.due_at(visit)
        # a diagnosis at this visit redraws the day of death before the visit is cut at it, so an
        # episode's end dated after a death that is then drawn again is not lost
        care.update_death(visit.day, visit.facts)
        record_visit(record, visit, source, keepers)
        care.update_death(record.last_day)
        yield env.timeout(min(visit.day + visit.duration_days, patient.exit_day) - env.now)
    record_between_visits(record, source, keepers, until=patient.exit_day)
    if patient.death_day is not None and patient.death_day <= patient.end_day:
        record.add_death(patient.death_day, cause_of_death(care.k, patient, patient.death_day))
    record.finish()


def rest_of_stay(visit: Visit, day: float) -> None:
    """What is left after `day` of a stay proposed to start before it: the stay keeps its end, and
    what it dated before `day` is dated at `day`."""
    lead = day - visit.day
    visit.day, visit.duration_days = day, max(visit.duration_days - lead, 0.0)
    visit.facts = [replace(fact, offset_days=max(fact.offset_days - lead, 0.0)) for fact in visit.facts]


def not_before(visit: Visit, day: float) -> Visit:
    """The facts outside visits with each diagnosis and each end of a condition or drug dated `day`
    at the earliest. Visits already recorded were vetted without them: a visit the clinic moved to
    its next slot may come before an end the source dated earlier (a drug renewed there for an
    illness the source then ended the day before would have no indication), and a source may write
    a diagnosis after the stay it dates it before (MIMIC's discharge diagnoses), which the stay's
    prescriber never saw, so its guideline therapy was never considered."""
    visit.facts = [replace(fact, offset_days=day - visit.day)
                   if visit.day + fact.offset_days < day and (fact.code in ENDS or domain_of(fact.code) == "condition")
                   else fact for fact in visit.facts]
    return visit


def unplanned_visit(keepers: list[ChartKeeper], patient: PatientState, until: float) -> Visit | None:
    """The visit that continues the last one (a stay after an ED visit), else the earliest visit a
    keeper calls for before `until` (an acute event, a terminal encounter)."""
    for keeper in keepers:
        visit = keeper.follow_on(patient)
        if visit is not None:
            return visit
    for keeper in keepers:
        visit = keeper.unplanned_visit(patient, until)
        if visit is not None:
            return visit
    return None


def record_visit(record: PatientRecord, visit: Visit, source: TrajectorySource, keepers: list[ChartKeeper]) -> None:
    """Vet a visit, record it and tell the source what was recorded."""
    for keeper in keepers:
        keeper.vet(record.patient, visit)
    record.add_visit(visit)
    source.recorded(record.patient, visit)


def record_between_visits(record: PatientRecord, source: TrajectorySource, keepers: list[ChartKeeper],
                          until: float) -> None:
    """Record what the source and the chart's keepers date before `until` outside any visit (stops
    of drugs, ends of episodes), in time order."""
    due = list(source.between_visits(record.patient, until))
    for keeper in keepers:
        due += keeper.between_visits(record.patient, until)
    for day, fact in sorted(due, key=lambda item: item[0]):
        record.add_fact(day, fact)
