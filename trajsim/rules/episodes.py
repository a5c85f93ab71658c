"""Rules about condition lifecycles, read from `trajsim/knowledge/data/lifecycles.csv`: acute
episodes end within their longest plausible length, a pregnancy ends within 300 days with a birth
or a loss and holds the prenatal visits and deliveries, a code is not used before it existed, and a
condition is first diagnosed at an age it can start at.

An episode with no recorded end is judged only when the record goes on past its longest length:
a record that stops earlier (the end of the data, a death) may simply not have seen the end.
"""

from __future__ import annotations

import math

import polars as pl

from trajsim.clock import DAYS_PER_YEAR, to_datetime
from trajsim.events import BIRTH, CONDITION_END
from trajsim.knowledge import Knowledge
from trajsim.knowledge.lifecycles import (
    CESAREAN, FETAL_PROCEDURES, MISCARRIAGE, NORMAL_DELIVERY, OBSTETRIC_ADMISSION, PREGNANCY, PRENATAL,
    PRENATAL_INITIAL, lifecycles, same_condition,
)
from trajsim.rules.base import violation
from trajsim.rules.record import _condition_spells

RULES: dict[str, str] = {
    "acute_episode_unresolved": "an acute condition with no recorded end within its longest plausible episode "
                                "while the record goes on past it (e.g. viral pharyngitis still active after 3 weeks)",
    "acute_episode_too_long": "an acute condition whose recorded end comes after its longest plausible episode",
    "pregnancy_too_long": "a pregnancy lasting over 300 days, or with no end while the record goes on past 300 days",
    "obstetric_care_outside_pregnancy": "a prenatal visit, a procedure on the fetus (fetal heart "
                                        "tones), an obstetric admission or a delivery with no pregnancy active or "
                                        "diagnosed in the same encounter (a delivery may fall on the day the "
                                        "pregnancy ends)",
    "pregnancy_end_without_outcome": "a pregnancy that ends with neither a delivery (vaginal or cesarean) nor a "
                                     "miscarriage within 4 days of its end",
    "code_before_valid_date": "a condition code dated before the disease or the code existed (COVID-19 before 2020)",
    "onset_age_outside_window": "a condition first diagnosed at an age it does not start at (essential hypertension "
                                "before 6, ADHD first diagnosed in an adult, osteoporosis before 50)",
}
PREGNANCY_MAX_DAYS = 300.0
OUTCOME_WITHIN_DAYS = 4  # a loss is seen at the next office slot after it, over a weekend
_DAY = pl.duration(days=1)
_OBSTETRIC_CARE = [PRENATAL_INITIAL, PRENATAL, OBSTETRIC_ADMISSION, NORMAL_DELIVERY, CESAREAN, *sorted(FETAL_PROCEDURES)]


def check(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """The violations of this family's rules."""
    table = _lifecycle_table(knowledge)
    return [_episodes(facts, knowledge, table), *_pregnancies(facts, knowledge), _valid_dates(facts, table),
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


def _pregnancies(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """Obstetric care outside every pregnancy, and pregnancy ends with no birth or loss beside them."""
    spells = _condition_spells(facts, knowledge).filter(pl.col("condition") == PREGNANCY)
    pregnancy = list(same_condition(knowledge, PREGNANCY))
    care = facts.filter(pl.col("code").is_in(_OBSTETRIC_CARE)).with_row_index("care")
    during = (care.join(spells, on="subject_id")
              .filter((pl.col("start") <= pl.col("time")) & (pl.col("end").is_null() | (pl.col("time") <= pl.col("end") + _DAY))))
    diagnosed = care.join(facts.filter(pl.col("code").is_in(pregnancy) & pl.col("encounter_id").is_not_null())
                          .select("subject_id", "encounter_id"), on=["subject_id", "encounter_id"])
    outside = care.join(pl.concat([during.select("care"), diagnosed.select("care")]), on="care", how="anti")
    ends = (facts.filter((pl.col("code") == CONDITION_END) & pl.col("text").is_in(pregnancy))
            .with_columns(code=pl.col("text")).with_row_index("pregnancy"))
    outcomes = facts.filter(pl.col("code").is_in([NORMAL_DELIVERY, CESAREAN, MISCARRIAGE])).select(
        "subject_id", pl.col("time").alias("outcome"))
    ended = (ends.join(outcomes, on="subject_id")
             .filter((pl.col("outcome") - pl.col("time")).abs() <= pl.duration(days=OUTCOME_WITHIN_DAYS)))
    return [
        violation(outside, "obstetric_care_outside_pregnancy", pl.lit("no pregnancy active")),
        violation(ends.join(ended.select("pregnancy"), on="pregnancy", how="anti"), "pregnancy_end_without_outcome",
                  pl.lit(f"no delivery or miscarriage within {OUTCOME_WITHIN_DAYS} days")),
    ]


def _valid_dates(facts: pl.LazyFrame, table: pl.LazyFrame) -> pl.LazyFrame:
    dated = table.filter(pl.col("valid_from").is_not_null()).select("code", "valid_from")
    early = facts.join(dated, on="code").filter(pl.col("time") < pl.col("valid_from"))
    return violation(early, "code_before_valid_date", pl.format("valid from {}", pl.col("valid_from").dt.date()))


YEAR_SECONDS = DAYS_PER_YEAR * 86_400


def _onset_ages(facts: pl.LazyFrame, knowledge: Knowledge, table: pl.LazyFrame) -> pl.LazyFrame:
    """The first recorded diagnosis of each condition (either of its codes) against its onset window."""
    births = facts.filter(pl.col("code") == BIRTH).group_by("subject_id").agg(pl.col("time").min().alias("birth"))
    windows = (table.filter((pl.col("age_min") > 0) | pl.col("age_max").is_not_null())
               .select(pl.col("code").alias("condition"), "age_min", "age_max"))
    first = (_condition_spells(facts, knowledge).group_by("subject_id", "condition")
             .agg(pl.col("start").min().alias("time"), pl.col("recorded").sort_by("start").first().alias("code"))
             .join(windows, on="condition").join(births, on="subject_id")
             .with_columns(seconds=(pl.col("time") - pl.col("birth")).dt.total_seconds())
             .with_columns(age=pl.col("seconds") / YEAR_SECONDS))
    # whole seconds against the window's ends in seconds: a diagnosis on the day of the window's first
    # age is inside it, which a quotient rounded below the age (polars may divide by a reciprocal) would miss
    outside = ((pl.col("seconds") < pl.col("age_min") * YEAR_SECONDS)
               | (pl.col("seconds") >= pl.col("age_max") * YEAR_SECONDS).fill_null(False))
    return violation(first.filter(outside), "onset_age_outside_window",
                     pl.format("first diagnosed at {}; starts at ages {}-{}", pl.col("age").round(1), "age_min",
                               pl.col("age_max").cast(pl.String).fill_null("any")))
