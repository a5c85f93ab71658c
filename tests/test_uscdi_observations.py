"""The USCDI observations an EHR test team loads, each read from the patient's state: pulse oximetry
in acute care and with respiratory conditions (lower with disease), children's growth percentiles on
the CDC 2000 charts, PHQ-2/PHQ-9 scores at depression screenings at the instruments' published
accuracy, and the pregnancy status of women of reproductive age, consistent with the pregnancies
recorded; each exported with its US Core profile and conforming to it."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest

from tests.conftest import small_scenario
from tests.test_profiles import _profile_check
from trajsim.engine.assessments import AssessmentKeeper
from trajsim.engine.body import Body
from trajsim.engine.source import ACTIVE, Fact, PatientState, Visit
from trajsim.events import PREGNANCY_STATUS, VISIT_START_PREFIX
from trajsim.generate import generate
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.growth_charts import BMI_FOR_AGE, HEAD_FOR_AGE, WEIGHT_FOR_LENGTH, growth_chart
from trajsim.knowledge.lifecycles import PREGNANCY
from trajsim.knowledge.physiology import (
    BMI, BMI_PERCENTILE, HEAD_CIRCUMFERENCE, HEAD_PERCENTILE, HEIGHT, SPO2, WEIGHT, WEIGHT_FOR_LENGTH_PERCENTILE,
)
from trajsim.knowledge.questionnaires import questionnaires

DEPRESSION_SCREENING, DEPRESSION = "SNOMED/171207006", "SNOMED/370143000"
PHQ2, PHQ9 = "LOINC/55758-7", "LOINC/44261-6"
PREGNANT, FIRST_PRENATAL_VISIT = "SNOMED/77386006", "SNOMED/424441002"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cohort of all ages (children, women of reproductive age, the old) as events and NDJSON."""
    out = tmp_path_factory.mktemp("uscdi")
    generate(small_scenario(80, seed=19, **{"output.formats": ["events", "ndjson"]}), out)
    return out


@pytest.fixture(scope="module")
def events(cohort: Path) -> pl.DataFrame:
    return pl.read_parquet(cohort / "events" / "*.parquet").sort("subject_id", "time")


def _at_encounters(events: pl.DataFrame, code: str) -> pl.DataFrame:
    return events.filter(pl.col("code") == code).select("encounter_id", pl.col("numeric_value").alias(code))


def _ages(events: pl.DataFrame) -> pl.DataFrame:
    """Each fact with the patient's age in years at it."""
    births = events.filter(pl.col("code") == "TRAJSIM/birth").select("subject_id", pl.col("time").alias("birth"))
    return events.join(births, on="subject_id").with_columns(
        age=(pl.col("time") - pl.col("birth")).dt.total_days() / 365.25)


# --- pulse oximetry ------------------------------------------------------------------------------
def test_every_emergency_visit_and_admission_records_a_pulse_oximetry(events):
    acute = events.filter(pl.col("code").is_in([VISIT_START_PREFIX + "EMER", VISIT_START_PREFIX + "IMP"]))
    measured = set(events.filter(pl.col("code") == SPO2)["encounter_id"])
    assert acute.height > 10
    assert set(acute["encounter_id"]) <= measured


def test_a_visit_for_pneumonia_records_a_pulse_oximetry(events):
    pneumonia = set(events.filter(pl.col("code") == "SNOMED/233604007")["encounter_id"].drop_nulls())
    measured = set(events.filter(pl.col("code") == SPO2)["encounter_id"])
    assert pneumonia and pneumonia <= measured


@pytest.mark.parametrize("condition", ["pneumonia", "copd", "covid19"])
def test_oxygen_saturation_is_lower_with_respiratory_disease(condition):
    knowledge = load_knowledge()
    healthy, sick = [], []
    for i in range(400):
        patient = PatientState(i, "F", 0.0, 50 * 365.25, 80 * 365.25, None, np.random.default_rng(i))
        body = Body(knowledge, patient)
        healthy.append(body.examine(60 * 365.25, set()).fact(SPO2).value)
        sick.append(body.examine(60 * 365.25 + 1, {condition}).fact(SPO2).value)
    assert np.mean(sick) < np.mean(healthy) - 1.5
    assert np.mean(np.array(sick) < 92) > np.mean(np.array(healthy) < 92) + 0.05
    assert max(healthy + sick) <= 100


# --- growth percentiles --------------------------------------------------------------------------
def test_a_childs_bmi_comes_with_its_cdc_percentile_for_age_and_sex(events):
    sexes = dict(events.filter(pl.col("code").str.starts_with("TRAJSIM/sex/"))
                 .select("subject_id", pl.col("code").str.slice(-1)).iter_rows())
    visits = (_ages(events).filter(pl.col("code") == BMI).select("subject_id", "encounter_id", "age",
                                                                  pl.col("numeric_value").alias("bmi"))
              .join(_at_encounters(events, BMI_PERCENTILE), on="encounter_id", how="left"))
    children = visits.filter((pl.col("age") >= 2.05) & (pl.col("age") < 19.95))
    assert children.height > 30
    assert visits.filter(pl.col("age") >= 20.05)[BMI_PERCENTILE].null_count() == visits.filter(pl.col("age") >= 20.05).height
    for subject, _, age, bmi, percentile in children.iter_rows():
        expected = growth_chart(BMI_FOR_AGE, sexes[subject]).percentile(age * 12, bmi)
        assert percentile == pytest.approx(min(max(expected, 0.1), 99.9), abs=0.6)


def test_an_infants_weight_comes_with_its_weight_for_length_percentile(events):
    sexes = dict(events.filter(pl.col("code").str.starts_with("TRAJSIM/sex/"))
                 .select("subject_id", pl.col("code").str.slice(-1)).iter_rows())
    infants = (_ages(events).filter((pl.col("code") == WEIGHT) & (pl.col("age") < 1.95))
               .select("subject_id", "encounter_id", pl.col("numeric_value").alias("weight"))
               .join(_at_encounters(events, HEIGHT), on="encounter_id")
               .join(_at_encounters(events, WEIGHT_FOR_LENGTH_PERCENTILE), on="encounter_id", how="left"))
    assert infants.height > 5
    for subject, _, weight, length, percentile in infants.iter_rows():
        expected = growth_chart(WEIGHT_FOR_LENGTH, sexes[subject]).percentile(length, weight)
        assert percentile == pytest.approx(min(max(expected, 0.1), 99.9), abs=0.6)


def test_a_young_child_keeps_its_head_circumference_centile(events):
    heads = (_ages(events).filter(pl.col("code") == HEAD_CIRCUMFERENCE)
             .select("subject_id", "encounter_id", "age", pl.col("numeric_value").alias("head"))
             .join(_at_encounters(events, HEAD_PERCENTILE), on="encounter_id", how="left"))
    assert heads.height > 10 and heads[HEAD_PERCENTILE].null_count() == 0
    assert heads["age"].max() < 3.05
    for _, child in heads.group_by("subject_id"):
        assert child["head"].is_sorted() or child.height == 1  # a head only grows
        assert child[HEAD_PERCENTILE].max() - child[HEAD_PERCENTILE].min() < 4  # the same centile, up to rounding


def test_the_growth_charts_give_the_cdc_percentiles():
    # CDC 2000 tables: 95th percentile BMI of boys at 24 months 19.34; median head circumference of girls at 36 months 48.63 cm
    assert growth_chart(BMI_FOR_AGE, "M").percentile(24, 19.338) == pytest.approx(95.0, abs=0.05)
    assert growth_chart(HEAD_FOR_AGE, "F").value(36, 0.0) == pytest.approx(48.63, abs=0.01)


# --- screening answers ---------------------------------------------------------------------------
def test_every_depression_screening_carries_a_phq2_and_a_positive_one_a_phq9(events):
    screenings = events.filter(pl.col("code") == DEPRESSION_SCREENING)
    phq2, phq9 = (dict(_at_encounters(events, code).iter_rows()) for code in (PHQ2, PHQ9))
    assert screenings.height > 20
    for encounter in screenings["encounter_id"]:
        assert encounter in phq2
        assert (encounter in phq9) == (phq2[encounter] >= 3)
        if encounter in phq9:
            assert phq2[encounter] <= phq9[encounter] <= 27


def test_a_screening_is_answered_from_the_depression_the_chart_holds():
    keeper, positive = AssessmentKeeper(load_knowledge()), {True: 0, False: 0}
    for i in range(600):
        depressed = i % 2 == 0
        patient = PatientState(i, "M", 0.0, 30 * 365.25, 60 * 365.25, None, np.random.default_rng(i))
        if depressed:
            patient.conditions[DEPRESSION] = ACTIVE
        visit = Visit(40 * 365.25, "AMB", 0.02, [Fact(DEPRESSION_SCREENING)])
        keeper.vet(patient, visit)
        phq2 = next(f.value for f in visit.facts if f.code == PHQ2)
        positive[depressed] += phq2 >= 3
    assert positive[True] / 300 == pytest.approx(0.83, abs=0.06)  # Kroenke 2003: sensitivity 83%
    assert positive[False] / 300 == pytest.approx(0.08, abs=0.04)  # specificity 92%


def test_phq_scores_screen_depression_at_the_published_accuracy():
    phq2, phq9 = questionnaires()
    rng = np.random.default_rng(3)
    for has_depression, positive in ((True, 0.83), (False, 0.08)):
        scores = [phq2.score(rng, has_depression) for _ in range(5000)]
        assert np.mean(np.array(scores) >= 3) == pytest.approx(positive, abs=0.02)
        assert 0 <= min(scores) and max(scores) <= 6
    follow_ups = [phq9.score(rng, True, at_least=5) for _ in range(2000)]
    assert min(follow_ups) >= 5 and np.mean(np.array(follow_ups) >= 10) == pytest.approx(0.88, abs=0.03)


# --- pregnancy status ----------------------------------------------------------------------------
def test_pregnancy_status_is_asked_of_women_15_to_44_and_says_pregnant_exactly_during_a_pregnancy(events):
    statuses = _ages(events).filter(pl.col("code") == PREGNANCY_STATUS)
    assert statuses.filter(pl.col("text") == PREGNANT).height > 5
    assert statuses["age"].min() >= 14.95 and statuses["age"].max() < 45.05
    women = set(events.filter(pl.col("code") == "TRAJSIM/sex/F")["subject_id"])
    assert set(statuses["subject_id"]) <= women
    # subject -> (conception, first prenatal visit, end) of each pregnancy recorded: the chart holds a
    # pregnancy from its first prenatal visit on, dated back to conception
    episodes = defaultdict(list)
    ends = events.filter((pl.col("code") == "TRAJSIM/condition_end") & (pl.col("text") == PREGNANCY))
    first_visits = events.filter(pl.col("code") == FIRST_PRENATAL_VISIT)
    for subject, start in events.filter(pl.col("code") == PREGNANCY).select("subject_id", "time").iter_rows():
        end = ends.filter((pl.col("subject_id") == subject) & (pl.col("time") > start))["time"].min()
        known = first_visits.filter((pl.col("subject_id") == subject) & (pl.col("time") >= start))["time"].min()
        episodes[subject].append((start, known, end))
    for subject, when, answer in statuses.select("subject_id", "time", "text").iter_rows():
        if answer == PREGNANT:
            assert any(start <= when and (end is None or when < end) for start, _, end in episodes[subject])
        else:  # not pregnant, or not yet known to be: before the pregnancy's first prenatal visit
            assert not any(known <= when and (end is None or when < end) for _, known, end in episodes[subject])


# --- export --------------------------------------------------------------------------------------
@pytest.mark.parametrize("release", ["us-core-6.1", "us-core-7.0"])
def test_the_new_observations_claim_and_conform_to_their_us_core_profiles(cohort, release):
    problems, tally = _profile_check(cohort / "fhir" / "ndjson", release)
    assert problems == []
    claimed = {profile for profile, _element in tally.possible}
    assert {"us-core-pulse-oximetry", "pediatric-bmi-for-age", "pediatric-weight-for-height",
            "us-core-head-circumference", "head-occipital-frontal-circumference-percentile",
            "us-core-observation-screening-assessment", "us-core-observation-pregnancystatus"} <= claimed


def test_a_pulse_oximetry_carries_both_loinc_codes_and_a_phq_panel_holds_its_total(cohort):
    observations = [orjson.loads(line) for line in
                    (cohort / "fhir" / "ndjson" / "Observation.ndjson").read_bytes().splitlines()]
    by_id = {o["id"]: o for o in observations}
    pulse = next(o for o in observations if o["code"]["coding"][0]["code"] == "59408-5")
    assert [c["code"] for c in pulse["code"]["coding"]] == ["59408-5", "2708-6"]
    assert pulse["valueQuantity"]["code"] == "%"
    panel = next(o for o in observations if o["code"]["coding"][0]["code"] == "55757-9")
    total = by_id[panel["hasMember"][0]["reference"].removeprefix("Observation/")]
    assert total["code"]["coding"][0]["code"] == "55758-7" and total["category"][0]["coding"][0]["code"] == "survey"
    assert 0 <= total["valueQuantity"]["value"] <= 6


def test_a_source_keeping_its_own_care_is_asked_only_what_it_asked_and_the_engine_answers():
    """A model of Synthea's charts asks the smoking status at its visits and never a pregnancy status
    or a PHQ-2: the engine answers the smoking status from the patient's history, once a visit, and
    adds neither of the others."""
    from trajsim.events import SMOKING_STATUS
    from trajsim.knowledge.smoking import CURRENT

    patient = PatientState(1, "F", 0.0, 30 * 365.25, 60 * 365.25, None, np.random.default_rng(1),
                           smoking_draws=(0.0, 1.0))  # ever smoked, never quit: a current smoker
    visit = Visit(30 * 365.25, "AMB", 0.02, [Fact(SMOKING_STATUS), Fact(DEPRESSION_SCREENING), Fact(SMOKING_STATUS)])
    AssessmentKeeper(load_knowledge(), asks=False).vet(patient, visit)
    assert [(f.code, f.text) for f in visit.facts] == [(SMOKING_STATUS, CURRENT), (DEPRESSION_SCREENING, None)]
    asked = Visit(30 * 365.25, "AMB", 0.02, [Fact(DEPRESSION_SCREENING)])
    AssessmentKeeper(load_knowledge()).vet(patient, asked)  # the engine's own care asks both
    assert {PHQ2, PREGNANCY_STATUS} <= {f.code for f in asked.facts}
