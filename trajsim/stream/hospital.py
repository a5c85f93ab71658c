"""A hospital as a SimPy model: patients arrive at the ED by hour of day and weekday (and faster in
a surge), are triaged, wait for an ED bed and a physician, have labs drawn and medication ordered,
and go home or wait for a ward bed and are admitted. Beds and clinicians are finite resources, so
queues and waits emerge when arrivals outrun them.

Each step produces the FHIR request the hospital's systems would send (`messages.py`); the stream
pulls them lazily, in simulated-time order, with `Hospital.interactions()`.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import simpy

from trajsim.clock import DAYS_PER_YEAR, MINUTES_PER_DAY
from trajsim.engine.capacity import CareUnit
from trajsim.knowledge import load_knowledge
from trajsim.scenario import US_2020_AGE_MIX, Presentation, StreamScenario, presentations
from trajsim.stream.messages import BLOOD_PRESSURE_PANEL, HospitalRecords, Request

# Durations in minutes, as lognormal (median, spread) pairs. An ED visit that ends at home lasts
# about 2.5 hours at the US median (CMS Hospital Compare measure OP-18b, 2019-2022: 140-160 min);
# the parts below add up to that when no queue forms.
TRIAGE = (6.0, 0.3)
EXAM = (20.0, 0.4)
LAB_TURNAROUND = (50.0, 0.3)  # CAP Q-Probes: ED STAT chemistry results in about an hour
TREATMENT = (45.0, 0.5)
WARD_STAY_SPREAD = 0.5
TYPICAL_STAY_DAYS = 4.5  # mean US hospital stay, about 4.5 days (HCUP, National Inpatient Sample 2018)
VITALS = ("LOINC/8867-4", "LOINC/9279-1", "LOINC/8310-5", BLOOD_PRESSURE_PANEL[0])
BLOOD_PRESSURE_PARTS = ("LOINC/8480-6", "LOINC/8462-4")


@dataclass(frozen=True)
class Interaction:
    """A FHIR request due at `minute` (simulated minutes from the scenario's start); `patient` keeps
    one patient's requests in order (0: the hospital itself)."""

    number: int
    minute: float
    patient: int
    kind: str
    request: Request


@dataclass
class HospitalStats:
    """What happened in the hospital, for the dashboard and the summary."""

    arrivals_by_hour: list[int]
    door_to_room: list[tuple[int, float]] = field(default_factory=list)  # (arrival hour, minutes waited)
    boarding: list[float] = field(default_factory=list)  # minutes admitted patients waited for a ward bed
    admissions: int = 0
    discharges: int = 0
    by_esi: dict[int, int] = field(default_factory=dict)


class Hospital:
    """The hospital of one stream scenario; run it by iterating `interactions()`."""

    def __init__(self, scenario: StreamScenario) -> None:
        self.scenario = scenario
        self.env = simpy.Environment()
        self.rng = random.Random(scenario.seed)
        self.records = HospitalRecords(scenario)
        capacity = scenario.capacity
        self.triage = CareUnit(self.env, "triage nurses", capacity.triage_nurses)
        self.ed = CareUnit(self.env, "ED beds", capacity.ed_beds)
        self.physicians = CareUnit(self.env, "ED physicians", capacity.physicians)
        self.ward = CareUnit(self.env, "ward beds", capacity.ward_beds)
        self.stats = HospitalStats(arrivals_by_hour=[0] * math.ceil(scenario.hours))
        self.knowledge = load_knowledge()
        self._outbox: deque[Interaction] = deque()
        self._sent = 0
        self._free_beds = list(range(capacity.ed_beds, 0, -1))
        self._census()
        self.env.process(self._arrivals())

    @property
    def minute(self) -> float:
        return self.env.now

    def interactions(self) -> Iterator[Interaction]:
        """Every request of the scenario's window in time order, simulating only as far as needed."""
        end = self.scenario.hours * 60
        self._emit(0, "setup", self.records.setup())
        while True:
            while self._outbox:
                yield self._outbox.popleft()
            if self.env.peek() >= end:
                return
            self.env.step()

    # --- arrivals ------------------------------------------------------------------------------
    def arrival_rate(self, minute: float) -> float:
        """Expected arrivals per minute at `minute`: the daily mean shaped by hour and weekday,
        times every surge under way."""
        arrivals = self.scenario.arrivals
        moment = self.scenario.start + timedelta(minutes=minute)
        rate = arrivals.per_day / MINUTES_PER_DAY
        rate *= arrivals.hourly[moment.hour] / (sum(arrivals.hourly) / 24)
        rate *= arrivals.weekday[moment.weekday()] / (sum(arrivals.weekday) / 7)
        return rate * math.prod(s.multiplier for s in self.scenario.surges_at(minute / 60))

    def _arrivals(self) -> Generator[simpy.Event, None, None]:
        """A non-homogeneous Poisson process, drawn by thinning a process at the highest rate."""
        arrivals = self.scenario.arrivals
        peak = (arrivals.per_day / MINUTES_PER_DAY * max(arrivals.hourly) / (sum(arrivals.hourly) / 24)
                * max(arrivals.weekday) / (sum(arrivals.weekday) / 7)
                * math.prod(max(s.multiplier, 1.0) for s in self.scenario.surges))
        number = 0
        while True:
            yield self.env.timeout(self.rng.expovariate(peak))
            if self.rng.random() * peak < self.arrival_rate(self.env.now):
                number += 1
                self.env.process(self._patient(number))

    def _census(self) -> None:
        """Start with the ward as full as the scenario says. Those inpatients are somewhere in their
        stay: what remains of it is spread evenly up to the length of a typical US stay."""
        for _ in range(round(self.scenario.capacity.ward_beds * self.scenario.capacity.ward_occupancy)):
            self.env.process(self._inpatient(self.rng.uniform(0, TYPICAL_STAY_DAYS * MINUTES_PER_DAY)))

    def _inpatient(self, minutes: float) -> Generator[simpy.Event, None, None]:
        bed = yield from self.ward.admit()
        yield self.env.timeout(minutes)
        self.ward.discharge(bed)

    # --- one ED visit --------------------------------------------------------------------------
    def _patient(self, number: int) -> Generator[simpy.Event, object, None]:
        door, hour = self.env.now, int(self.env.now // 60)
        self.stats.arrivals_by_hour[min(hour, len(self.stats.arrivals_by_hour) - 1)] += 1
        sex = "F" if self.rng.random() < 0.5 else "M"
        age = self._age()
        case = self._presentation(age)
        self.stats.by_esi[case.esi] = self.stats.by_esi.get(case.esi, 0) + 1
        records = self.records
        request, patient = records.register(number, sex, self._now() - timedelta(days=age * DAYS_PER_YEAR))
        self._emit(number, "register", request)
        encounter = records.arrival(number, patient, self._now())
        self._emit(number, "arrive", records.arrived(encounter))

        nurse = yield from self.triage.admit(priority=case.esi)
        yield self.env.timeout(self._minutes(TRIAGE))
        self.triage.discharge(nurse)
        self._emit(number, "triage", records.triaged(encounter, case.esi))
        active = {case.condition}
        for code in VITALS:
            self._emit(number, "vitals", records.observation(encounter, code, self._value(code, sex, age, active),
                                                             self._now()))

        bed = yield from self.ed.admit(priority=case.esi)
        self.stats.door_to_room.append((hour, self.env.now - door))
        bed_number = self._free_beds.pop()
        self._emit(number, "room", records.roomed(encounter, bed_number))

        physician = yield from self.physicians.admit(priority=case.esi)
        yield self.env.timeout(self._minutes(EXAM))
        self.physicians.discharge(physician)
        diagnosis = self.knowledge.conditions[case.condition].code
        self._emit(number, "diagnosis", records.diagnosis(encounter, diagnosis, self._now()))
        if case.medication:
            self._emit(number, "order", records.order(encounter, case.medication, diagnosis, self._now()))
        if case.labs:
            yield self.env.timeout(self._minutes(LAB_TURNAROUND))
            for code in case.labs:
                self._emit(number, "result", records.observation(encounter, code, self._value(code, sex, age, active),
                                                                 self._now()))
        yield self.env.timeout(self._minutes(TREATMENT))

        if self.rng.random() < case.admit_probability:
            waiting = self.env.now
            ward_bed = yield from self.ward.admit()  # boarding: the ED bed stays taken meanwhile
            self.stats.boarding.append(self.env.now - waiting)
            self._leave_ed(bed, bed_number)
            self.stats.admissions += 1
            self._emit(number, "admit", records.admitted(encounter, self._now()))
            stay = self._stay_days(case)
            yield self.env.timeout(self._minutes((stay * MINUTES_PER_DAY, WARD_STAY_SPREAD)))
            self.ward.discharge(ward_bed)
        else:
            self._leave_ed(bed, bed_number)
        self.stats.discharges += 1
        self._emit(number, "discharge", records.discharged(encounter, self._now()))

    def _leave_ed(self, bed: simpy.resources.resource.Request, bed_number: int) -> None:
        self.ed.discharge(bed)
        self._free_beds.append(bed_number)

    # --- draws ---------------------------------------------------------------------------------
    def _age(self) -> float:
        groups = US_2020_AGE_MIX
        group = self.rng.choices(groups, weights=[g.weight for g in groups])[0]
        return self.rng.uniform(group.min, group.max)

    def _presentation(self, age: float) -> Presentation:
        """The case mix of the moment (a surge's, if one is under way), among conditions that fit the age."""
        case_mix = next((s.case_mix for s in self.scenario.surges_at(self.env.now / 60) if s.case_mix), None)
        cases = [presentations()[c] for c in case_mix] if case_mix else list(presentations().values())
        fitting = [c for c in cases if self._fits(c, age)] or cases
        return self.rng.choices(fitting, weights=[c.weight for c in fitting])[0]

    def _fits(self, case: Presentation, age: float) -> bool:
        restriction = self.knowledge.restrictions.get(self.knowledge.conditions[case.condition].code)
        return age >= case.age_min and (restriction is None or restriction.age_min <= age < restriction.age_max)

    def _value(self, code: str, sex: str, age: float, active: set[str]) -> float | tuple[float, float]:
        if code == BLOOD_PRESSURE_PANEL[0]:
            return tuple(self._value(part, sex, age, active) for part in BLOOD_PRESSURE_PARTS)
        known = self.knowledge.value_distribution(code, sex, age, active)
        if known is None:  # e.g. a blood pressure below age 3: use the youngest band's figures
            known = self.knowledge.value_distribution(code, sex, 3.0, active)
        return max(self.rng.gauss(known.mean, known.sd), known.mean / 4)

    def _stay_days(self, case: Presentation) -> float:
        return case.stay_days or self.knowledge.conditions[case.condition].stay_days

    def _minutes(self, median_spread: tuple[float, float]) -> float:
        median, spread = median_spread
        return self.rng.lognormvariate(math.log(median), spread)

    def _now(self) -> datetime:
        return self.scenario.start + timedelta(minutes=round(self.env.now))

    def _emit(self, patient: int, kind: str, request: Request) -> None:
        self._sent += 1
        self._outbox.append(Interaction(self._sent, self.env.now, patient, kind, request))
