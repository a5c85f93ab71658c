"""The model inside the engine: its records obey the clinical rules because the rules mask what
it may write, the same seed gives the same records, and `trajsim train` makes a usable folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from trajsim.cli import app
from trajsim.clock import DAYS_PER_YEAR, calendar_date
from trajsim.engine import ReferenceSource, TrajectorySource, simulate
from trajsim.engine.population import draw_patient
from trajsim.knowledge import load_knowledge
from trajsim.events import MEDICATION_END, VISIT_START_PREFIX, events_frame, visit_start_code
from trajsim.model import DEFAULT_MODEL
from trajsim.model.sample import one_thread
from trajsim.model.source import ModelSource
from trajsim.model.train import WEIGHTS, train
from trajsim.rules import find_violations

from tests.conftest import small_scenario
from tests.test_model_tokenizer import visit_years_and_marks
from tests.test_model_train import one_torch_thread, tiny_training  # noqa: F401 - autouse fixture


def reference_events(size: int, seed: int) -> pl.DataFrame:
    return events_frame(e for r in simulate(small_scenario(size, seed=seed), ReferenceSource()) for e in r.events)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A barely trained model: it knows the token grammar roughly and proposes plenty of
    clinically invalid codes when nothing stops it."""
    folder = tmp_path_factory.mktemp("tiny-model")
    with one_thread():
        train(reference_events(40, seed=21), folder, tiny_training(max_steps=40))
    return folder


def model_events(folder: Path, size: int, seed: int, source: ModelSource | None = None) -> pl.DataFrame:
    source = source or ModelSource(folder)
    scenario = small_scenario(size, seed=seed, model=str(folder))  # the model's own care, as generate runs it
    return events_frame(e for r in simulate(scenario, source) for e in r.events)


def acute_care_per_person_year(model: str, source: TrajectorySource, size: int = 150) -> dict[str, float]:
    """ED visits and inpatient stays per person-year of a default-scenario cohort of `model`."""
    records = list(simulate(small_scenario(size, seed=9, model=model), source))
    years = sum(r.patient.exit_day - r.patient.entry_day for r in records) / DAYS_PER_YEAR
    counts = Counter(e.code for r in records for e in r.events)
    return {cls: counts[visit_start_code(cls)] / years for cls in ("EMER", "IMP")}


class AllowEverything:
    def __init__(self, codes: list[str]) -> None:
        self.codes = codes

    def allowed(self, patients, day, until=None) -> np.ndarray:
        return np.ones((len(patients), len(self.codes)), dtype=bool)


def test_shipped_model_breaks_no_rule_in_eight_thousand_sampled_visits():
    events = model_events(DEFAULT_MODEL, 330, seed=8)  # every visit is the model's: the engine adds no well visits
    assert events.filter(pl.col("code").str.starts_with(VISIT_START_PREFIX)).height >= 8_000
    assert find_violations(events).is_empty()


def test_the_shipped_model_writes_the_acute_care_it_learned_once():
    """The shipped model learned the reference simulator's charts, emergencies and stays included;
    the engine adds none of its own beside them by default, so a default chart has about the
    reference's acute care, not twice it (as it had while the smoking and pregnancy status it
    learned at every visit were forbidden to it, which pushed it off the charts it knew)."""
    shipped = acute_care_per_person_year("default", ModelSource(DEFAULT_MODEL))
    reference = acute_care_per_person_year("reference", ReferenceSource())
    for cls in ("EMER", "IMP"):
        assert 0.6 * reference[cls] <= shipped[cls] <= 1.5 * reference[cls], (cls, shipped, reference)


def test_without_masks_a_model_breaks_rules(tiny_model):
    source = ModelSource(tiny_model)
    source.rules = AllowEverything(source.grammar.base_codes)
    assert not find_violations(model_events(tiny_model, 60, 8, source)).is_empty()


def test_same_seed_same_records(tiny_model):
    assert model_events(tiny_model, 20, seed=4).equals(model_events(tiny_model, 20, seed=4))


def test_a_patient_gets_the_same_record_whichever_shard_samples_its_chunk(tiny_model):
    """Shards hold whole chunks of the fixed grid, so a chunk is sampled as one batch whoever runs
    it. Chunks of another size may differ: the model's float32 logits depend on the batch's size
    in their last bit (1.8e-7 measured), and a draw that falls that close to a token's cumulative
    weight picks its neighbour (it did at 1 token in 2,800 events)."""
    scenario, source = small_scenario(8, seed=4, model=str(tiny_model)), ModelSource(tiny_model)
    whole = events_frame(e for r in simulate(scenario, source, chunk_size=4) for e in r.events)
    sharded = events_frame(e for first in (4, 0) for r in simulate(scenario, ModelSource(tiny_model), first, 4, chunk_size=4)
                           for e in r.events).sort("subject_id", maintain_order=True)
    assert whole.equals(sharded)


def test_train_command_writes_a_model_folder(tmp_path):
    reference_events(12, seed=2).write_parquet(tmp_path / "events.parquet")
    result = CliRunner().invoke(app, ["train", "--events", str(tmp_path / "events.parquet"), "--out",
                                      str(tmp_path / "model"), "--max-steps", "4", "--eval-every", "2",
                                      "--n-layer", "1", "--n-embd", "16", "--block-size", "128"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model" / WEIGHTS).is_file()


def test_train_command_names_a_missing_events_file(tmp_path):
    result = CliRunner().invoke(app, ["train", "--events", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "nope.parquet" in result.output and "Traceback" not in result.output


def test_a_written_record_marks_each_new_year_it_passes(tiny_model):
    source = ModelSource(tiny_model)
    assert source.tokenizer.year_marks
    scenario = small_scenario(12, seed=5)
    patients = [draw_patient(scenario, i, load_knowledge()) for i in range(12)]
    for row in source.write_tokens(patients):
        marks, marked_at_visit, visit_years = visit_years_and_marks(source.tokenizer, row.tolist())
        assert marks == list(range(marks[0], marks[-1] + 1))
        assert marked_at_visit == visit_years[:len(marked_at_visit)]


def test_a_written_record_is_told_the_year_it_ends(tiny_model):
    source = ModelSource(tiny_model)
    scenario = small_scenario(12, seed=6)
    patients = [draw_patient(scenario, i, load_knowledge()) for i in range(12)]
    for patient, row in zip(patients, source.write_tokens(patients)):
        tokens = [source.tokenizer.vocab[i] for i in row.tolist()]
        end_year = calendar_date(patient.exit_day - 1e-6).year
        assert tokens[3].startswith("YEAR/") and tokens[4] == f"UNTIL/{end_year}"
        assert sum(t.startswith("UNTIL/") for t in tokens) == 1


def test_a_record_that_starts_at_entry_starts_in_the_entry_year(tiny_model):
    source = ModelSource(tiny_model)
    patients = [draw_patient(small_scenario(12, seed=7), i, load_knowledge()) for i in range(12)]
    for patient in patients:
        patient.record_starts_at_entry = True
    for patient, row in zip(patients, source.write_tokens(patients)):
        assert source.tokenizer.vocab[int(row[3])] == f"YEAR/{calendar_date(patient.entry_day).year}"


def test_a_sources_local_codes_may_be_written_outside_visits_and_known_labs_may_not():
    """MIMIC records most outpatient labs outside any admission under its own item codes: a model
    trained on them may write them there, while a LOINC lab still needs an encounter, as does an ICU
    chart code the source recorded only in stays, and a history before the record keeps none (a lab
    is no longer true)."""
    from datetime import datetime

    from trajsim.events import Event
    from trajsim.model.source import TokenGrammar
    from trajsim.model.tokenizer import Tokenizer

    local, loinc, day = "LOCAL/MEDS-LAB/50912", "LOINC/2160-0", datetime(2150, 3, 1)
    icu_chart = "LOCAL/MEDS-LAB/220045"  # recorded only in stays
    rows = [Event(1, datetime(2100, 1, 1), None, "TRAJSIM/birth")]
    rows += [Event(1, day, None, code, 1.0, "mg/dL") for code in (local, loinc) for _ in range(6)]
    rows += [Event(1, day, 7, "TRAJSIM/visit/IMP")] + [Event(1, day, 7, icu_chart, 80.0, "bpm") for _ in range(6)]
    tokenizer = Tokenizer.fit(events_frame(rows))
    grammar = TokenGrammar(tokenizer, load_knowledge())
    value_tokens = {code: [i for i, t in enumerate(tokenizer.vocab) if t.startswith(code + "#")]
                    for code in (local, loinc, icu_chart)}
    assert grammar.outside_visit[value_tokens[local]].all() and not grammar.outside_visit[value_tokens[loinc]].any()
    assert not grammar.outside_visit[value_tokens[icu_chart]].any()
    assert not grammar.history[value_tokens[local]].any()


def test_a_sources_local_drugs_and_findings_may_be_ended_as_it_ended_them():
    """MIMIC's OMOP form ends its local drug and chart codes (a third of its rows): a model trained
    on it may name them after medication_end or condition_end, where before the end token found no
    code to name and closed the visit unfinished; a source that ends no drug of a system the
    knowledge knows and none of its own is never written medication_end."""
    from datetime import datetime

    from trajsim.events import CONDITION_END, MEDICATION_END, Event
    from trajsim.model.source import TokenGrammar
    from trajsim.model.tokenizer import Tokenizer

    drug, finding, lab, day = "LOCAL/MIMICIV-drug_exposure/00338008504", "LOCAL/chart/AF", "LOCAL/lab/1", datetime(2150, 3, 1)
    rows = [Event(1, datetime(2100, 1, 1), None, "TRAJSIM/birth"), Event(1, day, 7, "TRAJSIM/visit/IMP")]
    rows += [Event(1, day, 7, code) for code in (drug, finding, lab) for _ in range(6)]
    rows += [Event(1, day, 7, MEDICATION_END, text=drug), Event(1, day, 7, CONDITION_END, text=finding)] * 6
    tokenizer = Tokenizer.fit(events_frame(rows))
    assert tokenizer.ended_codes == {CONDITION_END: [finding], MEDICATION_END: [drug]}
    grammar = TokenGrammar(tokenizer, load_knowledge())
    index = tokenizer.index
    medication_end = index[MEDICATION_END]
    assert grammar.endable[medication_end][index[drug]] and not grammar.endable[medication_end][index[lab]]
    assert grammar.learned_condition_ends[index[finding]] and not grammar.learned_condition_ends[index[drug]]
    assert grammar.in_visit[medication_end]
    unended = Tokenizer.fit(events_frame([r for r in rows if r.code not in (MEDICATION_END, CONDITION_END)]))
    assert not TokenGrammar(unended, load_knowledge()).in_visit[unended.index[MEDICATION_END]]


def test_a_record_may_run_twice_as_long_as_the_longest_training_record(tiny_model):
    """Records of ICU stays run to tens of thousands of tokens: the writer does not cut a record at
    a few contexts when its model learned longer ones."""
    from trajsim.model.train import split_subjects

    events = reference_events(40, seed=21)
    train_ids, _ = split_subjects(events["subject_id"].unique().to_list(), 0.1, 3)
    source = ModelSource(tiny_model)
    lengths = [len(ids) for _, ids in source.tokenizer.encode(events.filter(pl.col("subject_id").is_in(list(train_ids))))]
    assert source.tokenizer.longest_record == max(lengths)
    assert source.max_record_tokens >= 2 * max(lengths) and source.max_record_tokens >= 8 * source.model.config.block_size


@pytest.fixture(scope="module")
def model_of_partial_labs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model of records that report a blood count's hemoglobin and hematocrit but not the rest of
    the panel, no growth-chart percentile, no reflex test and no drug's end (as Synthea's FHIR
    bundles do)."""
    from trajsim.knowledge.labs import lab_panels, reflexes
    from trajsim.knowledge.physiology import HEMATOCRIT, HEMOGLOBIN, PERCENTILE_OF

    unrecorded = (({*lab_panels()["LOINC/57021-8"]} - {HEMOGLOBIN, HEMATOCRIT})
                  | {*PERCENTILE_OF.values(), *reflexes().values(), MEDICATION_END})
    folder = tmp_path_factory.mktemp("partial-labs-model")
    with one_thread():
        train(reference_events(40, seed=21).filter(~pl.col("code").is_in(sorted(unrecorded))), folder,
              tiny_training(max_steps=40))
    return folder


@pytest.fixture(scope="module")
def partial_labs_events(model_of_partial_labs: Path) -> pl.DataFrame:
    return model_events(model_of_partial_labs, 60, seed=5)


def test_a_trained_models_charts_hold_no_measurement_its_training_records_lack(model_of_partial_labs,
                                                                              partial_labs_events):
    """The laboratory does not complete a trained model's panels and the body adds no percentile or
    reflex test its source never recorded: every lab and vital sign in the output is one of the
    model's vocabulary (Synthea's blood counts, completed, had gained a differential in 93% of
    patients against 0%)."""
    from trajsim.vocab import domain_of

    source = ModelSource(model_of_partial_labs)
    assert not source.whole_panels and ModelSource(DEFAULT_MODEL).whole_panels
    vocabulary = {token.partition("#")[0] for token in source.tokenizer.vocab}
    measured = Counter(code for code in partial_labs_events["code"] if domain_of(code) in ("lab", "vital"))
    assert sum(measured.values()) > 100  # the model does write labs and vitals
    assert set(measured) <= vocabulary, sorted(set(measured) - vocabulary)


def test_a_model_of_records_that_date_no_drug_end_records_no_stop(model_of_partial_labs, partial_labs_events):
    """The engine ends a trained model's courses (Synthea's FHIR orders carry no end, and a model of
    them had stops on 39% of its orders against none) without recording them, but for the stops a
    reader must see: a drug a pregnancy or a lab value rules out, stopped at the visit that finds it;
    the shipped model, fitted on trajsim's charts, keeps its stops."""
    assert not ModelSource(model_of_partial_labs).records_stops and ModelSource(DEFAULT_MODEL).records_stops
    codes = Counter(partial_labs_events["code"])
    orders = sum(n for code, n in codes.items() if code.startswith("RXNORM/"))
    assert orders > 20 and codes[MEDICATION_END] < 0.05 * orders
    stops = partial_labs_events.filter(pl.col("code") == MEDICATION_END)
    assert stops["encounter_id"].is_not_null().all()  # each at the visit that rules the drug out


def test_a_trained_model_keeps_the_indications_its_records_ordered_drugs_for(model_of_partial_labs):
    """`trajsim train` saves each drug's indications as its records named them; the shipped model,
    fitted before, has none and its drugs keep the knowledge's first-line indications."""
    from trajsim.knowledge.therapy import drug_indications
    from trajsim.model.tokenizer import Tokenizer

    learned = Tokenizer.load(model_of_partial_labs / "tokenizer.json").drug_indications
    assert learned and all(codes for codes in learned.values())
    shipped = ModelSource(DEFAULT_MODEL)
    assert shipped.tokenizer.drug_indications == {}
    assert shipped.indications == drug_indications(load_knowledge())
