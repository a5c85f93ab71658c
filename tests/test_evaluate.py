"""Specifications of the evaluation metrics: each must reward a faithful table and punish a broken one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.conftest import small_scenario
from trajsim.evaluate import evaluate
from trajsim.evaluate.fidelity import fidelity
from trajsim.evaluate.privacy import privacy
from trajsim.evaluate.trajectories import Views
from trajsim.evaluate.utility import TASKS, utility
from trajsim.engine import ReferenceSource, simulate
from trajsim.events import DEATH, events_frame
from trajsim.ingest import load_events


def simulated_events(size: int, seed: int) -> pl.DataFrame:
    """A cohort straight from the engine (the event table `trajsim generate` writes, without FHIR)."""
    records = simulate(small_scenario(size, seed), ReferenceSource())
    return events_frame(event for record in records for event in record.events)


@pytest.fixture(scope="module")
def real() -> pl.DataFrame:
    return simulated_events(600, seed=7)


@pytest.fixture(scope="module")
def other() -> pl.DataFrame:
    """A second sample of the same population (another seed): what a faithful generator produces."""
    return simulated_events(600, seed=8)


def shuffled_codes(events: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """The corruption: clinical codes permuted across all rows, leaving the record's shape intact."""
    codes = events["code"].to_numpy().copy()
    clinical = np.flatnonzero(~events["code"].str.starts_with("TRAJSIM/").to_numpy())
    codes[clinical] = codes[np.random.default_rng(seed).permutation(clinical)]
    return events.with_columns(code=pl.Series(codes))


def test_real_against_itself_scores_perfect_fidelity(real: pl.DataFrame) -> None:
    metrics = fidelity(Views.of(real), Views.of(real)).metrics
    assert metrics["code_prevalence_r2"] == 1.0
    assert metrics["cooccurrence_r2"] == 1.0
    assert metrics["sequential_bigram_r2"] == 1.0
    for shape in ("visits_per_patient", "codes_per_visit", "inter_visit_gap_days"):
        assert metrics[shape]["ks"] == 0.0 and metrics[shape]["wasserstein"] == 0.0
    assert metrics["labs"] and all(lab["ks"] == 0.0 for lab in metrics["labs"].values())
    assert metrics["age_sex_pyramid_tvd"] == 0.0
    assert metrics["mortality"]["real"] == metrics["mortality"]["synthetic"] > 0
    assert all(row["prevalence_r2"] == 1.0 and row["mortality"] == row["mortality_synthetic"]
               for row in metrics["subgroups"])


def test_shuffled_codes_score_clearly_worse_than_a_fresh_sample(real: pl.DataFrame, other: pl.DataFrame) -> None:
    faithful = fidelity(Views.of(real), Views.of(other)).metrics
    corrupted = fidelity(Views.of(real), Views.of(shuffled_codes(real))).metrics
    for rate in ("code_prevalence_r2", "cooccurrence_r2", "sequential_bigram_r2"):
        assert faithful[rate] > 0.95
        assert corrupted[rate] < faithful[rate] - 0.2
    assert faithful["mean_lab_ks"] < 0.1 < 0.3 < corrupted["mean_lab_ks"]


def test_fresh_sample_differs_from_real_but_mildly(real: pl.DataFrame, other: pl.DataFrame) -> None:
    metrics = fidelity(Views.of(real), Views.of(other)).metrics
    assert 0 < metrics["visits_per_patient"]["ks"] < 0.15
    assert 0 < metrics["age_sex_pyramid_tvd"] < 0.2
    assert {row["subgroup"] for row in metrics["subgroups"]} == {"F", "M", "0-17", "18-44", "45-64", "65+"}


def test_copied_training_records_are_caught_by_every_privacy_metric(real: pl.DataFrame, other: pl.DataFrame) -> None:
    copied = privacy(Views.of(other), Views.of(real), train=Views.of(real)).metrics
    assert copied["exact_copy_rate"] == 1.0 > copied["exact_copy_rate_holdout_baseline"]
    assert copied["dcr_median_synthetic"] == 0.0 < copied["dcr_median_holdout"]
    assert copied["membership_inference_auc"] > 0.9


def test_independent_sample_leaks_nothing(real: pl.DataFrame, other: pl.DataFrame) -> None:
    fresh = simulated_events(600, seed=9)
    metrics = privacy(Views.of(other), Views.of(fresh), train=Views.of(real)).metrics
    assert metrics["exact_copy_rate"] <= metrics["exact_copy_rate_holdout_baseline"] + 0.02
    assert metrics["dcr_median_synthetic"] > 0
    assert 0.4 < metrics["membership_inference_auc"] < 0.6


def test_privacy_without_training_records_says_how_to_enable_it(real: pl.DataFrame) -> None:
    section = privacy(Views.of(real), Views.of(real), train=None)
    assert "--train" in section.metrics["skipped"] and section.notes and not section.plots


def test_perfect_copy_of_training_records_is_as_useful_as_them(real: pl.DataFrame, other: pl.DataFrame) -> None:
    tasks = utility(Views.of(other), Views.of(real), train=Views.of(real)).metrics["tasks"]
    assert len(tasks) == len(TASKS) >= 2
    death = tasks["death_next_year"]
    assert death["tstr"]["auroc"] == death["trtr"]["auroc"] > 0.6


def test_synthetic_deaths_of_the_wrong_patients_are_useless(real: pl.DataFrame, other: pl.DataFrame) -> None:
    """Move every death (and nothing else) to random other patients: the model learns nothing real."""
    deaths = real.filter(pl.col("code") == DEATH)
    subjects = real["subject_id"].unique().sort().to_numpy()
    moved = deaths.with_columns(subject_id=pl.Series(np.random.default_rng(1).choice(subjects, deaths.height),
                                                     dtype=pl.UInt64))
    scrambled = pl.concat([real.filter(pl.col("code") != DEATH), moved])
    tasks = utility(Views.of(other), Views.of(scrambled), train=Views.of(real)).metrics["tasks"]
    death = tasks["death_next_year"]
    assert death["tstr"]["auroc"] < death["trtr"]["auroc"] - 0.15


def test_runs_on_shared_synthea_records(refdata: Path, tmp_path: Path, cohort_dir: Path) -> None:
    """Real Synthea FHIR bundles (two disjoint small subsets) against a generated cohort."""
    bundles = sorted((refdata / "synthea_fhir_r4_smart615" / "bundles").glob("[A-Z]*.json.gz"))
    subsets = []
    for name, files in (("real", bundles[:40]), ("train", bundles[40:80])):
        (tmp_path / name).mkdir()
        for file in files:
            (tmp_path / name / file.name).symlink_to(file)
        subsets.append(load_events(tmp_path / name))
    synthea, train = subsets
    result = evaluate(synthea, load_events(cohort_dir / "events"), train=train).metrics()
    assert result["inputs"]["real"]["patients"] == 40
    assert -1 < result["fidelity"]["code_prevalence_r2"] < 0.99
    assert 0 <= result["privacy"]["membership_inference_auc"] <= 1
    assert set(result["validity"]["total"]) == {"real", "synthetic"}
    against_itself = fidelity(Views.of(synthea), Views.of(synthea)).metrics
    assert against_itself["code_prevalence_r2"] == against_itself["cooccurrence_r2"] == 1.0


def test_comparable_samples_raise_no_warning(real: pl.DataFrame, other: pl.DataFrame) -> None:
    from trajsim.evaluate.comparability import comparability

    section = comparability(Views.of(real), Views.of(other))
    assert section.notes == []
    assert section.headlines[0].value > 0.9


def test_tables_that_share_few_codes_or_years_are_flagged_first(real: pl.DataFrame) -> None:
    from trajsim.evaluate.comparability import comparability

    clinical = ~pl.col("code").str.starts_with("TRAJSIM/")
    renamed = real.with_columns(code=pl.when(clinical).then(pl.lit("LOCAL/") + pl.col("code")).otherwise("code"),
                                time=pl.col("time").dt.offset_by("-40y"))
    notes = comparability(Views.of(real), Views.of(renamed)).notes
    assert any("share only 0 codes" in note for note in notes)
    assert any("cover different years" in note for note in notes)


def test_fidelity_lists_the_codes_whose_rates_differ_most_by_name(real: pl.DataFrame) -> None:
    without_hypertension = real.filter(pl.col("code") != "SNOMED/59621000")
    metrics = fidelity(Views.of(real), Views.of(without_hypertension)).metrics
    top = metrics["most_divergent_codes"][0]
    assert top["code"] == "SNOMED/59621000" and top["display"] == "Essential hypertension"
    assert top["real"] > 0 and top["synthetic"] == 0


def test_divergent_codes_are_named_as_their_source_names_them(real: pl.DataFrame, tmp_path: Path) -> None:
    """A code only the source knows (here a local lab) is listed with the description from the codes
    table `trajsim ingest` writes beside its events."""
    from trajsim.ingest import load_records
    from trajsim.vocab.local import CODES_SCHEMA, codes_path

    local = "LOCAL/hospital-lab/4711"
    first_visits = real.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).group_by("subject_id").agg(pl.all().first())
    with_local = pl.concat([real, first_visits.with_columns(code=pl.lit(local)).select(real.columns)])
    (tmp_path / "real").mkdir()
    with_local.write_parquet(tmp_path / "real" / "events.parquet")
    pl.DataFrame({"code": [local], "description": ["Serum widget level"], "domain": ["lab"], "system_uri": [None],
                  "source_codes": [["4711"]], "events": [first_visits.height]}, schema=CODES_SCHEMA
                 ).write_parquet(codes_path(tmp_path / "real" / "events.parquet"))
    events, codes = load_records(tmp_path / "real")  # the codes table is not read as events
    assert events.height == with_local.height
    names = dict(codes.select("code", "description").iter_rows())
    listed = {row["code"]: row["display"] for row in
              evaluate(events, real, names=names).metrics()["fidelity"]["most_divergent_codes"]}
    assert listed[local] == "Serum widget level"
