"""Who writes what: every kind of fact in a chart has one author, the trajectory source for the
kinds it declares and the engine's scheduled care for all the others."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence

import pytest

from tests.conftest import small_scenario
from trajsim.engine import (
    Fact,
    FactKind,
    PatientState,
    ReferenceSource,
    TrajectorySource,
    Visit,
    simulate,
)
from trajsim.engine.acute import keeper_codes
from trajsim.engine.procedures import medication_list_procedures
from trajsim.engine.assessments import answered_codes
from trajsim.engine.pregnancy import PROBLEM_VISIT
from trajsim.engine.source import ENGINE_KINDS, engine_kinds, fact_kind
from trajsim.events import CONDITION_END, DEATH, FOLLOW_UP_VISIT, VISIT_END, visit_start_code
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.labs import panel_results, reflexes
from trajsim.knowledge.physiology import PERCENTILE_OF
from trajsim.model import DEFAULT_MODEL

INFANTS_AND_ADULTS = ({"min": 0, "max": 2, "weight": 1.0}, {"min": 50, "max": 90, "weight": 1.0})
SYMPTOM_VISIT = "SNOMED/185345009"
# what the chart keepers write whatever the source: ends of episodes, acute care (engine/acute.py)
# with the growth percentiles the body adds beside a child's measurement (engine/body.py)
# a panel's results and a reflex test are the laboratory's (engine/labs.py, engine/body.py) once a
# source has ordered the panel or the test
LABORATORY_CODES = panel_results() | set(reflexes().values())
# the office visit an adult's preventive exam proposed too soon is recorded as (engine/preventive.py)
OFFICE_VISIT_TYPES = {FOLLOW_UP_VISIT, PROBLEM_VISIT}
# the medication reconciliation a stay with drugs gets when its source left it out (engine/procedures.py)
KEEPER_CODES = (keeper_codes(load_knowledge()) | {CONDITION_END} | set(PERCENTILE_OF.values()) | LABORATORY_CODES
                | OFFICE_VISIT_TYPES | medication_list_procedures())


class Counted(TrajectorySource):
    """Another source, unchanged, counting per patient the codes it hands to the engine."""

    def __init__(self, source: TrajectorySource) -> None:
        self.source, self.authors, self.defers = source, source.authors, source.defers
        self.codes: dict[int, Counter[str]] = defaultdict(Counter)

    def _count(self, patient: PatientState, visits: Sequence[Visit]) -> None:
        for visit in visits:
            if visit.encounter_class is not None:
                self.codes[patient.subject_id].update([visit_start_code(visit.encounter_class), VISIT_END])
            self.codes[patient.subject_id].update(fact.code for fact in visit.facts)

    def new_state(self, patient):
        return self.source.new_state(patient)

    def plan(self, patients):
        self.source.plan(patients)

    def admit(self, patient):
        history = self.source.admit(patient)
        self._count(patient, history)
        return history

    def next_visits(self, patients):
        visits = self.source.next_visits(patients)
        for patient, visit in zip(patients, visits):
            self._count(patient, [visit] if visit else [])
        return visits

    def between_visits(self, patient, until):
        facts = self.source.between_visits(patient, until)
        self.codes[patient.subject_id].update(fact.code for _, fact in facts)
        return facts

    def complete_visit(self, patient, visit):
        facts = self.source.complete_visit(patient, visit)
        self.codes[patient.subject_id].update(fact.code for fact in facts)
        return facts

    def recorded(self, patient, visit):
        self.source.recorded(patient, visit)


def authors_by_kind(source: TrajectorySource, size: int, seed: int) -> dict[FactKind, set[str]]:
    """Which components wrote facts of each kind: the source (codes it handed over) and the engine
    (recorded beyond what the source handed over)."""
    counted = Counted(source)
    writers: dict[FactKind, set[str]] = defaultdict(set)
    for record in simulate(small_scenario(size, seed=seed, **{"population.age_mix": INFANTS_AND_ADULTS}), counted):
        handed = counted.codes[record.subject_id]
        for code, count in Counter(e.code for e in record.events).items():
            if (kind := fact_kind(code)) is not None and count > handed[code]:
                # the end of an episode a source left open (engine/episodes.py), what the emergency
                # keeper writes (engine/acute.py) and renewals, stops and missing guideline therapy
                # (engine/prescriptions.py) are the chart keepers'
                writers[kind].add("keeper" if code in KEEPER_CODES or kind == FactKind.PRESCRIPTIONS else "engine")
        for code in handed:
            if (kind := fact_kind(code)) is not None:
                # a question a source asks (a smoking status) is answered by the assessment keeper
                writers[kind].add("keeper" if code in answered_codes() and kind not in source.authors else "source")
    return writers


def shipped_sources() -> list[TrajectorySource]:
    from trajsim.model.source import ModelSource

    return [ReferenceSource(), ModelSource(DEFAULT_MODEL)]


@pytest.mark.parametrize("source", shipped_sources(), ids=["reference", "default model"])
def test_each_kind_of_fact_has_one_author(source):
    writers = authors_by_kind(source, size=40, seed=12)
    assert {"source"} <= writers[FactKind.DIAGNOSES] and writers[FactKind.DEATHS] == {"engine"}
    for kind, who in writers.items():
        assert who - {"keeper"} == ({"source"} if kind in source.authors else {"engine"}), kind


def test_the_model_authors_what_it_learned_and_the_engine_what_it_did_not():
    from trajsim.model.source import ModelSource

    model = ModelSource(DEFAULT_MODEL)
    # its training charts hold every other kind, and their well visits and vaccines came from the
    # engine's own schedules (the reference simulator's), which the engine keeps for it
    scheduled = {FactKind.WELL_VISITS, FactKind.IMMUNIZATIONS}
    assert model.authors == frozenset(FactKind) - ENGINE_KINDS - scheduled and model.defers == scheduled
    assert engine_kinds(model) == ENGINE_KINDS | scheduled


def test_a_model_of_records_with_their_own_vaccines_keeps_authoring_them(tmp_path):
    """A model trained without `engine_schedules` (a user's own records) authors its vaccines and
    well visits, and the engine adds none."""
    from trajsim.model.source import ModelSource

    for name in ("model.pt", "tokenizer.json"):
        (tmp_path / name).write_bytes((DEFAULT_MODEL / name).read_bytes())
    tokenizer = json.loads((tmp_path / "tokenizer.json").read_text())
    del tokenizer["engine_schedules"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
    model = ModelSource(tmp_path)
    assert {FactKind.WELL_VISITS, FactKind.IMMUNIZATIONS} <= model.authors and not model.defers
    assert engine_kinds(model) == ENGINE_KINDS


def test_a_source_may_leave_only_the_schedules_to_the_engine():
    source = SymptomVisits(frozenset({FactKind.VISITS}))
    source.defers = frozenset({FactKind.MEASUREMENTS})
    with pytest.raises(ValueError, match="may leave only"):
        engine_kinds(source)


class SymptomVisits(TrajectorySource):
    """A visit for a symptom every two months, with nothing found: declares `authors` and writes none of it."""

    def __init__(self, authors: frozenset[FactKind]) -> None:
        self.authors = authors

    def next_visits(self, patients):
        return [Visit(p.now + 60, "AMB", 0.02, [Fact(SYMPTOM_VISIT)]) for p in patients]


def scheduled_kinds(source: TrajectorySource) -> Counter[FactKind]:
    scenario = small_scenario(20, seed=3, **{"population.age_mix": INFANTS_AND_ADULTS})
    return Counter(fact_kind(e.code) for record in simulate(scenario, source) for e in record.events
                   if e.code not in KEEPER_CODES)


@pytest.mark.parametrize("kind", sorted(set(FactKind) - ENGINE_KINDS - {FactKind.VISITS}, key=lambda k: k.value))
def test_the_engine_writes_nothing_of_a_kind_the_source_authors(kind):
    assert scheduled_kinds(SymptomVisits(frozenset({FactKind.VISITS, kind})))[kind] == 0


def test_the_engine_writes_what_no_source_authors():
    kinds = scheduled_kinds(SymptomVisits(frozenset({FactKind.VISITS})))
    for kind in (FactKind.WELL_VISITS, FactKind.MEASUREMENTS, FactKind.IMMUNIZATIONS, FactKind.PROCEDURES):
        assert kinds[kind] > 0, kind


def test_scheduled_care_runs_for_a_source_that_proposes_nothing():
    class Silent(TrajectorySource):
        def next_visits(self, patients):
            return [None for _ in patients]

    infants = ({"min": 0, "max": 2, "weight": 1.0},)
    for record in simulate(small_scenario(20, **{"population.age_mix": infants}), Silent()):
        if record.patient.death_day is None and record.patient.age_at(record.patient.exit_day) > 1.5:
            codes = Counter(e.code for e in record.events)
            assert codes["SNOMED/410620009"] >= 6 and codes["CVX/08"] == 3 and codes["LOINC/8302-2"] >= 6


def test_only_the_engine_writes_deaths_and_allergies():
    with pytest.raises(ValueError, match="only the engine writes"):
        engine_kinds(SymptomVisits(frozenset({FactKind.VISITS, FactKind.DEATHS})))


def care_run(care: str) -> Counter[str]:
    """Codes recorded for symptom visits of a source authoring only visits, with the scenario's `care`."""
    scenario = small_scenario(30, seed=5, care=care, **{"population.age_mix": INFANTS_AND_ADULTS})
    return Counter(e.code for record in simulate(scenario, SymptomVisits(frozenset({FactKind.VISITS})))
                   for e in record.events)


def test_a_source_keeping_its_own_care_gets_none_from_the_engine():
    codes = care_run("source")
    kinds = Counter(fact_kind(code) for code in codes.elements())
    assert codes[visit_start_code("EMER")] == codes[visit_start_code("IMP")] == 0  # no emergencies of the engine's
    for kind in (FactKind.WELL_VISITS, FactKind.MEASUREMENTS, FactKind.IMMUNIZATIONS, FactKind.PROCEDURES,
                 FactKind.PRESCRIPTIONS):
        assert kinds[kind] == 0, kind
    assert codes[visit_start_code("AMB")] > 100  # the source's own visits are all recorded


def test_the_engine_adds_its_care_when_the_scenario_asks():
    codes = care_run("engine")
    assert codes[visit_start_code("EMER")] > 0 and codes["SNOMED/410620009"] > 0  # emergencies, well-child visits


def test_care_defaults_to_the_source_for_any_model(tmp_path):
    (tmp_path / "model.pt").touch()
    assert small_scenario(care=None, model="reference").engine_adds_care
    assert not small_scenario(care=None, model="default").engine_adds_care  # it learned the engine's care
    assert not small_scenario(care=None, model=str(tmp_path)).engine_adds_care
    assert small_scenario(care="engine", model=str(tmp_path)).engine_adds_care


def test_a_death_keeps_its_terminal_encounter_when_the_source_keeps_its_own_care():
    """No source knows the engine's day of death, so the engine dates the stay or ED visit a death
    ends whatever `care` says: about 30% of deaths are in hospital (NCHS)."""
    oldest = ({"min": 85, "max": 100, "weight": 1.0},)
    scenario = small_scenario(200, seed=5, care="source", **{"population.age_mix": oldest})
    acute = (visit_start_code("EMER"), visit_start_code("IMP"))
    decedents = in_hospital = 0
    for record in simulate(scenario, SymptomVisits(frozenset({FactKind.VISITS}))):
        death = next((e.time for e in record.events if e.code == DEATH), None)
        stays = {e.encounter_id for e in record.events if e.code in acute}
        ends = [e.time for e in record.events if e.code == VISIT_END and e.encounter_id in stays]
        assert len(stays) <= 1 and all(end == death for end in ends)  # only the one a death ends
        decedents += death is not None
        in_hospital += bool(stays)
    assert decedents >= 40 and 0.15 <= in_hospital / decedents <= 0.5


def test_the_engine_adds_only_the_measurements_a_source_records():
    """A model of Synthea's records never saw a white-cell differential or a triage temperature:
    the panel the engine completes and the ED triage take only what the source measures (the
    differential and triage vitals it added had taken Synthea prevalence R2 from 0.83 to 0.40)."""
    from tests.test_episodes import patient
    from trajsim.engine.acute import EmergencyKeeper
    from trajsim.engine.labs import LabKeeper
    from trajsim.knowledge.labs import lab_panels
    from trajsim.knowledge.physiology import DIASTOLIC, HEMOGLOBIN, SYSTOLIC, VITAL_SIGNS

    cbc = "LOINC/57021-8"
    measured = frozenset({HEMOGLOBIN, "LOINC/6690-2", SYSTOLIC, DIASTOLIC})  # hemoglobin, leukocytes, BP
    p = patient(age=40.0)
    for keeper, expected in ((LabKeeper(), set(lab_panels()[cbc])), (LabKeeper(measured=measured), {HEMOGLOBIN, "LOINC/6690-2"})):
        visit = Visit(p.now, "AMB", 0.02, [Fact(HEMOGLOBIN)])
        keeper.vet(p, visit)
        assert {f.code for f in visit.facts} == expected
    ed = Visit(p.now, "EMER", 0.1, [Fact("SNOMED/50849002")])
    EmergencyKeeper(load_knowledge(), measured=measured).vet(p, ed)
    assert {f.code for f in ed.facts if f.code in VITAL_SIGNS} == {SYSTOLIC, DIASTOLIC}
    toddler = patient(age=1.5)  # no BP is taken under 3: triage takes the others
    ed = Visit(toddler.now, "EMER", 0.1, [Fact("SNOMED/50849002")])
    EmergencyKeeper(load_knowledge(), measured=measured).vet(toddler, ed)
    assert {f.code for f in ed.facts if f.code in VITAL_SIGNS} - {SYSTOLIC, DIASTOLIC}


def test_visits_before_1970_are_kept_like_any_other():
    """Days count from 1970, so a lifetime record's early visits have negative days: an acute
    illness then is diagnosed (it was dropped as an episode still active) and a prenatal visit with
    no pregnancy is made an office visit, as after 1970."""
    from tests.test_episodes import patient
    from trajsim.engine.episodes import EpisodeKeeper
    from trajsim.engine.pregnancy import PregnancyKeeper
    from trajsim.knowledge.lifecycles import PRENATAL_INITIAL

    p = patient(age=25.0, now=-5000.0)
    p.birth_day, p.entry_day = -5000.0 - 25 * 365.25, -5000.0 - 25 * 365.25
    strep = Visit(p.now, "AMB", 0.02, [Fact("SNOMED/185345009"), Fact("SNOMED/43878008")])
    EpisodeKeeper(load_knowledge()).vet(p, strep)
    assert "SNOMED/43878008" in {f.code for f in strep.facts}
    prenatal = Visit(p.now, "AMB", 0.02, [Fact(PRENATAL_INITIAL)])
    PregnancyKeeper(load_knowledge(), adds_care=False).vet(p, prenatal)
    assert PRENATAL_INITIAL not in {f.code for f in prenatal.facts}


def test_a_model_well_visit_left_to_the_engine_gives_its_findings_to_the_engines_next_one():
    """The shipped model's own well visit is not recorded: its lab goes to the engine's next well
    visit, which takes the vital signs of the child's age; a vaccine it wrote anywhere is dropped."""
    from collections import deque

    import numpy as np

    from trajsim.engine.source import WELL_CHILD
    from trajsim.knowledge.physiology import HEIGHT
    from trajsim.model.source import ModelPlan, ModelSource

    model, hemoglobin, dtap, flu = ModelSource(DEFAULT_MODEL), "LOINC/718-7", "CVX/20", "CVX/140"
    plan = ModelPlan(deque())
    model._leave_to_engine(plan, Visit(100.0, "AMB", 0.02, [Fact(WELL_CHILD), Fact(HEIGHT), Fact(hemoglobin), Fact(dtap)]))
    model._leave_to_engine(plan, Visit(110.0, "AMB", 0.02, [Fact(SYMPTOM_VISIT), Fact(flu)]))
    assert [[f.code for f in visit.facts] for visit in plan.visits] == [[SYMPTOM_VISIT]]
    infant = PatientState(1, "F", 0.0, 0.0, 4000.0, None, np.random.default_rng(1), source_state=plan)
    earlier = [f.code for f in model.complete_visit(infant, Visit(90.0, "AMB", 0.02, [Fact(WELL_CHILD)]))]
    assert HEIGHT in earlier and hemoglobin not in earlier  # the model's well visit came after it
    codes = [f.code for f in model.complete_visit(infant, Visit(120.0, "AMB", 0.02, [Fact(WELL_CHILD)]))]
    assert codes.count(HEIGHT) == 1 and hemoglobin in codes and dtap not in codes and not plan.well_findings
    assert model.complete_visit(infant, Visit(130.0, "AMB", 0.02, [Fact(SYMPTOM_VISIT)])) == []
