"""From eligible patients to the arm table: follow-up window, censoring and endpoints.

Follow-up runs from the index date until the first of: the planned length (`follow_up_days`), death,
the end of the data, or loss to follow-up (no record for `loss_to_follow_up_days` before the end of
the data: follow-up then ends at the patient's last record). A time-to-event endpoint counts its
first event in (index, end of follow-up]; death ends follow-up as a censoring unless the endpoint's
codes include `TRAJSIM/death`.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from trajsim.events import DEATH
from trajsim.scenario import Endpoint, Trial
from trajsim.trial.criteria import Descendants, eligible, matching, years_between

END_REASONS = ("follow_up_complete", "death", "end_of_data", "lost_to_follow_up")


def follow_up(cohort: pl.LazyFrame, events: pl.LazyFrame, trial: Trial, data_end: datetime) -> pl.LazyFrame:
    """`cohort` with end_time, end_reason and follow_up_years."""
    deaths = events.filter(pl.col("code") == DEATH).group_by("subject_id").agg(pl.col("time").min().alias("death"))
    last = events.group_by("subject_id").agg(pl.col("time").max().alias("last_record"))
    frame = cohort.join(deaths, on="subject_id", how="left").join(last, on="subject_id", how="left")
    planned = pl.col("index_time") + pl.duration(days=trial.follow_up_days)
    lost = pl.lit(None, dtype=pl.Datetime("us"))
    if trial.loss_to_follow_up_days is not None:
        gone = pl.col("death").is_null() & (
            pl.col("last_record") < pl.lit(data_end) - pl.duration(days=trial.loss_to_follow_up_days))
        lost = pl.when(gone).then(pl.max_horizontal("last_record", "index_time"))
    # Earliest of the candidate ends; ties go to the reason listed first in END_REASONS.
    ends = [planned, pl.col("death"), pl.lit(data_end, dtype=pl.Datetime("us")), lost]
    frame = frame.with_columns(pl.min_horizontal(ends).alias("end_time"))
    reason = pl.lit(None, dtype=pl.String)
    for name, end in reversed(list(zip(END_REASONS, ends))):
        reason = pl.when(end == pl.col("end_time")).then(pl.lit(name)).otherwise(reason)
    return frame.with_columns(reason.alias("end_reason"), years_between("index_time", "end_time").alias("follow_up_years")
                              ).drop("death", "last_record")


def time_to_event(arm: pl.LazyFrame, events: pl.LazyFrame, endpoint: Endpoint, codes: list[str]) -> pl.LazyFrame:
    """`arm` with `<name>_event` (bool) and `<name>_years` (to the event, or to censoring)."""
    first = (matching(events, codes).join(arm.select("subject_id", "index_time", "end_time"), on="subject_id")
             .filter((pl.col("time") > pl.col("index_time")) & (pl.col("time") <= pl.col("end_time")))
             .group_by("subject_id").agg(pl.col("time").min().alias("event_time")))
    return (arm.join(first, on="subject_id", how="left")
            .with_columns(pl.col("event_time").is_not_null().alias(f"{endpoint.name}_event"),
                          pl.coalesce("event_time", "end_time").alias("event_time"))
            .with_columns(years_between("index_time", "event_time").alias(f"{endpoint.name}_years"))
            .drop("event_time"))


def lab_change(arm: pl.LazyFrame, events: pl.LazyFrame, endpoint: Endpoint, code: str) -> pl.LazyFrame:
    """`arm` with `<name>_baseline` (last value at or before index, within baseline_days), `<name>_value`
    (the value nearest to at_days after index, within window_days and follow-up) and `<name>_change`."""
    name = endpoint.name
    values = (events.filter((pl.col("code") == code) & pl.col("numeric_value").is_not_null())
              .select("subject_id", "time", "numeric_value")
              .join(arm.select("subject_id", "index_time", "end_time"), on="subject_id"))
    offset = (pl.col("time") - pl.col("index_time")).dt.total_seconds() / 86400
    baseline = (values.filter((offset <= 0) & (offset >= -endpoint.baseline_days))
                .sort("time").group_by("subject_id").agg(pl.col("numeric_value").last().alias(f"{name}_baseline")))
    distance = (offset - endpoint.at_days).abs()
    later = (values.filter((offset > 0) & (distance <= endpoint.window_days) & (pl.col("time") <= pl.col("end_time")))
             .sort(distance, "time").group_by("subject_id").agg(pl.col("numeric_value").first().alias(f"{name}_value")))
    return (arm.join(baseline, on="subject_id", how="left").join(later, on="subject_id", how="left")
            .with_columns((pl.col(f"{name}_value") - pl.col(f"{name}_baseline")).alias(f"{name}_change")))


def history(arm: pl.LazyFrame, events: pl.LazyFrame, column: str, codes: list[str]) -> pl.LazyFrame:
    """`arm` with the boolean `column`: any event with one of `codes` at or before the index date."""
    seen = (matching(events, codes).join(arm.select("subject_id", "index_time"), on="subject_id")
            .filter(pl.col("time") <= pl.col("index_time")).select("subject_id").unique()
            .with_columns(pl.lit(True).alias(column)))
    return arm.join(seen, on="subject_id", how="left").with_columns(pl.col(column).fill_null(False))


def build_arm(events: pl.DataFrame, trial: Trial, data_end: datetime, descendants: Descendants = None) -> pl.DataFrame:
    """The arm table of the patients in `events` who meet the criteria, one row each by subject_id:
    index_time, age_at_index, sex, history_<set> per baseline set (without a shipped set's @), end_time, end_reason,
    follow_up_years, and the columns of each endpoint."""
    # Each step reads the arm twice (to join onto and to join with), so the arm is collected between
    # steps: one lazy plan would repeat the earlier steps twice over for every later one.
    lazy = events.lazy()
    arm = follow_up(eligible(lazy, trial, descendants).lazy(), lazy, trial, data_end).collect()
    for name in trial.baseline:
        arm = history(arm.lazy(), lazy, trial.baseline_column(name), trial.resolve((name,), descendants)).collect()
    for endpoint in trial.endpoints:
        codes = trial.resolve(endpoint.codes, descendants)
        arm = (time_to_event(arm.lazy(), lazy, endpoint, codes) if endpoint.kind == "time_to_event"
               else lab_change(arm.lazy(), lazy, endpoint, codes[0])).collect()
    return arm.sort("subject_id")
