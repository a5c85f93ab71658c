"""Trial statistics against numbers worked by hand or published."""

from __future__ import annotations

import polars as pl
import pytest

from trajsim.scenario import PowerTarget, Trial
from trajsim.trial.stats import event_rates, kaplan_meier, power_estimate, table_one

TRIAL = Trial.model_validate({
    "index": {"codes": ["LOINC/4548-4"], "window": {"start": "2018-01-01", "end": "2020-01-01"}},
    "baseline": ["ckd"], "code_sets": {"ckd": ["SNOMED/709044004"]},
    "endpoints": [{"name": "death", "codes": ["TRAJSIM/death"]}],
})


def _arm(years: list[float], events: list[bool], ages: list[float] | None = None) -> pl.DataFrame:
    n = len(years)
    return pl.DataFrame({"age_at_index": ages or [60.0] * n, "sex": ["F", "M"] * (n // 2) + ["F"] * (n % 2),
                         "history_ckd": [i % 4 == 0 for i in range(n)], "follow_up_years": years,
                         "death_years": years, "death_event": events})


def test_schoenfeld_needs_631_events_for_hazard_ratio_0_8():
    # 4 (1.96 + 0.8416)^2 / ln(0.8)^2 = 630.5 -> 631 events (two-sided alpha 0.05, power 80%, 1:1).
    arm = _arm([1.0, 2.0, 3.0, 5.0] * 25, [True, False, False, False] * 25)
    estimate = power_estimate(arm, PowerTarget(endpoint="death", hazard_ratio=0.8), follow_up_years=5.0)
    assert estimate.events_needed == 631
    assert estimate.event_probability == pytest.approx(1 - (0.75 + 0.75**0.8) / 2, abs=1e-4)
    assert estimate.patients_needed == pytest.approx(631 / estimate.event_probability, abs=1.5)  # rounded up
    assert 0 < estimate.power_at_twice_arm < 0.8  # 200 patients are far too few


def test_event_rate_is_events_per_100_person_years_with_exact_interval():
    rates = event_rates(_arm([2.0, 3.0, 5.0, 10.0], [True, False, True, False]), TRIAL).row(0, named=True)
    assert (rates["events"], rates["person_years"], rates["rate_per_100py"]) == (2, 20.0, 10.0)
    # Exact Poisson interval for 2 events: 0.242 to 7.225, per 20 person-years.
    assert rates["lower"] == pytest.approx(1.211, abs=1e-3) and rates["upper"] == pytest.approx(36.124, abs=2e-3)


def test_kaplan_meier_steps_down_at_each_event_inside_its_band():
    curve = kaplan_meier(_arm([1.0, 2.0, 3.0, 4.0], [True, True, False, True]), "death", horizon_years=5.0)
    at = dict(zip(curve["years"].round(2), curve["survival"]))
    assert at[0.5] == 1.0 and at[1.5] == pytest.approx(0.75) and at[2.5] == pytest.approx(0.5)
    assert at[4.0] == pytest.approx(0.0) and curve["years"].max() == 4.0  # cut at the longest follow-up
    assert (curve["lower"] <= curve["survival"]).all() and (curve["survival"] <= curve["upper"]).all()


def test_table_one_compares_arms_with_standardised_differences():
    older = _arm([1.0] * 4, [False] * 4, ages=[70.0, 72.0, 74.0, 76.0])
    younger = _arm([1.0] * 4, [False] * 4, ages=[60.0, 62.0, 64.0, 66.0])
    table = table_one({"synthetic": older, "real": younger}, TRIAL).rows_by_key("characteristic", unique=True)
    assert table["Age at index, years, mean (SD)"] == ("73.0 (2.6)", "63.0 (2.6)", pytest.approx(3.873, abs=1e-3))
    assert table["Female, n (%)"][:2] == ("2 (50.0%)", "2 (50.0%)")
    assert table["History of ckd, n (%)"][0] == "1 (25.0%)"
