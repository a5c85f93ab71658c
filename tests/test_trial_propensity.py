"""Propensity-score matching and weighting against arms built with a known confounder: the real arm
is older and has more kidney disease, both raise the hazard, and the arms share one hazard model, so
the true hazard ratio is 1. Adjustment must balance the covariates and move the estimate to it."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from trajsim.scenario import Trial
from trajsim.trial.propensity import CALIPER_SD, adjust
from trajsim.trial.report import render_html, summarise

TRIAL = Trial.model_validate({
    "index": {"codes": ["LOINC/4548-4"], "window": {"start": "2018-01-01", "end": "2020-01-01"}},
    "baseline": ["@ckd"], "endpoints": [{"name": "death", "label": "Death", "codes": ["TRAJSIM/death"]}],
})
HORIZON = 5.0


def _arm(rng: np.random.Generator, n: int, mean_age: float, ckd_share: float, first_id: int) -> pl.DataFrame:
    """Patients whose death hazard depends only on age and CKD (log-HR 0.07 a year and 0.7)."""
    age = rng.normal(mean_age, 7.0, n)
    ckd = rng.random(n) < ckd_share
    hazard = 0.04 * np.exp(0.07 * (age - 60) + 0.7 * ckd)
    death = rng.exponential(1 / hazard)
    years = np.minimum(death, HORIZON)
    return pl.DataFrame({"subject_id": np.arange(first_id, first_id + n, dtype=np.uint64), "age_at_index": age,
                         "sex": np.where(rng.random(n) < 0.5, "F", "M"), "history_ckd": ckd,
                         "follow_up_years": years, "death_years": years, "death_event": death < HORIZON})


@pytest.fixture(scope="module")
def arms() -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(20261203)
    return {"synthetic": _arm(rng, 1500, 60.0, 0.15, 0), "real": _arm(rng, 400, 67.0, 0.35, 10_000)}


def _ratio(adjustment, sample: str) -> tuple[float, float, float]:
    return adjustment.hazard_ratios.filter(pl.col("sample") == sample).select("hazard_ratio", "lower", "upper").row(0)


@pytest.mark.parametrize(("method", "sample"), [("match", "matched"), ("weight", "weighted")])
def test_adjustment_balances_the_confounders_and_moves_the_hazard_ratio_to_the_truth(arms, method, sample):
    adjusted = adjust(arms, TRIAL, method, HORIZON)
    balance = adjusted.balance.rows_by_key("characteristic", unique=True)
    assert balance["Age at index, years, mean (SD)"][0] < -0.8  # synthetic much younger before
    assert all(abs(after) < 0.1 for _, after in balance.values())
    crude, fitted = _ratio(adjusted, "as built"), _ratio(adjusted, sample)
    assert crude[1] > 1.3  # confounded: the whole interval well above the true 1
    assert fitted[1] < 1 < fitted[2]
    assert abs(math.log(fitted[0])) < abs(math.log(crude[0])) / 3


def test_matching_pairs_each_real_patient_with_one_synthetic_within_the_caliper(arms):
    scores = adjust(arms, TRIAL, "match", HORIZON).scores
    caliper = CALIPER_SD * scores["logit"].std()
    pairs = scores.filter(pl.col("pair") >= 0).group_by("pair").agg(
        pl.col("arm").sort(), (pl.col("logit").max() - pl.col("logit").min()).alias("distance"))
    assert pairs.height > 300  # most of the 400 real patients find a partner
    assert pairs["arm"].to_list() == [["real", "synthetic"]] * pairs.height
    assert (pairs["distance"] <= caliper).all()
    assert scores.filter(pl.col("pair") < 0)["weight"].max() == 0


def test_stabilised_weights_keep_each_arm_near_its_size(arms):
    scores = adjust(arms, TRIAL, "weight", HORIZON).scores
    totals = dict(scores.group_by("arm").agg(pl.col("weight").sum()).iter_rows())
    assert totals["real"] == pytest.approx(400, rel=0.15) and totals["synthetic"] == pytest.approx(1500, rel=0.15)


def test_the_report_shows_balance_hazard_ratios_and_adjusted_curves(arms):
    trial = TRIAL.model_copy(update={"adjustment": "match"})
    report = summarise("confounded", trial, arms, ["built in a test"])
    html = render_html(report)
    assert "Propensity-score matching" in html and "SMD after" in html and "hazard ratio (real vs synthetic)" in html
    assert html.count("data:image/png;base64,") == 2  # KM as built and on the matched patients
    assert set(report.adjustment.km["arm"]) == {"real", "synthetic"}


def test_an_arm_too_small_to_model_is_said_not_hidden(arms):
    trial = TRIAL.model_copy(update={"adjustment": "weight"})
    report = summarise("tiny", trial, {"synthetic": arms["synthetic"], "real": arms["real"].head(1)}, [])
    assert report.adjustment is None
    assert any("no propensity-score weighting: the real arm has fewer than 2 patients" in w for w in report.warnings)


def test_an_unknown_adjustment_is_refused_with_the_allowed_values():
    with pytest.raises(ValidationError, match="adjustment\n  Input should be 'none', 'match' or 'weight'"):
        Trial.model_validate({**TRIAL.model_dump(), "adjustment": "mach"})


def test_adjustment_without_a_real_arm_is_said_not_ignored(arms):
    trial = TRIAL.model_copy(update={"adjustment": "match"})
    report = summarise("synthetic only", trial, {"synthetic": arms["synthetic"]}, [])
    assert report.adjustment is None and any("without real records (--real)" in w for w in report.warnings)
