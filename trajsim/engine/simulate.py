"""Run a scenario's cohort through the engine, chunk by chunk, yielding finished patients in order.

Chunks bound memory: only one chunk's patients are alive at once, however large the cohort.
"""

from __future__ import annotations

from collections.abc import Iterator

import simpy

from trajsim.engine.chart import chart_keepers
from trajsim.engine.patient import PatientRecord, patient_life
from trajsim.engine.population import draw_patient
from trajsim.engine.sampler import VisitSampler
from trajsim.engine.schedules import Schedule
from trajsim.engine.source import ENGINE_KINDS, TrajectorySource, engine_kinds
from trajsim.knowledge import load_knowledge
from trajsim.scenario import Scenario

CHUNK_SIZE = 256


def simulate(scenario: Scenario, source: TrajectorySource, first: int = 0, count: int | None = None,
             chunk_size: int = CHUNK_SIZE) -> Iterator[PatientRecord]:
    """Patients `first` .. `first + count - 1` of the scenario (all of them by default)."""
    knowledge, kinds = load_knowledge(), engine_kinds(source)
    adds_care = scenario.engine_adds_care
    if not adds_care:  # the engine keeps to what only it writes (allergies, smoking status, death) and
        kinds &= ENGINE_KINDS | source.defers  # to the schedules the source leaves to it
    stop = scenario.population.size if count is None else first + count
    for chunk_start in range(first, stop, chunk_size):
        records = [PatientRecord(draw_patient(scenario, i, knowledge), source.records_stops)
                   for i in range(chunk_start, min(chunk_start + chunk_size, stop))]
        care = [Schedule(knowledge, record.patient, kinds) for record in records]  # allergies are drawn now: plans know them
        for record in records:
            record.patient.source_state = source.new_state(record.patient)
        source.plan([record.patient for record in records])
        env = simpy.Environment(initial_time=min(r.patient.entry_day for r in records))
        sampler = VisitSampler(env, source)
        for record, schedule in zip(records, care):
            env.process(patient_life(env, record, sampler, source, schedule,
                                     chart_keepers(knowledge, record.patient, adds_care, source)))
        env.run()
        yield from records
