"""Rules of the immunization schedule (CDC/ACIP 2024; minimum ages and intervals from the ACIP
General Best Practice Guidelines, Table 3-1), read from the series in `immunizations.csv`.

Doses of a series are numbered in the order recorded. As ACIP allows, a dose up to 4 days before
its minimum age or interval still counts (the grace period). A vaccine outside the table is held
to a floor: the same vaccine twice within 21 days, shorter than any routine interval. Counting
only doses within the series' ages (under its catch-up upper age) leaves alone what is not part of
the childhood series, such as an adult's pneumococcal conjugate or a third MMR dose in an outbreak.
A maximum age (rotavirus) has no grace period; a vaccine is judged against the date it became
available; influenza against the doses one season holds (ACIP: one, two for a child under 9).
"""

from __future__ import annotations

import polars as pl

from trajsim.clock import to_datetime
from trajsim.events import BIRTH
from trajsim.knowledge import Knowledge
from trajsim.rules.base import violation

RULES: dict[str, str] = {
    "dose_too_soon": "a vaccine dose given sooner after the previous dose of its series than the minimum interval "
                     "(ACIP Table 3-1, 4-day grace); for a vaccine outside the schedule, the same code twice within 21 days",
    "dose_beyond_series": "more doses of a series that does not repeat than the schedule has, within the series' ages",
    "dose_below_minimum_age": "a vaccine dose given before the minimum age for that dose (ACIP Table 3-1, 4-day grace)",
    "dose_above_maximum_age": "a vaccine dose given from the ACIP maximum age for that dose (rotavirus: dose 1 by "
                              "14 weeks 6 days, none from 8 months 1 day; no grace period)",
    "influenza_beyond_season": "more influenza doses in one season than ACIP's one (two for a child under 9)",
    "dose_before_vaccine_existed": "a vaccine dose dated before the vaccine became available (COVID-19 mRNA before "
                                   "its authorization)",
}
GRACE_DAYS = 4.0
FLOOR_DAYS = 21.0
VACCINE_SYSTEM = "CVX/"
INFLUENZA = "influenza"  # the seasonal series
SEASON_START_DAY = 244  # influenza seasons start around 1 September (engine day of 1970-09-02)
TWO_FLU_DOSES_UNDER_YEARS = 9.0  # ACIP: a child of 6 months-8 years may need two doses in a season
_MICROSECONDS_PER_DAY = 86_400e6


def flu_season(day: float) -> int:
    """The influenza season an engine day falls in (seasons of a Julian year from about 1 September)."""
    return int((day - SEASON_START_DAY) // 365.25)


def flu_doses_allowed(age_years: float) -> int:
    """The influenza doses one season may hold at this age."""
    return 2 if age_years < TWO_FLU_DOSES_UNDER_YEARS else 1


def _dose_table(knowledge: Knowledge) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(code -> series with its dose count, whether it repeats and its upper age) and
    (series, dose -> minimum age and interval, the maximum age where ACIP sets one, and the date
    the vaccine became available)."""
    last = {}
    for dose in knowledge.doses:
        if dose.series not in last or dose.dose > last[dose.series].dose:
            last[dose.series] = dose
    codes = pl.LazyFrame(
        [(d.code, d.series, last[d.series].dose, last[d.series].repeat_days is not None, last[d.series].max_age_days)
         for d in knowledge.doses],
        schema={"code": pl.String, "series": pl.String, "doses": pl.Int64, "repeats": pl.Boolean,
                "max_age": pl.Float64}, orient="row").unique("code", keep="first")
    doses = pl.LazyFrame(
        [(d.series, d.dose, d.min_age_days, d.min_interval_days, d.max_age_days if d.max_age_limit else None,
          None if d.available_from_day is None else to_datetime(d.available_from_day))
         for d in knowledge.doses],
        schema={"series": pl.String, "dose": pl.Int64, "min_age": pl.Float64, "min_interval": pl.Float64,
                "max_age_limit": pl.Float64, "available_from": pl.Datetime("us")},
        orient="row")
    return codes, doses


def check(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """The violations of this family's rules."""
    codes, doses = _dose_table(knowledge)
    births = facts.filter(pl.col("code") == BIRTH).group_by("subject_id").agg(pl.col("time").min().alias("birth"))
    group = ["subject_id", "series"]
    known = pl.col("doses").is_not_null()
    vaccines = (facts.filter(pl.col("code").str.starts_with(VACCINE_SYSTEM))
                .join(codes, on="code", how="left").join(births, on="subject_id", how="left")
                .with_columns(series=pl.coalesce("series", "code"),
                              age=(pl.col("time") - pl.col("birth")).dt.total_microseconds() / _MICROSECONDS_PER_DAY)
                .sort("subject_id", "series", "time")
                .with_columns(number=pl.int_range(1, pl.len() + 1).over(group),
                              since=(pl.col("time") - pl.col("time").shift(1).over(group)).dt.total_microseconds()
                              / _MICROSECONDS_PER_DAY,
                              in_window=pl.col("age").is_null() | (pl.col("age") < pl.col("max_age").fill_null(float("inf"))))
                .with_columns(window_number=pl.col("in_window").cast(pl.Int64).cum_sum().over(group),
                              dose=pl.min_horizontal("number", "doses"))
                .join(doses, on=["series", "dose"], how="left"))
    too_soon = vaccines.filter(pl.when(known).then(pl.col("since") < pl.col("min_interval") - GRACE_DAYS)
                               .otherwise(pl.col("since") < FLOOR_DAYS))
    minimum = pl.col("min_interval").fill_null(FLOOR_DAYS)
    beyond = vaccines.filter(known & ~pl.col("repeats") & pl.col("in_window") & (pl.col("window_number") > pl.col("doses")))
    too_young = vaccines.filter(known & (pl.col("age") < pl.col("min_age") - GRACE_DAYS))
    too_old = vaccines.filter(known & (pl.col("age") >= pl.col("max_age_limit")))
    unavailable = vaccines.filter(known & (pl.col("time") < pl.col("available_from")))
    season = ((pl.col("time").dt.epoch("s") / 86_400 - SEASON_START_DAY) / 365.25).floor()
    allowed = pl.when(pl.col("age") < TWO_FLU_DOSES_UNDER_YEARS * 365.25).then(2).otherwise(1)
    flu = (vaccines.filter(pl.col("series") == INFLUENZA).with_columns(season=season)
           .with_columns(in_season=pl.int_range(1, pl.len() + 1).over("subject_id", "season"))
           .filter(pl.col("in_season") > allowed))
    return [
        violation(too_soon, "dose_too_soon", pl.format(
            "{} dose {} after {} days; minimum {} days", "series", "number", pl.col("since").round(1), minimum)),
        violation(beyond, "dose_beyond_series", pl.format("{} dose {} of a {}-dose series", "series", "window_number", "doses")),
        violation(too_young, "dose_below_minimum_age", pl.format(
            "{} dose {} at {} days of age; minimum {} days", "series", "dose", pl.col("age").round(1), "min_age")),
        violation(unavailable, "dose_before_vaccine_existed", pl.format(
            "{} dose on {}; available from {}", "series", pl.col("time").dt.date(), pl.col("available_from").dt.date())),
        violation(flu, "influenza_beyond_season", pl.format("influenza dose {} of the season", "in_season")),
        violation(too_old, "dose_above_maximum_age", pl.format(
            "{} dose {} at {} days of age; maximum {} days", "series", "dose", pl.col("age").round(1), "max_age_limit")),
    ]
