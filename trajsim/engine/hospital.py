"""Acute care in the engine: an emergency department and its wards. Patients arrive by hour of day
and weekday (faster in a surge), are triaged, wait for an ED bed and a physician, have labs drawn
and medication ordered, and go home, or board in the ED until a ward bed frees up and are admitted.
Beds and clinicians are `CareUnit`s, so queues and waits emerge when arrivals outrun them.

Each arrival is an engine patient: a `PatientState` drawn from the population model, with a
`PatientRecord` of canonical events (visit start and end with class EMER or IMP, the diagnosis,
vital signs and lab values, the medication), the same codes and structure `generate` writes, so the
same rules check them. The clock is the engine's day number. Every step of a visit is also reported
as a `CareStep`, so a live feed (`trajsim stream`) can send it on as it happens.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import simpy

from trajsim.clock import DAYS_PER_YEAR, EPOCH, MINUTES_PER_DAY, encounter_id, to_datetime
from trajsim.engine.body import Body
from trajsim.engine.capacity import CareUnit
from trajsim.engine.draws import pick
from trajsim.engine.patient import PatientRecord
from trajsim.engine.population import draw_sex_and_age, patient_rng
from trajsim.engine.schedules import TRIAGE_VITAL_SIGNS
from trajsim.engine.prescriptions import Prescriber
from trajsim.engine.source import Fact, PatientState, Visit
from trajsim.events import BIRTH, MEDICATION_END, SEX_FEMALE, SEX_MALE, VISIT_END, Event, visit_start_code
from trajsim.knowledge import Knowledge, load_knowledge
from trajsim.knowledge.acute import EMERGENCY_ADMISSION
from trajsim.scenario import Population, Presentation, StreamScenario, presentations

# Durations in minutes, as lognormal (median, spread) pairs. An ED visit that ends at home lasts
# about 2.5 hours at the US median (CMS Hospital Compare measure OP-18b, 2019-2022: 140-160 min);
# the parts below add up to that when no queue forms.
TRIAGE = (6.0, 0.3)
EXAM = (20.0, 0.4)
LAB_TURNAROUND = (50.0, 0.3)  # CAP Q-Probes: ED STAT chemistry results in about an hour
TREATMENT = (45.0, 0.5)
WARD_STAY_SPREAD = 0.5
TYPICAL_STAY_DAYS = 4.5  # mean US hospital stay, about 4.5 days (HCUP, National Inpatient Sample 2018)
ED_VISIT = "SNOMED/50849002"  # Emergency department patient visit: the ED visit's encounter type
HOSPITAL_STREAM = 0  # random stream of arrivals and the opening ward census; patients use 1, 2, ...


def fits(knowledge: Knowledge, case: Presentation, patient: PatientState, day: float) -> bool:
    """Whether a presentation is plausible for the patient at `day` (age, and the condition's own
    age and sex restrictions)."""
    age = patient.age_at(day)
    restriction = knowledge.restrictions.get(knowledge.conditions[case.condition].code)
    return age >= case.age_min and (restriction is None or (
        restriction.age_min <= age < restriction.age_max and restriction.sex in (None, patient.sex)))


@dataclass(frozen=True)
class CareStep:
    """One step of a patient's hospital stay, reported in simulated-time order: its `kind`
    (register, arrive, triage, vitals, room, diagnosis, order, result, transfer, admit,
    discharge), the encounter it concerns, the encounter's status after it (None: unchanged), the
    events it recorded (none for a step that only moves the patient) and the place the patient
    holds (unit name and place number, None while waiting for a bed)."""

    day: float
    record: PatientRecord
    kind: str
    encounter_id: int | None
    status: str | None
    events: tuple[Event, ...]
    place: tuple[str, int] | None = None


@dataclass
class HospitalStats:
    """What happened in the hospital, for the dashboard and the summary (waits in minutes)."""

    arrivals_by_hour: list[int]
    door_to_room: list[tuple[int, float]] = field(default_factory=list)  # (arrival hour, minutes waited)
    boarding: list[float] = field(default_factory=list)  # minutes admitted patients waited for a ward bed
    admissions: int = 0
    discharges: int = 0
    by_esi: dict[int, int] = field(default_factory=dict)


class Hospital:
    """The hospital of one stream scenario; run it by iterating `steps()`."""

    def __init__(self, scenario: StreamScenario, population: Population | None = None,
                 knowledge: Knowledge | None = None) -> None:
        self.scenario = scenario
        self.population = population or Population()  # who arrives: the cohort default, US 2020 Census
        self.knowledge = knowledge or load_knowledge()
        self.start_day = (scenario.start - EPOCH) / timedelta(days=1)
        self.end_day = self.start_day + scenario.hours / 24
        self.env = simpy.Environment(initial_time=self.start_day)
        self.rng = patient_rng(scenario.seed, HOSPITAL_STREAM)
        capacity = scenario.capacity
        self.triage = CareUnit(self.env, "triage nurses", capacity.triage_nurses)
        self.ed = CareUnit(self.env, "ED beds", capacity.ed_beds)
        self.physicians = CareUnit(self.env, "ED physicians", capacity.physicians)
        self.ward = CareUnit(self.env, "ward beds", capacity.ward_beds)
        self.units = (self.triage, self.ed, self.physicians, self.ward)
        self._free_places = {unit.name: list(range(1, unit.capacity + 1)) for unit in (self.ed, self.ward)}
        self._places: dict[int, tuple[str, int]] = {}  # subject id -> the bed they hold
        self.stats = HospitalStats(arrivals_by_hour=[0] * math.ceil(scenario.hours))
        self.records: list[PatientRecord] = []
        self._steps: deque[CareStep] = deque()
        for _ in range(round(capacity.ward_beds * capacity.ward_occupancy)):
            self.env.process(self._inpatient())
        self.env.process(self._arrivals())

    def steps(self) -> Iterator[CareStep]:
        """Every step of the scenario's window in time order, simulating only as far as needed."""
        while True:
            while self._steps:
                yield self._steps.popleft()
            if self.env.peek() >= self.end_day:
                return
            self.env.step()

    def hours_in(self, day: float) -> float:
        """Simulated hours from the scenario's start to `day`."""
        return (day - self.start_day) * 24

    # --- arrivals ------------------------------------------------------------------------------
    def arrival_rate(self, day: float) -> float:
        """Expected arrivals per day at `day`: the daily mean shaped by hour and weekday, times
        every surge under way."""
        arrivals, moment = self.scenario.arrivals, to_datetime(day)
        rate = arrivals.per_day * arrivals.hourly[moment.hour] / (sum(arrivals.hourly) / 24)
        rate *= arrivals.weekday[moment.weekday()] / (sum(arrivals.weekday) / 7)
        return rate * math.prod(s.multiplier for s in self.scenario.surges_at(self.hours_in(day)))

    def _arrivals(self) -> Generator[simpy.Event, None, None]:
        """A non-homogeneous Poisson process, drawn by thinning a process at the highest rate."""
        arrivals = self.scenario.arrivals
        peak = (arrivals.per_day * max(arrivals.hourly) / (sum(arrivals.hourly) / 24)
                * max(arrivals.weekday) / (sum(arrivals.weekday) / 7)
                * math.prod(max(s.multiplier, 1.0) for s in self.scenario.surges))
        number = 0
        while True:
            yield self.env.timeout(self.rng.exponential(1 / peak))
            if self.rng.random() * peak < self.arrival_rate(self.env.now):
                number += 1
                self.env.process(self._ed_visit(self._arrival(number)))

    def _arrival(self, number: int) -> PatientRecord:
        """Arrival `number` as an engine patient, drawn from the population like any cohort member."""
        rng = patient_rng(self.scenario.seed, number)
        sex, age = draw_sex_and_age(self.population, rng)
        now = self.env.now
        # Deaths are not simulated here: an ED stay is hours to days, against a life table in years.
        patient = PatientState(subject_id=number, sex=sex, birth_day=float(math.floor(now - age * DAYS_PER_YEAR)),
                               entry_day=now, end_day=self.end_day, death_day=None, rng=rng, now=now)
        record = PatientRecord(patient)
        self.records.append(record)
        return record

    def _inpatient(self) -> Generator[simpy.Event, None, None]:
        """One of the inpatients in the ward when the window opens, somewhere in their stay: what
        remains of it is spread evenly up to the length of a typical US stay."""
        with self.ward.request() as bed:
            yield bed
            with self._place(self.ward, None):
                yield self.env.timeout(self.rng.uniform(0, TYPICAL_STAY_DAYS))

    @contextmanager
    def _place(self, unit: CareUnit, record: PatientRecord | None) -> Iterator[int]:
        """The lowest-numbered free place (bed) of a unit whose request was granted, held for the
        block: the unit counts its places, this says which one a patient lies in."""
        free = self._free_places[unit.name]
        number = heapq.heappop(free)
        if record is not None:
            self._places[record.subject_id] = (unit.name, number)
        try:
            yield number
        finally:
            heapq.heappush(free, number)
            if record is not None:
                del self._places[record.subject_id]

    # --- one ED visit --------------------------------------------------------------------------
    def _ed_visit(self, record: PatientRecord) -> Generator[simpy.Event, None, None]:
        """From the door to home, or through boarding to a ward bed and home from there."""
        env, patient = self.env, record.patient
        door = env.now
        hour = min(int(self.hours_in(door)), len(self.stats.arrivals_by_hour) - 1)
        self.stats.arrivals_by_hour[hour] += 1
        case = self._presentation(patient)
        self.stats.by_esi[case.esi] = self.stats.by_esi.get(case.esi, 0) + 1
        condition = self.knowledge.conditions[case.condition]
        ed = encounter_id(patient.subject_id, 1)
        born = patient.birth_day - door
        self._step(record, "register", None, None,
                   [Fact(BIRTH, born), Fact(SEX_FEMALE if patient.sex == "F" else SEX_MALE, born)])
        self._step(record, "arrive", ed, "arrived", [Fact(visit_start_code("EMER")), Fact(ED_VISIT)])

        with self.triage.request(priority=case.esi) as nurse:
            yield nurse
            yield env.timeout(self._minutes(patient, TRIAGE))
        self._step(record, "triage", ed, "triaged")
        self._step(record, "vitals", ed, None, self._measurements(patient, TRIAGE_VITAL_SIGNS, case))

        with self.ed.request(priority=case.esi) as ed_bed:
            yield ed_bed
            with self._place(self.ed, record):
                self.stats.door_to_room.append((hour, (env.now - door) * MINUTES_PER_DAY))
                self._step(record, "room", ed, "in-progress")
                with self.physicians.request(priority=case.esi) as physician:
                    yield physician
                    yield env.timeout(self._minutes(patient, EXAM))
                self._step(record, "diagnosis", ed, None, [Fact(condition.code)])
                orders = self._orders(patient, "EMER",
                                      [Fact(case.medication, text=condition.code)] if case.medication else [])
                if orders:
                    self._step(record, "order", ed, None, orders)
                if case.labs:
                    yield env.timeout(self._minutes(patient, LAB_TURNAROUND))
                    self._step(record, "result", ed, None, self._measurements(patient, case.labs, case))
                yield env.timeout(self._minutes(patient, TREATMENT))
                if patient.rng.random() >= case.admit_probability:
                    self._discharge(record, ed)
                    return
                boarding = env.now
                ward_bed = self.ward.request()
                yield ward_bed  # boarding: the ED bed stays taken until a ward bed is free
                self.stats.boarding.append((env.now - boarding) * MINUTES_PER_DAY)
                self._step(record, "transfer", ed, "finished", [Fact(VISIT_END)])

        with ward_bed, self._place(self.ward, record):
            self.stats.admissions += 1
            ward = encounter_id(patient.subject_id, 2)
            self._step(record, "admit", ward, "in-progress",
                       [Fact(visit_start_code("IMP")), Fact(EMERGENCY_ADMISSION)])
            if orders := self._orders(patient, "IMP", []):  # the stay starts a chronic condition's therapy
                self._step(record, "order", ward, None, orders)
            stay = case.stay_days or condition.stay_days or TYPICAL_STAY_DAYS
            yield env.timeout(self._minutes(patient, (stay * MINUTES_PER_DAY, WARD_STAY_SPREAD)))
            self._discharge(record, ward)  # from the ward bed, before it is freed

    def _discharge(self, record: PatientRecord, encounter: int) -> None:
        self.stats.discharges += 1
        self._step(record, "discharge", encounter, "finished", [Fact(VISIT_END)])
        record.finish()

    # --- draws ---------------------------------------------------------------------------------
    def _presentation(self, patient: PatientState) -> Presentation:
        """The case mix of the moment (a surge's, if one is under way), among the presentations
        that fit the patient's age and sex."""
        surges = self.scenario.surges_at(self.hours_in(self.env.now))
        case_mix = next((s.case_mix for s in surges if s.case_mix), None)
        cases = [presentations()[c] for c in case_mix] if case_mix else list(presentations().values())
        fitting = [c for c in cases if fits(self.knowledge, c, patient, self.env.now)] or cases
        weights = np.array([c.weight for c in fitting])
        return fitting[pick(patient.rng, weights / weights.sum())]

    def _measurements(self, patient: PatientState, codes: tuple[str, ...], case: Presentation) -> list[Fact]:
        """The patient's body as measured now with this presentation (e.g. fever in pneumonia), as
        the engine measures it at any visit."""
        exam = Body(self.knowledge, patient).examine(self.env.now, {case.condition})
        return [fact for fact in map(exam.fact, codes) if fact is not None]

    @staticmethod
    def _minutes(patient: PatientState, median_spread: tuple[float, float]) -> float:
        """A lognormal duration given in minutes, in days."""
        median, spread = median_spread
        return patient.rng.lognormal(math.log(median), spread) / MINUTES_PER_DAY

    def _orders(self, patient: PatientState, encounter_class: str, proposed: list[Fact]) -> list[Fact]:
        """What the physician orders now, vetted as every chart's orders are: the proposed drugs in the
        product for the patient's age, and the guideline therapy an active condition lacks (a chronic
        condition's in a stay, not in the ED)."""
        visit = Visit(self.env.now, encounter_class, 0.0, proposed)
        Prescriber(self.knowledge).vet(patient, visit)
        return [fact for fact in visit.facts if fact.offset_days == 0 and fact.code != MEDICATION_END]

    def _step(self, record: PatientRecord, kind: str, encounter: int | None, status: str | None,
              facts: Sequence[Fact] = ()) -> None:
        """Record the step's facts (structural codes included, each `offset_days` from now) in the
        patient's record, under the encounter, and report the step."""
        first = len(record.events)
        for fact in facts:
            record.add_fact(self.env.now + fact.offset_days, fact, encounter)
        self._steps.append(CareStep(self.env.now, record, kind, encounter, status, tuple(record.events[first:]),
                                    self._places.get(record.subject_id)))
