"""The engine owns the timeline: records start at birth, visits never overlap, death is final,
and a patient is the same whichever batch or chunk simulates it."""

from collections.abc import Sequence

import simpy

from tests.conftest import small_scenario
from trajsim.engine import Fact, FactKind, PatientState, ReferenceSource, TrajectorySource, Visit, simulate
from trajsim.clock import to_datetime
from trajsim.engine.sampler import VisitSampler
from trajsim.events import BIRTH, DEATH, VISIT_END, VISIT_START_PREFIX

ELDERLY = ({"min": 88, "max": 100, "weight": 1.0},)


def cohort(size=150, **changes):
    return list(simulate(small_scenario(size, **changes), ReferenceSource()))


def test_every_event_lies_between_birth_and_death_or_end():
    for record in cohort():
        patient = record.patient
        birth = to_datetime(patient.birth_day)
        last = to_datetime(patient.exit_day)
        assert record.events[0].code == BIRTH
        assert all(birth <= event.time <= last for event in record.events), record.subject_id


def test_death_is_final():
    dead = [r for r in cohort(**{"population.age_mix": ELDERLY}) if r.patient.death_day is not None]
    assert len(dead) > 20  # people aged 88-100 over ten years mostly die
    for record in dead:
        death_time = next(e.time for e in record.events if e.code == DEATH)
        assert all(e.time <= death_time for e in record.events)
        assert sum(e.code == DEATH for e in record.events) == 1


def test_encounters_are_ordered_and_never_overlap():
    for record in cohort():
        starts = {e.encounter_id: e.time for e in record.events if e.code.startswith(VISIT_START_PREFIX)}
        ends = {e.encounter_id: e.time for e in record.events if e.code == VISIT_END}
        assert starts.keys() == ends.keys()
        periods = sorted((starts[k], ends[k]) for k in starts)
        for (start, end), (next_start, _) in zip(periods, periods[1:]):
            assert start <= end <= next_start


def test_a_patient_is_the_same_in_any_chunk():
    scenario = small_scenario(12)
    whole = {r.subject_id: r.events for r in simulate(scenario, ReferenceSource())}
    pieces = {r.subject_id: r.events for r in simulate(scenario, ReferenceSource(), first=5, count=4, chunk_size=3)}
    assert pieces == {k: whole[k] for k in range(6, 10)}


class RecordingSource(TrajectorySource):
    """A source that proposes a well visit `step_days` ahead (with a heart rate `fact_offset` days later)."""

    authors = frozenset({FactKind.VISITS, FactKind.WELL_VISITS, FactKind.MEASUREMENTS})

    def __init__(self, step_days: float = 30.0, fact_offset: float = 0.0):
        self.step_days, self.fact_offset = step_days, fact_offset
        self.batch_sizes: list[int] = []

    def next_visits(self, patients: Sequence[PatientState]) -> list[Visit | None]:
        self.batch_sizes.append(len(patients))
        return [Visit(p.now + self.step_days, "AMB", 0.01, [Fact("SNOMED/162673000"),
                      Fact("LOINC/8867-4", offset_days=self.fact_offset, value=70.0, unit="/min")]) for p in patients]


def test_patients_waiting_at_the_same_instant_are_answered_in_one_batch():
    env = simpy.Environment()
    source = RecordingSource()
    sampler = VisitSampler(env, source)
    answers = []

    def ask(p):
        answers.append((yield sampler.next_visit(p)))

    patients = [PatientState(i, "F", 0.0, 0.0, 100.0, None, None) for i in range(5)]
    for p in patients:
        env.process(ask(p))
    env.run()
    assert source.batch_sizes == [5]
    assert len(answers) == 5


def test_the_cohort_entering_together_is_batched():
    source = RecordingSource()
    list(simulate(small_scenario(60), source))
    assert max(source.batch_sizes) > 10


def test_facts_proposed_after_death_are_never_recorded():
    source = RecordingSource(step_days=20, fact_offset=15)
    records = list(simulate(small_scenario(80, **{"population.age_mix": ELDERLY}), source))
    died = [r for r in records if r.patient.death_day is not None]
    assert died
    for record in died:
        death = next(e.time for e in record.events if e.code == DEATH)
        assert max(e.time for e in record.events) == death


def test_a_visit_proposed_in_the_past_happens_now():
    class Backwards(RecordingSource):
        """Every second proposal lies ten days in the past."""

        def next_visits(self, patients):
            self.batch_sizes.append(len(patients))
            return [Visit(p.now - 10 if len(self.batch_sizes) % 2 else p.now + 30, "AMB", 0.01, []) for p in patients]

    records = list(simulate(small_scenario(3), Backwards()))
    for record in records:
        starts = [e.time for e in record.events if e.code.startswith(VISIT_START_PREFIX)]
        assert len(starts) > 10
        assert starts == sorted(starts)
        assert starts[0] >= to_datetime(record.patient.entry_day)


def test_a_weighted_pick_draws_what_numpy_choice_draws_and_leaves_the_same_stream():
    import numpy as np

    from trajsim.engine.draws import pick

    options = np.random.default_rng(7)
    for seed in range(2000):
        weights = options.random(int(options.integers(1, 12))) ** 3  # some options all but impossible
        weights[int(options.integers(0, len(weights)))] += 0.5  # never all zero
        probabilities = [w / weights.sum() for w in weights]
        numpy_rng, our_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        assert pick(our_rng, probabilities) == int(numpy_rng.choice(len(probabilities), p=probabilities))
        assert our_rng.random() == numpy_rng.random()
