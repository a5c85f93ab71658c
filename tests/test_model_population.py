"""A trained model remembers the shape of its training population as aggregates only, and
`generate --model DIR` draws patients like them: ages, calendar years and record spans of the source."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from tests.conftest import small_scenario
from trajsim.cli import app
from trajsim.clock import calendar_date, to_datetime
from trajsim.engine.population import draw_patient
from trajsim.knowledge import load_knowledge
from trajsim.engine import ReferenceSource, simulate
from trajsim.events import BIRTH, VISIT_START_PREFIX, events_frame
from trajsim.model.source import ModelSource
from trajsim.model.gpt import GPTConfig
from trajsim.model.population import MIN_CELL, read_summary, summarize
from trajsim.model.sample import one_thread
from trajsim.model.train import TrainConfig, train
from trajsim.scenario import AgeGroup, ScenarioError, with_overrides


@pytest.fixture(scope="module")
def elderly_events() -> pl.DataFrame:
    """Records of people aged 70-90 followed 2000-2010: nothing like the default census cohort."""
    scenario = small_scenario(60, seed=11, **{"population.age_mix": [AgeGroup(min=70, max=90, weight=1.0).model_dump()],
                                              "period.start": date(2000, 1, 1), "period.end": date(2010, 1, 1)})
    return events_frame(e for r in simulate(scenario, ReferenceSource()) for e in r.events)


@pytest.fixture(scope="module")
def elderly_model(elderly_events: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("elderly-model")
    with one_thread():
        train(elderly_events, folder, TrainConfig(seed=1, batch_size=4, max_steps=6, eval_every=3, warmup_steps=1,
                                                  model=GPTConfig(block_size=128, n_layer=1, n_head=2, n_embd=16)))
    return folder


def test_every_cell_holds_at_least_five_patients(elderly_events: pl.DataFrame) -> None:
    summary = summarize(elderly_events)
    kept = min(cell.weight for cell in summary.cells) * summary.patients
    assert summary.patients == 60
    assert kept >= MIN_CELL * 0.8  # a share of the kept patients, who are at least 80% of all
    assert abs(sum(cell.weight for cell in summary.cells) - 1) < 1e-3


def test_too_few_patients_are_not_summarised(elderly_events: pl.DataFrame) -> None:
    few = elderly_events.filter(pl.col("subject_id").is_in(elderly_events["subject_id"].unique().sort()[:4].implode()))
    with pytest.raises(ValueError, match="at least 5"):
        summarize(few)


def test_generate_with_a_trained_model_looks_like_its_training_population(elderly_model: Path, tmp_path: Path) -> None:
    assert read_summary(elderly_model) is not None
    result = CliRunner().invoke(app, ["generate", "--model", str(elderly_model), "-n", "40", "-f", "events",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code in (0, 1), result.output  # 1: rule violations of an undertrained model
    events = pl.read_parquet(tmp_path / "out" / "events" / "*.parquet")
    births = events.filter(pl.col("code") == BIRTH)["time"].dt.year()
    assert births.len() == 40
    assert births.is_between(1915, 1945).mean() > 0.9  # born 70-90 years before 2000-2010; census: 1925-2025


def test_a_summary_this_version_cannot_read_is_an_error_naming_the_file(elderly_model: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(elderly_model, folder)
    summary = folder / "population.json"
    summary.write_bytes(summary.read_bytes().replace(b'"patients"', b'"deaths": 3, "patients"', 1))
    result = CliRunner().invoke(app, ["generate", "--model", str(folder), "-n", "3", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "population.json" in result.output and "deaths" in result.output, result.output


def test_patients_drawn_from_a_model_start_and_end_their_records_like_the_source(elderly_model: Path) -> None:
    scenario = with_overrides(small_scenario(200), "test", **{"model": str(elderly_model), "population.drawn_from": "model"})
    patients = [draw_patient(scenario, i, load_knowledge()) for i in range(200)]
    entry_years = np.array([calendar_date(p.entry_day).year for p in patients])
    ages = np.array([p.age_at(p.entry_day) for p in patients])
    spans = np.array([(p.end_day - p.entry_day) / 365.25 for p in patients])
    assert (entry_years >= 1995).mean() > 0.95 and (entry_years <= 2010).all()
    assert np.median(ages) > 65
    assert np.median(spans) > 5  # ten-year records, less those cut short by death in the source


def test_population_from_a_model_without_a_summary_is_refused() -> None:
    with pytest.raises(ScenarioError, match="population.json"):
        with_overrides(small_scenario(), "test", **{"model": "reference", "population.drawn_from": "model"})


def test_records_drawn_from_a_summary_end_when_the_source_records_end(elderly_events: pl.DataFrame) -> None:
    summary = summarize(elderly_events)  # every record is cut at 2010-01-01, or earlier by death
    rng = np.random.default_rng(0)
    ends = np.array([calendar_date(summary.draw(rng)[3] - 1).year for _ in range(300)])
    assert (ends <= 2010).all() and (ends >= 2008).mean() > 0.6  # not run on past the source's last year


def test_records_drawn_from_coarse_cells_keep_the_source_records_length() -> None:
    """A dozen stays of one to three years, shifted anywhere into 2110-2200 as MIMIC shifts its
    dates: too few for fine cells, so starts and ends are each known only within decades. Drawn
    records still last as long as the source's did, not the decades between any start and end."""
    from datetime import datetime

    from trajsim.events import SEX_FEMALE, Event, visit_start_code

    rows = []
    for subject in range(12):
        start = datetime(2110 + 7 * subject, 3, 1)
        end = start.replace(year=start.year + 1 + subject % 3)
        rows += [Event(subject, datetime(start.year - 60, 1, 1), None, BIRTH),
                 Event(subject, datetime(start.year - 60, 1, 1), None, SEX_FEMALE),
                 Event(subject, start, subject, visit_start_code("IMP")), Event(subject, end, None, "LOINC/2160-0", 1.0)]
    summary = summarize(events_frame(rows))
    assert summary.end_width >= 50  # the cells cannot hold start and end together
    rng = np.random.default_rng(0)
    spans = np.array([(end - start) / 365.25 for _, _, start, end in (summary.draw(rng) for _ in range(300))])
    assert np.median(spans) < 5 and (spans < 10).mean() > 0.9


def test_records_of_a_source_that_ends_together_end_in_its_last_years_whatever_their_lengths() -> None:
    """Synthea-like: fifteen records of any length from one to sixty years, all ending at one export
    date: the cells are coarse, yet the ends stay at the export date."""
    from datetime import datetime

    from trajsim.events import SEX_MALE, Event, visit_start_code

    rows = []
    for subject in range(15):
        start, end = datetime(1960 + 4 * subject, 5, 1), datetime(2021, 4, 1)
        birth = datetime(1900 + 7 * subject, 1, 1)
        rows += [Event(subject, birth, None, BIRTH), Event(subject, birth, None, SEX_MALE),
                 Event(subject, start, subject, visit_start_code("AMB")), Event(subject, end, None, "LOINC/2160-0", 1.0)]
    summary = summarize(events_frame(rows))
    assert summary.end_width >= 20
    rng = np.random.default_rng(1)
    ends = np.array([calendar_date(summary.draw(rng)[3] - 1).year for _ in range(300)])
    assert (ends == 2021).mean() > 0.9


def test_a_record_drawn_from_a_model_starts_with_its_first_visit(elderly_model: Path) -> None:
    """The summary's record starts with its first visit; the model dates it from the first of the
    start year, so a first visit it writes before the drawn entry day starts the record there (the
    entry moves back to it), not lost to history, and no later visit moves."""
    scenario = with_overrides(small_scenario(60, seed=5), "test", **{"model": str(elderly_model),
                                                                     "population.drawn_from": "model"})
    knowledge = load_knowledge()
    with one_thread():
        records = list(simulate(scenario, ModelSource(elderly_model)))
    earlier, seen = 0, 0
    for index, record in enumerate(records):
        drawn = to_datetime(draw_patient(scenario, index, knowledge).entry_day)
        visits = [e.time for e in record.events if e.code.startswith(VISIT_START_PREFIX)]
        if visits:  # an undertrained model writes some records without one
            seen += 1
            assert min(visits).date() >= to_datetime(record.patient.entry_day).date()
            assert record.patient.entry_day <= draw_patient(scenario, index, knowledge).entry_day
            if min(visits) < drawn:  # written before the drawn entry: the record starts there
                earlier += 1
                # on that day, or the clinic's next slot when the model wrote it for a weekend
                assert (min(visits).date() - to_datetime(record.patient.entry_day).date()).days <= 3
    assert seen > len(records) / 2 and earlier > seen / 4, (earlier, seen)
