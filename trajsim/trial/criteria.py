"""Eligibility over the canonical event table: who enters the arm and on which index date.

A patient's candidate index events are those with an index code (value in range, for a lab) inside
the index window; each criterion then keeps a candidate only if the patient has (require) or has not
(exclude) a matching event on or before it within the look-back. Whether one exists is answered by
an as-of join to the latest matching event at or before the candidate, so the work stays linear in
the number of events. Age and sex are checked at each candidate's date; the index date is the
first candidate that survives everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time

import polars as pl

from trajsim.clock import DAYS_PER_YEAR
from trajsim.events import BIRTH, SEX_FEMALE, SEX_MALE
from trajsim.scenario import CodeList, Criterion, Trial

Descendants = dict[str, frozenset[str]] | None


def demographics(events: pl.LazyFrame) -> pl.LazyFrame:
    """One row per patient with a recorded birth: subject_id, birth, sex (F, M or null)."""
    births = events.filter(pl.col("code") == BIRTH).group_by("subject_id").agg(pl.col("time").min().alias("birth"))
    sexes = (events.filter(pl.col("code").is_in([SEX_FEMALE, SEX_MALE]))
             .group_by("subject_id").agg(pl.col("code").first().str.split("/").list.last().alias("sex")))
    return births.join(sexes, on="subject_id", how="left")


def matching(events: pl.LazyFrame, codes: list[str], min_value: float | None = None,
             max_value: float | None = None) -> pl.LazyFrame:
    """subject_id and time of the events with one of `codes` whose value (if bounds are given) is in
    [min_value, max_value]."""
    keep = pl.col("code").is_in(codes)
    if min_value is not None:
        keep &= pl.col("numeric_value") >= min_value
    if max_value is not None:
        keep &= pl.col("numeric_value") <= max_value
    return events.filter(keep).select("subject_id", "time")


def years_between(start: str, end: str) -> pl.Expr:
    return (pl.col(end) - pl.col(start)).dt.total_seconds() / (86400 * DAYS_PER_YEAR)


def has_prior(candidates: pl.LazyFrame, events: pl.LazyFrame, criterion: Criterion, codes: list[str]) -> pl.LazyFrame:
    """`candidates` (subject_id, index_time, ...) with a boolean `hit`: a matching event at or before
    the index time and within the criterion's look-back."""
    prior = (matching(events, codes, criterion.min_value, criterion.max_value)
             .rename({"time": "prior_time"}).sort("prior_time"))
    joined = candidates.sort("index_time").join_asof(prior, left_on="index_time", right_on="prior_time",
                                                      by="subject_id", strategy="backward",
                                                      check_sortedness=False)  # sorted by time overall
    hit = pl.col("prior_time").is_not_null()
    if criterion.lookback_days is not None:
        hit &= pl.col("prior_time") >= pl.col("index_time") - pl.duration(days=criterion.lookback_days)
    return joined.with_columns(hit.alias("hit")).drop("prior_time")


def stages(events: pl.DataFrame | pl.LazyFrame, trial: Trial, descendants: Descendants = None
           ) -> Iterator[tuple[str, pl.LazyFrame]]:
    """Each step of eligibility in turn, as (what it asks, the candidate index events that pass it
    and every step before): the index event in its window, age and sex, then each criterion."""
    events = events.lazy()

    def codes(entries: CodeList) -> list[str]:
        return trial.resolve(entries, descendants)

    index = trial.index
    window_start, window_end = (datetime.combine(d, time()) for d in (index.window.start, index.window.end))
    candidates = (matching(events, codes(index.codes), index.min_value, index.max_value)
                  .filter((pl.col("time") >= window_start) & (pl.col("time") < window_end))
                  .rename({"time": "index_time"}).unique()
                  .join(demographics(events), on="subject_id", how="inner")
                  .with_columns(years_between("birth", "index_time").alias("age_at_index"))
                  .select("subject_id", "index_time", "age_at_index", "sex"))
    yield f"index event ({_codes_label(index.codes)}) from {index.window.start} to {index.window.end}", candidates
    keep = (pl.col("age_at_index") >= trial.age.min) & (pl.col("age_at_index") < trial.age.max)
    if trial.sex != "any":
        keep &= pl.col("sex") == trial.sex
    sex = {"any": "", "F": ", female", "M": ", male"}[trial.sex]
    candidates = candidates.filter(keep)
    yield f"aged {trial.age.min:g} to under {trial.age.max:g} at index{sex}", candidates
    for criterion in trial.require:
        candidates = has_prior(candidates, events, criterion, codes(criterion.codes)).filter("hit").drop("hit")
        yield f"with {_criterion_label(criterion)}", candidates
    for criterion in trial.exclude:
        candidates = has_prior(candidates, events, criterion, codes(criterion.codes)).filter(~pl.col("hit")).drop("hit")
        yield f"without {_criterion_label(criterion)}", candidates


def _codes_label(entries: CodeList) -> str:
    shown = ", ".join(entries[:3])
    return shown + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")


def _criterion_label(criterion: Criterion) -> str:
    value = ""
    if criterion.min_value is not None or criterion.max_value is not None:
        value = f" valued {criterion.min_value if criterion.min_value is not None else ''}" \
                f"-{criterion.max_value if criterion.max_value is not None else ''}"
    when = f" in the {criterion.lookback_days} days before" if criterion.lookback_days is not None else " before"
    return f"{_codes_label(criterion.codes)}{value}{when} index"


def eligible(events: pl.DataFrame | pl.LazyFrame, trial: Trial, descendants: Descendants = None) -> pl.DataFrame:
    """The arm's patients: subject_id, index_time, age_at_index, sex, sorted by subject_id."""
    *_, (_, candidates) = stages(events, trial, descendants)
    return (candidates.sort("subject_id", "index_time").group_by("subject_id", maintain_order=True).first()
            .collect())


def attrition(events: pl.DataFrame | pl.LazyFrame, trial: Trial, descendants: Descendants = None) -> dict[str, int]:
    """Patients left after each step of eligibility (a CONSORT flow), from all patients with a record."""
    events = events.lazy()
    flow = {"patients with a record": events.select(pl.col("subject_id").n_unique()).collect().item()}
    for label, candidates in stages(events, trial, descendants):
        flow[label] = candidates.select(pl.col("subject_id").n_unique()).collect().item()
    return flow
