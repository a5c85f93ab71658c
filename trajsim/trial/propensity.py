"""Propensity-score adjustment when a real arm is set beside a synthetic one: the two arms differ in
who they admit (age, sex, history), so a raw comparison of their outcomes mixes that difference with
any difference in outcome. A logistic model of being in the real arm on the Table 1 baseline
covariates gives each patient a propensity score; then either

- `match`: each real patient, in arm order, takes the nearest unmatched synthetic patient on the
  logit of the score, if within a caliper of 0.2 standard deviations of the logit (greedy 1:1
  nearest-neighbour matching without replacement; Austin, Pharm Stat 2011;10:150-61), or
- `weight`: every patient is weighted by the inverse probability of the arm they are in, stabilised
  by the arm's share (Robins, Hernan and Brumback, Epidemiology 2000;11:550-60; Xu et al., Value
  Health 2010;13:273-7).

Balance is read as the standardised mean difference of each covariate before and after; outcomes as
Kaplan-Meier curves and a Cox hazard ratio (real vs synthetic) on the matched or weighted sample,
with robust standard errors (clustered on the pair when matched).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError, ConvergenceWarning, StatisticalWarning
from sklearn.linear_model import LogisticRegression

from trajsim.scenario import Trial
from trajsim.trial.stats import baseline_rows, column_values, kaplan_meier, weighted_smd, with_female

CALIPER_SD = 0.2  # of the logit of the propensity score (Austin 2011)
TREATED, CONTROL = "real", "synthetic"  # the real arm is modelled as the "exposure"
MIN_ARM = 2  # patients each arm needs for a propensity model to be fitted at all
# A lab baseline enters the model only if this share of each arm has it: records that measure it
# less often (real data next to the engine's regular labs) would otherwise separate the arms on
# whether the value exists, not on who the patients are.
MIN_OBSERVED = 0.5


@dataclass
class Adjustment:
    """A propensity-score adjusted comparison of the real and the synthetic arm."""

    method: str  # match | weight
    scores: pl.DataFrame  # arm, subject_id, propensity, logit, weight (0 = unmatched), pair (matching only)
    balance: pl.DataFrame  # characteristic, SMD before, SMD after
    hazard_ratios: pl.DataFrame  # endpoint, sample, hazard_ratio, lower, upper
    km: pl.DataFrame  # arm, endpoint, years, survival, lower, upper on the adjusted sample
    arms: dict[str, pl.DataFrame]  # the adjusted sample of each arm (matched patients, or everyone weighted)
    summary: str  # what was done, in a sentence or two


def covariates(arms: dict[str, pl.DataFrame], trial: Trial) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(labels, X, treated, left out) over the real then the synthetic patients: one column per Table 1
    baseline covariate observed in at least MIN_OBSERVED of each arm (a missing value takes the
    pooled mean), and the labels of those left out."""
    real, synthetic = with_female(arms[TREATED]), with_female(arms[CONTROL])
    labels, columns, left_out = [], [], []
    for label, column, _ in baseline_rows(trial):
        if min(float(np.mean(~np.isnan(column_values(arm, column)))) for arm in (real, synthetic)) < MIN_OBSERVED:
            left_out.append(label)
            continue
        values = np.r_[column_values(real, column), column_values(synthetic, column)]
        labels.append(label)
        columns.append(np.where(np.isnan(values), np.nanmean(values), values))
    treated = np.r_[np.ones(real.height), np.zeros(synthetic.height)]
    return labels, np.column_stack(columns), treated, left_out


def propensity(x: np.ndarray, treated: np.ndarray) -> np.ndarray:
    """P(real arm | covariates) from a logistic regression on standardised covariates (a light ridge,
    C = 1e4, only keeps the fit finite when an arm is separated by a covariate)."""
    spread = x.std(axis=0)
    scaled = (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    model = LogisticRegression(C=1e4, max_iter=1000).fit(scaled, treated)
    return np.clip(model.predict_proba(scaled)[:, 1], 1e-6, 1 - 1e-6)


def match(logit: np.ndarray, treated: np.ndarray) -> np.ndarray:
    """Pair number per patient (-1 unmatched): each treated patient in order takes the nearest
    unmatched control on the logit, within CALIPER_SD standard deviations of it."""
    caliper = CALIPER_SD * float(np.std(logit, ddof=1))
    pairs = np.full(len(logit), -1)
    controls = np.flatnonzero(treated == 0)
    free = np.ones(len(controls), dtype=bool)
    for pair, patient in enumerate(np.flatnonzero(treated == 1)):
        distance = np.where(free, np.abs(logit[controls] - logit[patient]), np.inf)
        nearest = int(np.argmin(distance))  # the first (lowest subject_id) of equally near ones
        if distance[nearest] <= caliper:
            free[nearest] = False
            pairs[[patient, controls[nearest]]] = pair
    return pairs


def _overlap(scores: pl.DataFrame) -> str:
    """How much the arms' scores overlap: the share of each arm inside the other's range."""
    by_arm = {arm: scores.filter(pl.col("arm") == arm)["propensity"] for arm in (TREATED, CONTROL)}
    inside = {arm: float(values.is_between(other.min(), other.max()).mean())
              for (arm, values), other in zip(by_arm.items(), reversed(list(by_arm.values())))}
    text = (f"Common support: {inside[TREATED]:.0%} of real and {inside[CONTROL]:.0%} of synthetic patients "
            "have a score inside the other arm's range.")
    if min(inside.values()) < 0.5:
        text = "Warning: the arms barely overlap, so no adjustment can make them comparable. " + text
    return text


def stabilised_weights(score: np.ndarray, treated: np.ndarray) -> np.ndarray:
    """P(arm) / P(arm | covariates): the inverse-probability weight of each patient's own arm,
    scaled by the arm's share so the weights average about 1."""
    share = treated.mean()
    return np.where(treated == 1, share / score, (1 - share) / (1 - score))


def hazard_ratio(sample: pl.DataFrame, endpoint: str, weighted: bool, clustered: bool
                 ) -> tuple[float, float, float] | None:
    """Cox hazard ratio of the real vs the synthetic arm with its 95% interval, from `sample` (arm,
    weight, pair, <endpoint>_years, <endpoint>_event); None when it has no events to fit."""
    frame = sample.select(pl.col(f"{endpoint}_years").alias("years"), pl.col(f"{endpoint}_event").cast(pl.Int8).alias("event"),
                          (pl.col("arm") == TREATED).cast(pl.Int8).alias("real"), "weight", "pair").to_pandas()
    if frame["event"].sum() == 0 or frame["real"].nunique() < 2:
        return None
    options = {"weights_col": "weight"} if weighted else {}
    if clustered:
        options["cluster_col"] = "pair"
    columns = ["years", "event", "real", *options.values()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (ConvergenceWarning, StatisticalWarning))
            fitter = CoxPHFitter().fit(frame[columns], "years", "event", robust=weighted or clustered, **options)
    except ConvergenceError:
        return None
    row = fitter.summary.loc["real"]
    return (round(float(row["exp(coef)"]), 3), round(float(row["exp(coef) lower 95%"]), 3),
            round(float(row["exp(coef) upper 95%"]), 3))


def adjust(arms: dict[str, pl.DataFrame], trial: Trial, method: str, horizon_years: float) -> Adjustment | str:
    """The adjusted comparison of `arms["real"]` with `arms["synthetic"]`, or a sentence saying why
    there is none."""
    small = [name for name in (TREATED, CONTROL) if arms[name].height < MIN_ARM]
    if small:
        return f"no propensity-score {method}ing: the {small[0]} arm has fewer than {MIN_ARM} patients"
    labels, x, treated, left_out = covariates(arms, trial)
    score = propensity(x, treated)
    logit = np.log(score / (1 - score))
    pairs = match(logit, treated) if method == "match" else np.full(len(score), -1)
    weights = (pairs >= 0).astype(np.float64) if method == "match" else stabilised_weights(score, treated)
    scores = pl.DataFrame({"arm": [TREATED] * arms[TREATED].height + [CONTROL] * arms[CONTROL].height,
                           "subject_id": pl.concat([arms[TREATED]["subject_id"], arms[CONTROL]["subject_id"]]),
                           "propensity": score, "logit": logit, "weight": weights, "pair": pairs})
    real, synthetic = treated == 1, treated == 0
    balance = pl.DataFrame({
        "characteristic": labels,
        "SMD before": [weighted_smd(x[synthetic, i], x[real, i]) for i in range(len(labels))],
        "SMD after": [weighted_smd(x[synthetic, i], x[real, i], weights[synthetic], weights[real])
                      for i in range(len(labels))]},
        schema_overrides={"SMD before": pl.Float64, "SMD after": pl.Float64})
    kept = {name: arm.join(scores.filter(pl.col("arm") == name).drop("arm"), on="subject_id")
            .filter(pl.col("weight") > 0).with_columns(pl.lit(name).alias("arm")) for name, arm in arms.items()}
    endpoints = [e.name for e in trial.endpoints if e.kind == "time_to_event"]
    everyone = pl.concat([arm.with_columns(pl.lit(name).alias("arm"), weight=pl.lit(1.0), pair=pl.lit(-1))
                          for name, arm in arms.items()], how="diagonal_relaxed")
    adjusted = pl.concat(list(kept.values()), how="diagonal_relaxed")
    sample = "matched" if method == "match" else "weighted"
    rows = []
    for endpoint in endpoints:
        for name, frame, weighted, clustered in (("as built", everyone, False, False),
                                                  (sample, adjusted, method == "weight", method == "match")):
            fit = hazard_ratio(frame, endpoint, weighted, clustered)
            rows.append({"endpoint": endpoint, "sample": name, "hazard_ratio": fit and fit[0],
                         "lower": fit and fit[1], "upper": fit and fit[2]})
    km = [kaplan_meier(arm, endpoint, horizon_years, arm["weight"].to_numpy() if method == "weight" else None)
          .with_columns(pl.lit(name).alias("arm")) for name, arm in kept.items() if arm.height for endpoint in endpoints]
    return Adjustment(method, scores, balance,
                      pl.DataFrame(rows, schema={"endpoint": pl.String, "sample": pl.String, "hazard_ratio": pl.Float64,
                                                 "lower": pl.Float64, "upper": pl.Float64}),
                      pl.concat(km).select("arm", pl.exclude("arm")) if km else pl.DataFrame(), kept,
                      _summary(method, scores, labels, left_out))


def _short(labels: list[str]) -> str:
    return ", ".join(label.split(",")[0].lower() for label in labels)


def _summary(method: str, scores: pl.DataFrame, labels: list[str], left_out: list[str]) -> str:
    model = f"Propensity score: logistic regression of being in the real arm on {_short(labels)}."
    if left_out:
        model += f" Left out, recorded in under {MIN_OBSERVED:.0%} of an arm: {_short(left_out)}."
    model += " " + _overlap(scores)
    if method == "match":
        matched = int((scores.filter(pl.col("arm") == TREATED)["weight"] > 0).sum())
        real = int((scores["arm"] == TREATED).sum())
        return (f"{model} 1:1 nearest-neighbour matching on its logit within {CALIPER_SD:g} SD (no replacement): "
                f"{matched:,} of {real:,} real patients matched to as many synthetic ones.")
    sizes = []
    for arm in (TREATED, CONTROL):
        weights = scores.filter(pl.col("arm") == arm)["weight"].to_numpy()
        sizes.append(f"{arm} {weights.sum() ** 2 / (weights ** 2).sum():,.0f} (largest weight {weights.max():.2f})")
    return (f"{model} Inverse-probability-of-arm weights, stabilised; effective sample sizes: "
            f"{'; '.join(sizes)}.")
