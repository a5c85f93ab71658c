"""What a planner reads off an arm: baseline characteristics (Table 1), Kaplan-Meier curves, event
rates per 100 person-years and the size of a trial that would detect a hazard ratio.

Power follows Schoenfeld (Biometrika 1981;68:316-9): a 1:1 log-rank test needs
D = (z_{1-alpha/2} + z_{power})^2 / (p (1 - p) ln(HR)^2) events with p = 1/2, and a trial of N
patients observes N times the average probability of an event by the end of follow-up, taken from
this arm's Kaplan-Meier curve (control) and its proportional-hazards image S^HR (treated).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from lifelines import KaplanMeierFitter
from lifelines.exceptions import StatisticalWarning
from scipy.stats import chi2, norm

from trajsim.scenario import PowerTarget, Trial

TIME_GRID_POINTS = 101


def _mean_sd(values: pl.Series) -> str:
    values = values.drop_nulls()
    return "n/a" if values.is_empty() else f"{values.mean():.1f} ({values.std() or 0:.1f})"


def _count_share(flags: pl.Series) -> str:
    return "n/a" if flags.is_empty() else f"{int(flags.sum())} ({100 * flags.mean():.1f}%)"


def weighted_smd(a: np.ndarray, b: np.ndarray, weights_a: np.ndarray | None = None,
                 weights_b: np.ndarray | None = None) -> float | None:
    """Standardised mean difference (a minus b over the pooled SD), with each group's mean and
    variance weighted when weights are given (Austin and Stuart, Stat Med 2015;34:3661-79); |SMD| < 0.1
    is the usual mark of balance (Austin, Stat Med 2009;28:3083-107). NaN values are left out."""
    moments = []
    for values, weights in ((a, weights_a), (b, weights_b)):
        values = np.asarray(values, dtype=np.float64)
        weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
        kept = ~np.isnan(values) & (weights > 0)
        values, weights = values[kept], weights[kept]
        total, squares = weights.sum(), (weights**2).sum()
        if len(values) < 2 or total**2 <= squares:
            return None
        mean = float(np.average(values, weights=weights))
        # Unbiased for frequency-like weights: the sample variance when every weight is 1.
        moments.append((mean, total / (total**2 - squares) * float((weights * (values - mean) ** 2).sum())))
    (mean_a, var_a), (mean_b, var_b) = moments
    pooled = math.sqrt((var_a + var_b) / 2)
    return None if pooled == 0 else round((mean_a - mean_b) / pooled, 3)


def column_values(arm: pl.DataFrame, column: str) -> np.ndarray:
    """A Table 1 column as floats, NaN where missing."""
    return arm[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()


def with_female(arm: pl.DataFrame) -> pl.DataFrame:
    """`arm` with the boolean `female` column Table 1 counts."""
    return arm.with_columns((pl.col("sex") == "F").fill_null(False).alias("female"))


def baseline_rows(trial: Trial) -> list[tuple[str, str, str]]:
    """(label, column, kind) of each Table 1 line known at the index date; kind is `mean` or `share`."""
    rows = [("Age at index, years, mean (SD)", "age_at_index", "mean"), ("Female, n (%)", "female", "share")]
    rows += [(f"History of {trial.baseline_label(name)}, n (%)", trial.baseline_column(name), "share")
             for name in trial.baseline]
    rows += [(f"{e.title} at baseline, mean (SD)", f"{e.name}_baseline", "mean")
             for e in trial.endpoints if e.kind == "lab_change"]
    return rows


def table_one(arms: dict[str, pl.DataFrame], trial: Trial) -> pl.DataFrame:
    """One row per characteristic, one column per arm (plus `SMD` when exactly two arms are given)."""
    arms = {name: with_female(arm) for name, arm in arms.items()}
    columns: dict[str, list] = {"characteristic": ["Patients, n"]}
    for name, arm in arms.items():
        columns[name] = [str(arm.height)]
    pair = list(arms.values()) if len(arms) == 2 else None
    if pair:
        columns["SMD"] = [None]
    for label, column, kind in [*baseline_rows(trial), ("Follow-up, years, mean (SD)", "follow_up_years", "mean")]:
        columns["characteristic"].append(label)
        for name, arm in arms.items():
            columns[name].append(_mean_sd(arm[column]) if kind == "mean" else _count_share(arm[column]))
        if pair:
            columns["SMD"].append(weighted_smd(column_values(pair[0], column), column_values(pair[1], column)))
    return pl.DataFrame(columns)


def kaplan_meier(arm: pl.DataFrame, endpoint: str, horizon_years: float, weights: np.ndarray | None = None
                 ) -> pl.DataFrame:
    """Survival free of `endpoint` with its 95% confidence band (lifelines' exponential Greenwood),
    on an even grid of `TIME_GRID_POINTS` times from 0 to `horizon_years`, cut at the longest
    follow-up (the curve says nothing beyond it). With `weights` (one per patient) the curve is the
    weighted one; its band then treats the weights as counts, so it is only approximate."""
    durations = arm[f"{endpoint}_years"].to_numpy()
    grid = np.linspace(0.0, horizon_years, TIME_GRID_POINTS)
    grid = grid[grid <= durations.max(initial=0.0) + 1e-9]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticalWarning)  # non-integer weights: see the docstring
        fitter = KaplanMeierFitter(alpha=0.05).fit(durations, arm[f"{endpoint}_event"].to_numpy(), weights=weights)
    survival = fitter.survival_function_at_times(grid).to_numpy()
    band = fitter.confidence_interval_survival_function_
    # The band is a step function like the curve: carry the value of the last step at or before t.
    steps = np.searchsorted(band.index.to_numpy(), grid, side="right") - 1
    lower, upper = (band.iloc[:, i].to_numpy()[np.clip(steps, 0, None)] for i in (0, 1))
    return pl.DataFrame({"endpoint": endpoint, "years": grid, "survival": survival, "lower": lower, "upper": upper})


def event_rates(arm: pl.DataFrame, trial: Trial) -> pl.DataFrame:
    """Per time-to-event endpoint: events, person-years, rate per 100 person-years with an exact
    (chi-square) Poisson 95% interval."""
    rows = []
    for endpoint in (e for e in trial.endpoints if e.kind == "time_to_event"):
        events = int(arm[f"{endpoint.name}_event"].sum())
        years = float(arm[f"{endpoint.name}_years"].sum())
        low = chi2.ppf(0.025, 2 * events) / 2 if events else 0.0
        high = chi2.ppf(0.975, 2 * events + 2) / 2
        per = 100 / years if years > 0 else math.nan
        rows.append({"endpoint": endpoint.name, "events": events, "person_years": round(years, 2),
                     "rate_per_100py": round(events * per, 3), "lower": round(low * per, 3), "upper": round(high * per, 3)})
    return pl.DataFrame(rows, schema={"endpoint": pl.String, "events": pl.Int64, "person_years": pl.Float64,
                                      "rate_per_100py": pl.Float64, "lower": pl.Float64, "upper": pl.Float64})


@dataclass(frozen=True)
class PowerEstimate:
    """Schoenfeld's numbers for detecting `hazard_ratio` against an arm like this one."""

    endpoint: str
    hazard_ratio: float
    alpha: float
    power: float
    follow_up_years: float
    event_probability: float  # average over both arms by the end of follow-up
    events_needed: int
    patients_needed: int | None  # in total, 1:1; None when no events are expected
    power_at_twice_arm: float | None  # power of a trial of this arm plus an equal treated arm

    def as_dict(self) -> dict:
        return asdict(self)


def power_estimate(arm: pl.DataFrame, target: PowerTarget, follow_up_years: float) -> PowerEstimate:
    """Events and patients a 1:1 trial needs to detect `target.hazard_ratio`, and the power of a trial
    twice this arm's size."""
    log_hr = abs(math.log(target.hazard_ratio))
    z = norm.ppf(1 - target.alpha / 2)
    events_needed = math.ceil((z + norm.ppf(target.power)) ** 2 / (0.25 * log_hr**2))
    survival = float(kaplan_meier(arm, target.endpoint, follow_up_years)["survival"][-1])
    probability = 1 - (survival + survival**target.hazard_ratio) / 2
    patients = math.ceil(events_needed / probability) if probability > 0 else None
    expected_events = 2 * arm.height * probability
    reached = float(norm.cdf(math.sqrt(0.25 * expected_events) * log_hr - z)) if probability > 0 else None
    return PowerEstimate(target.endpoint, target.hazard_ratio, target.alpha, target.power, round(follow_up_years, 3),
                         round(probability, 4), events_needed, patients, None if reached is None else round(reached, 4))
