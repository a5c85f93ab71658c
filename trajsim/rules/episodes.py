"""Rules about condition lifecycles, read from `trajsim/knowledge/data/lifecycles.csv`: acute
episodes end within their longest plausible length, a pregnancy ends within 300 days (and a delivery
ends a pregnancy), a code is not used before it existed, and a condition is first diagnosed at an age
it can start at.

An episode with no recorded end is judged only when the record goes on past its longest length:
a record that stops earlier (the end of the data, a death) may simply not have seen the end.
"""

from __future__ import annotations

import math

import polars as pl

from trajsim.clock import DAYS_PER_YEAR, to_datetime
from trajsim.events import BIRTH
from trajsim.knowledge import Knowledge
from trajsim.knowledge.lifecycles import DELIVERIES, PREGNANCY, lifecycles
from trajsim.rules.base import violation
from trajsim.rules.record import _condition_spells

RULES: dict[str, str] = {
    "acute_episode_unresolved": "an acute condition with no recorded end within its longest plausible episode "
                                "while the record goes on past it (e.g. viral pharyngitis still active after 3 weeks)",
    "acute_episode_too_long": "an acute condition whose recorded end comes after its longest plausible episode",
    "pregnancy_too_long": "a pregnancy lasting over 300 days, or with no end while the record goes on past 300 days",
    "delivery_without_pregnancy": "a delivery (normal or cesarean) with no pregnancy recorded in the 300 days "
                                  "before it",
    "code_before_valid_date": "a condition code dated before the disease or the code existed (COVID-19 before 2020)",
    "onset_age_outside_window": "a condition first diagnosed at an age it does not start at (essential hypertension "
                                "before 6, ADHD first diagnosed in an adult, osteoporosis before 50)",
}
PREGNANCY_MAX_DAYS = 300.0
_DAY = pl.duration(days=1)


def check(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """The violations of this family's rules."""
    table = _lifecycle_table(knowledge)
    return [_episodes(facts, knowledge, table), _deliveries(facts), _valid_dates(facts, table),
            _onset_ages(facts, knowledge, table)]


def _lifecycle_table(knowledge: Knowledge) -> pl.LazyFrame:
    rows = [(code, life.onset_age_min, None if math.isinf(life.onset_age_max) else life.onset_age_max,
             None if math.isinf(life.max_days) or not life.episodic else life.max_days,
             None if life.valid_from is None else to_datetime(life.valid_from))
            for code, life in sorted(lifecycles(knowledge).items())]
    return pl.LazyFrame(rows, orient="row", schema={"code": pl.String, "age_min": pl.Float64, "age_max": pl.Float64,
                                                    "max_days": pl.Float64, "valid_from": pl.Datetime("us")})


def _episodes(facts: pl.LazyFrame, knowledge: Knowledge, table: pl.LazyFrame) -> pl.LazyFrame:
    """Episodes (each recorded onset with the first end at or after it) longer than their longest length."""
    last = facts.group_by("subject_id").agg(pl.col("time").max().alias("last"))
    bounds = table.filter(pl.col("max_days").is_not_null()).select(pl.col("code").alias("condition"), "max_days")
    spells = (_condition_spells(facts, knowledge).join(bounds, on="condition").join(last, on="subject_id")
              .with_columns(longest=pl.col("start") + pl.col("max_days") * _DAY,
                            days=(pl.col("end") - pl.col("start")).dt.total_seconds() / 86_400)
              .rename({"recorded": "code", "start": "time"}))
    open_past = pl.col("end").is_null() & (pl.col("last") > pl.col("longest"))
    too_long = pl.col("end") > pl.col("longest")
    pregnant = pl.col("condition") == PREGNANCY
    return pl.concat([
        violation(spells.filter(~pregnant & open_past), "acute_episode_unresolved",
                  pl.format("no end after {} days; the record goes on to {}", "max_days", "last")),
        violation(spells.filter(~pregnant & too_long), "acute_episode_too_long",
                  pl.format("lasts {} days; at most {}", pl.col("days").round(1), "max_days")),
        violation(spells.filter(pregnant & (open_past | too_long)), "pregnancy_too_long",
                  pl.when(pl.col("end").is_null())
                  .then(pl.format("no end after {} days; the record goes on to {}", "max_days", "last"))
                  .otherwise(pl.format("lasts {} days", pl.col("days").round(1)))),
    ])


def _deliveries(facts: pl.LazyFrame) -> pl.LazyFrame:
    """Deliveries with no pregnancy onset in the longest pregnancy before them."""
    onsets = (facts.filter(pl.col("code") == PREGNANCY)
              .select("subject_id", pl.col("time").alias("onset")).sort("onset"))
    births = facts.filter(pl.col("code").is_in(DELIVERIES)).sort("time")
    unexplained = (births.join_asof(onsets, left_on="time", right_on="onset", by="subject_id", strategy="backward",
                                    check_sortedness=False)
                   .filter(pl.col("onset").is_null() | (pl.col("time") - pl.col("onset") > PREGNANCY_MAX_DAYS * _DAY)))
    return violation(unexplained, "delivery_without_pregnancy",
                     pl.when(pl.col("onset").is_null()).then(pl.lit("no pregnancy recorded before it"))
                     .otherwise(pl.format("the last pregnancy began {}", pl.col("onset").dt.date())))


def _valid_dates(facts: pl.LazyFrame, table: pl.LazyFrame) -> pl.LazyFrame:
    dated = table.filter(pl.col("valid_from").is_not_null()).select("code", "valid_from")
    early = facts.join(dated, on="code").filter(pl.col("time") < pl.col("valid_from"))
    return violation(early, "code_before_valid_date", pl.format("valid from {}", pl.col("valid_from").dt.date()))


def _onset_ages(facts: pl.LazyFrame, knowledge: Knowledge, table: pl.LazyFrame) -> pl.LazyFrame:
    """The first recorded diagnosis of each condition (either of its codes) against its onset window."""
    births = facts.filter(pl.col("code") == BIRTH).group_by("subject_id").agg(pl.col("time").min().alias("birth"))
    windows = (table.filter((pl.col("age_min") > 0) | pl.col("age_max").is_not_null())
               .select(pl.col("code").alias("condition"), "age_min", "age_max"))
    first = (_condition_spells(facts, knowledge).group_by("subject_id", "condition")
             .agg(pl.col("start").min().alias("time"), pl.col("recorded").sort_by("start").first().alias("code"))
             .join(windows, on="condition").join(births, on="subject_id")
             .with_columns(age=(pl.col("time") - pl.col("birth")).dt.total_seconds() / (DAYS_PER_YEAR * 86_400)))
    outside = (pl.col("age") < pl.col("age_min")) | (pl.col("age") >= pl.col("age_max")).fill_null(False)
    return violation(first.filter(outside), "onset_age_outside_window",
                     pl.format("first diagnosed at {}; starts at ages {}-{}", pl.col("age").round(1), "age_min",
                               pl.col("age_max").cast(pl.String).fill_null("any")))
