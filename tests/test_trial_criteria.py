"""Eligibility, follow-up and endpoints of `trajsim trial`, against hand-written polars queries on the
shared Synthea data and against small hand-made records."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from trajsim.events import BIRTH, DEATH, SEX_FEMALE, Event, events_frame, visit_start_code
from trajsim.ingest import load_events
from trajsim.trial.arm import build_arm
from trajsim.trial.criteria import eligible
from trajsim.scenario import Trial
from trajsim.trial.vocabulary import omop_descendants

HYPERTENSION, STRESS, SYSTOLIC = "SNOMED/59621000", "SNOMED/73595000", "LOINC/8480-6"  # 73595000: Stress (finding)
AMBULATORY = visit_start_code("AMB")


@pytest.fixture(scope="module")
def synthea_events(refdata) -> pl.DataFrame:
    return load_events(refdata / "synthea_csv_dbt27" / "csv", format="synthea-csv")


def hypertension_trial(**changes: object) -> Trial:
    spec = {
        "code_sets": {"hypertension": [HYPERTENSION]},
        "age": {"min": 30, "max": 80},
        "index": {"codes": [AMBULATORY], "window": {"start": "2012-01-01", "end": "2024-01-01"}},
        "require": [{"codes": ["hypertension"]}],
        "exclude": [{"codes": [STRESS], "lookback_days": 1826}],
        "endpoints": [{"name": "death", "codes": [DEATH]}],
    }
    return Trial.model_validate({**spec, **changes})


def window_visits(events: pl.DataFrame) -> pl.DataFrame:
    """Every ambulatory visit of 2012-2023 at age 30-79: subject_id, visit."""
    births = events.filter(pl.col("code") == BIRTH).select("subject_id", pl.col("time").alias("birth"))
    return (events.filter((pl.col("code") == AMBULATORY) & (pl.col("time") >= datetime(2012, 1, 1))
                          & (pl.col("time") < datetime(2024, 1, 1)))
            .select("subject_id", pl.col("time").alias("visit")).unique()
            .join(births, on="subject_id")
            .filter(((pl.col("visit") - pl.col("birth")).dt.total_seconds() / 86400 / 365.25).is_between(30, 80, closed="left"))
            .select("subject_id", "visit"))


def visits_with(visits: pl.DataFrame, facts: pl.DataFrame, lookback_days: int | None) -> pl.DataFrame:
    """The visits with one of `facts` (subject_id, time) on or before them, within the look-back."""
    near = pl.col("time") <= pl.col("visit")
    if lookback_days is not None:
        near &= pl.col("time") >= pl.col("visit") - timedelta(days=lookback_days)
    return visits.join(facts.select("subject_id", "time"), on="subject_id").filter(near).select("subject_id", "visit").unique()


def first_visits(visits: pl.DataFrame) -> pl.DataFrame:
    return visits.group_by("subject_id").agg(pl.col("visit").min().alias("index_time")).sort("subject_id")


def test_criteria_select_the_patients_of_a_hand_written_query(synthea_events):
    arm = eligible(synthea_events, hypertension_trial())
    coded = {code: synthea_events.filter(pl.col("code") == code) for code in (HYPERTENSION, STRESS)}
    diagnosed = visits_with(window_visits(synthea_events), coded[HYPERTENSION], None)
    expected = first_visits(diagnosed.join(visits_with(diagnosed, coded[STRESS], 1826),
                                           on=["subject_id", "visit"], how="anti"))
    without_exclusion = eligible(synthea_events, hypertension_trial(exclude=[]))
    assert 0 < arm.height and not arm.equals(without_exclusion)
    assert arm.select("subject_id", "index_time").equals(expected)


def test_lab_threshold_criterion_matches_a_hand_written_query(synthea_events):
    trial = hypertension_trial(require=[{"codes": [SYSTOLIC], "min_value": 120, "lookback_days": 365}], exclude=[])
    arm = eligible(synthea_events, trial)
    raised = synthea_events.filter((pl.col("code") == SYSTOLIC) & (pl.col("numeric_value") >= 120))
    expected = first_visits(visits_with(window_visits(synthea_events), raised, 365))
    assert arm.height > 0
    assert arm.select("subject_id", "index_time").equals(expected)


def _record(subject_id: int, born: datetime, facts: list[tuple[datetime, str, float | None]]) -> list[Event]:
    events = [Event(subject_id, born, None, BIRTH), Event(subject_id, born, None, SEX_FEMALE)]
    return events + [Event(subject_id, when, None, code, value) for when, code, value in facts]


def _endpoint_trial(**changes: object) -> Trial:
    spec = {"index": {"codes": ["LOINC/4548-4"], "min_value": 7, "max_value": 10,
                      "window": {"start": "2018-01-01", "end": "2020-01-01"}},
            "follow_up_days": 1000, "loss_to_follow_up_days": 400,
            "endpoints": [{"name": "mace", "codes": ["SNOMED/22298006", DEATH]},
                          {"name": "mi", "codes": ["SNOMED/22298006"]},
                          {"name": "hba1c", "kind": "lab_change", "codes": ["LOINC/4548-4"], "at_days": 182}]}
    return Trial.model_validate({**spec, **changes})


def test_follow_up_ends_at_death_loss_or_plan_and_death_counts_only_where_listed():
    born, index = datetime(1960, 1, 1), datetime(2018, 3, 1)
    hba1c = "LOINC/4548-4"
    events = events_frame(
        _record(1, born, [(index, hba1c, 8.0), (index + timedelta(days=180), hba1c, 7.2),
                          (index + timedelta(days=300), DEATH, None)])
        + _record(2, born, [(index - timedelta(days=10), hba1c, 11.0), (index, hba1c, 9.0),
                            (index + timedelta(days=100), "SNOMED/22298006", None),
                            (index + timedelta(days=1100), visit_start_code("AMB"), None)])
        + _record(3, born, [(index, hba1c, 7.5), (index + timedelta(days=50), visit_start_code("AMB"), None)])
        + _record(4, born, [(index, hba1c, 6.5)]))
    arm = build_arm(events, _endpoint_trial(), datetime(2025, 1, 1)).rows_by_key("subject_id", named=True, unique=True)
    assert set(arm) == {1, 2, 3}  # patient 4's HbA1c is below 7%
    assert arm[1]["end_reason"] == "death" and arm[1]["mace_event"] and not arm[1]["mi_event"]
    assert arm[1]["hba1c_change"] == pytest.approx(-0.8)
    assert arm[2]["end_reason"] == "follow_up_complete" and arm[2]["mi_event"]
    assert arm[2]["mi_years"] == pytest.approx(100 / 365.25)
    assert arm[2]["hba1c_baseline"] == 9.0  # the index value, not the earlier 11%
    assert arm[3]["end_reason"] == "lost_to_follow_up"
    assert arm[3]["end_time"] == index + timedelta(days=50) and not arm[3]["mace_event"]


def test_code_set_parent_includes_descendants_from_an_omop_vocabulary(tmp_path):
    (tmp_path / "CONCEPT.csv").write_text(
        "concept_id\tconcept_name\tvocabulary_id\tconcept_code\n"
        "201826\tType 2 diabetes mellitus\tSNOMED\t44054006\n"
        "443732\tDisorder due to type 2 diabetes mellitus\tSNOMED\t237599002\n")
    (tmp_path / "CONCEPT_ANCESTOR.csv").write_text(
        "ancestor_concept_id\tdescendant_concept_id\tmin_levels_of_separation\tmax_levels_of_separation\n"
        "201826\t201826\t0\t0\n201826\t443732\t1\t1\n")
    descendants = omop_descendants(tmp_path)
    assert descendants == {"SNOMED/44054006": frozenset({"SNOMED/237599002"})}
    index = datetime(2019, 1, 1)
    events = events_frame(_record(1, datetime(1960, 1, 1), [(index - timedelta(days=30), "SNOMED/237599002", None),
                                                            (index, "LOINC/4548-4", 8.0)]))
    trial = _endpoint_trial(require=[{"codes": ["SNOMED/44054006"]}])
    assert eligible(events, trial).is_empty()
    assert eligible(events, trial, descendants)["subject_id"].to_list() == [1]
