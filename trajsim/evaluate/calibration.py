"""Does a simulated cohort reproduce the figures it was built from? Prevalence of each chronic
condition in the cited age bands at the end of the period, life expectancy at birth from the
cohort's own death rates, and deaths in a window against the life table's expectation for the
cohort's ages, set against the knowledge tables. Reads the canonical event table, so it
applies to any cohort written by `trajsim generate` (events format)."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import polars as pl

from trajsim.clock import DAYS_PER_YEAR
from trajsim.events import BIRTH, CONDITION_END, DEATH, SEX_FEMALE, SEX_MALE
from trajsim.knowledge import Knowledge

_MICROSECONDS_PER_YEAR = DAYS_PER_YEAR * 86_400e6


def people(events: pl.LazyFrame, end: datetime) -> pl.LazyFrame:
    """One row per patient: sex, birth, first death, and age at the end of the record in years."""
    code = pl.col("code")
    return events.group_by("subject_id").agg(
        sex=code.filter(code.is_in([SEX_FEMALE, SEX_MALE])).first().str.slice(-1),
        birth=pl.col("time").filter(code == BIRTH).min(),
        death=pl.col("time").filter(code == DEATH).min(),
    ).with_columns(
        exit_age=(pl.coalesce("death", pl.lit(end)) - pl.col("birth")).dt.total_microseconds() / _MICROSECONDS_PER_YEAR,
    )


def prevalence_by_band(events: pl.LazyFrame, end: datetime, knowledge: Knowledge) -> pl.DataFrame:
    """One row per cited prevalence band: patients alive at `end` in that band (and sex), how many
    then have the condition (recorded and not ended since), the simulated and cited prevalence, the
    prevalence `expected` of these patients from the cited curve at their own ages (a cohort aged
    40-45 sits at the top of an 18-45 band), the relative error against it, and its binomial
    standard error at this sample size, relative to it."""
    chronic = {c.code: c.key for c in knowledge.chronic} | {c.icd10cm: c.key for c in knowledge.chronic}
    starts = (events.filter(pl.col("code").is_in(list(chronic)))
              .group_by("subject_id", "code").agg(pl.col("time").max().alias("start")))
    ends = (events.filter(pl.col("code") == CONDITION_END)
            .group_by("subject_id", pl.col("text").alias("code")).agg(pl.col("time").max().alias("stop")))
    active = (starts.join(ends, on=["subject_id", "code"], how="left")
              .filter(pl.col("stop").is_null() | (pl.col("stop") < pl.col("start")))
              .select("subject_id", pl.col("code").replace_strict(chronic).alias("condition")).unique())
    alive = people(events, end).filter(pl.col("death").is_null())
    bands = pl.LazyFrame(
        [(key, band.sex, band.age_min, band.age_max, band.value)
         for key, bands in knowledge.prevalence.items() for band in bands if knowledge.conditions[key].course == "chronic"],
        schema={"condition": pl.String, "band_sex": pl.String, "age_min": pl.Float64, "age_max": pl.Float64,
                "cited": pl.Float64}, orient="row")
    members = alive.join(bands, how="cross").filter(
        pl.col("exit_age").is_between(pl.col("age_min"), pl.col("age_max"), closed="left")
        & ((pl.col("band_sex") == "any") | (pl.col("band_sex") == pl.col("sex")))).collect()
    members = members.with_columns(expected=pl.Series([
        knowledge.prevalence_at(condition, sex, age)
        for condition, sex, age in members.select("condition", "sex", "exit_age").iter_rows()], dtype=pl.Float64))
    counted = (members.lazy().join(active.with_columns(has=pl.lit(True)), on=["subject_id", "condition"], how="left")
               .group_by("condition", "band_sex", "age_min", "age_max", "cited")
               .agg(patients=pl.len(), cases=pl.col("has").fill_null(False).sum(), expected=pl.col("expected").mean()))
    return (counted.with_columns(simulated=pl.col("cases") / pl.col("patients"))
            .with_columns(relative_error=pl.col("simulated") / pl.col("expected") - 1,
                          relative_standard_error=(pl.col("expected") * (1 - pl.col("expected")) / pl.col("patients"))
                          .sqrt() / pl.col("expected"))
            .rename({"band_sex": "sex"}).sort("condition", "sex", "age_min").collect())


def most_common(prevalence: pl.DataFrame, count: int) -> pl.DataFrame:
    """The rows of the `count` conditions with the most expected cases in the cohort."""
    expected = (prevalence.group_by("condition").agg((pl.col("cited") * pl.col("patients")).sum().alias("expected"))
                .sort(["expected", "condition"], descending=[True, False]).head(count))
    return prevalence.filter(pl.col("condition").is_in(expected["condition"].to_list()))


def life_expectancy(bands: np.ndarray) -> float:
    """Life expectancy at birth under piecewise-constant annual death hazards, rows of
    (age_min, age_max, hazard); the last band's hazard continues for ever."""
    expectancy, surviving = 0.0, 1.0
    for i, (age_min, age_max, hazard) in enumerate(bands[:, :3]):
        span = math.inf if i == len(bands) - 1 else age_max - age_min
        expectancy += surviving * (span if hazard <= 0 else -math.expm1(-hazard * span) / hazard)
        surviving *= math.exp(-hazard * span) if hazard > 0 else 1.0
    return expectancy


def death_rates(events: pl.LazyFrame, end: datetime, knowledge: Knowledge, start: datetime | None = None) -> np.ndarray:
    """Deaths per person-year in each life-table band for records followed from birth, or from
    `start` for those born before it, to death or `end`: rows of (age_min, age_max, rate, deaths,
    person-years)."""
    lives = people(events, end).with_columns(
        entry_age=pl.lit(0.0) if start is None else
        pl.max_horizontal((pl.lit(start) - pl.col("birth")).dt.total_microseconds() / _MICROSECONDS_PER_YEAR, 0.0),
        died=pl.col("death").is_not_null() & (pl.col("death") >= (pl.lit(start) if start else pl.col("birth"))),
    ).filter(pl.col("exit_age") > pl.col("entry_age")).select("entry_age", "exit_age", "died").collect()
    entry_age, exit_age, died = (lives[name].to_numpy() for name in ("entry_age", "exit_age", "died"))
    bands = knowledge.mortality[:, :2]
    years = np.clip(np.minimum(exit_age[:, None], bands[:, 1]) - np.maximum(entry_age[:, None], bands[:, 0]),
                    0, None).sum(axis=0)
    band_of_death = np.searchsorted(bands[:, 1], exit_age[died], side="right")
    deaths = np.bincount(np.minimum(band_of_death, len(bands) - 1), minlength=len(bands)).astype(float)
    rates = np.divide(deaths, years, out=np.zeros_like(deaths), where=years > 0)
    return np.column_stack([bands, rates, deaths, years])


def deaths_over_life_table(events: pl.LazyFrame, start: datetime, end: datetime, knowledge: Knowledge) -> float:
    """Deaths between `start` and `end` over those the life table expects at the cohort's own ages
    and person-years (1.0: as the table)."""
    rows = death_rates(events, end, knowledge, start)
    expected = float((knowledge.mortality[:, 2] * rows[:, 4]).sum())
    return float(rows[:, 3].sum()) / expected if expected else 0.0
