"""Rules of preventive care's intervals: a screening of `screenings.csv` is not done again before its
interval at the patient's age (the USPSTF's: mammography every 2 years, cervical cytology every 3,
colonoscopy every 10) less a month, nor an adult's preventive exam before the yearly interval of
`well_visits.csv` less a month (`REPEAT_GRACE_DAYS`: Medicare's frequency limits, 11 full months for
a yearly service). Outside a screening's ages the shortest interval of its rows for the patient's
sex holds (a colonoscopy at 84 is past the screening ages, and no more due every year). A
screening whose fact names a condition as its reason is a diagnostic test and is not judged.

A laboratory screening (`lab_screenings.csv`: lipid panel, HbA1c, blood count, urinalysis) is known
by a result only its panel reports (a total cholesterol) and is held to the same intervals less a
month, unless a condition active at the visit calls for it then (`monitoring.csv`: a diabetic's
HbA1c after 182 days less the schedule's two weeks' grace, a blood count at every ED visit for a fever).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from trajsim.clock import DAYS_PER_YEAR
from trajsim.events import VISIT_END, VISIT_START_PREFIX, WELL_ADULT
from trajsim.knowledge import Knowledge, Screening
from trajsim.knowledge.labs import LAB_GRACE_DAYS, lab_screenings, screening_markers
from trajsim.rules.base import as_measured, people_of, violation
from trajsim.rules.record import _condition_spells

RULES: dict[str, str] = {
    "well_exam_repeated_early": "an adult's preventive exam (General examination of patient, SNOMED 162673000) "
                                "less than a year less a month after the previous one (well_visits.csv)",
    "screening_repeated_early": "a screening (screenings.csv) done for no condition less than its interval at that "
                                "age less a month after the previous one (the USPSTF's intervals)",
    "lab_screening_repeated_early": "a laboratory screening (lab_screenings.csv: lipid panel, HbA1c, blood count, "
                                    "urinalysis) less than its interval at that age less a month after the previous "
                                    "one, with no active condition calling for it then (monitoring.csv)",
}
_DAY = 86_400e6  # microseconds


def check(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """The violations of this family's rules."""
    return [_well_exams(facts, knowledge), _screenings(facts, knowledge), _lab_screenings(facts, knowledge)]


def _gaps(done: pl.LazyFrame) -> pl.LazyFrame:
    """`done` (subject_id, time, code) with `previous`, the time the same code was last done, and
    `gap_days` since then."""
    return (done.sort("subject_id", "code", "time")
            .with_columns(previous=pl.col("time").shift(1).over("subject_id", "code"))
            .with_columns(gap_days=(pl.col("time") - pl.col("previous")).dt.total_microseconds() / _DAY))


def _well_exams(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    exams = _gaps(facts.filter((pl.col("code") == WELL_ADULT) & pl.col("encounter_id").is_not_null())
                  .select("subject_id", "time", "code").unique())
    early = exams.filter(pl.col("gap_days") < knowledge.well_visit_repeat_after_days)
    return violation(early, "well_exam_repeated_early",
                     pl.format("{} days after the previous on {}", pl.col("gap_days").round(0), pl.col("previous").dt.date()))


def _screenings(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    done = _gaps(facts.filter(pl.col("code").is_in(sorted({s.code for s in knowledge.screenings}))
                              & pl.col("text").is_null())
                 .select("subject_id", "time", "code").unique())
    return violation(_early(done, facts, knowledge.screenings), "screening_repeated_early", _detail())


def _detail() -> pl.Expr:
    return pl.format("{} days after the previous on {}; due again after {} days", pl.col("gap_days").round(0),
                     pl.col("previous").dt.date(), pl.col("repeat_after").round(0))


def _early(done: pl.LazyFrame, facts: pl.LazyFrame, screenings: Sequence[Screening]) -> pl.LazyFrame:
    """The screenings of `done` (with `_gaps`) repeated before their interval less a month at the
    patient's age, or outside the ages before the shortest interval of the patient's sex."""
    rows = pl.LazyFrame([(s.code, s.sex, s.age_min, s.age_max, s.repeat_after_days) for s in screenings],
                        schema={"code": pl.String, "only_sex": pl.String, "age_min": pl.Float64, "age_max": pl.Float64,
                                "repeat_after": pl.Float64}, orient="row")
    aged = (done.join(people_of(facts), on="subject_id")
            .with_columns(age=(pl.col("time") - pl.col("birth")).dt.total_microseconds() / (DAYS_PER_YEAR * _DAY))
            .join(rows, on="code")
            .filter(pl.col("only_sex").is_null() | (pl.col("only_sex") == pl.col("sex")))
            .group_by("subject_id", "time", "code")
            .agg(pl.first("previous", "gap_days"),
                 pl.col("repeat_after").filter(pl.col("age").is_between(pl.col("age_min"), pl.col("age_max"), closed="left"))
                 .min().fill_null(pl.col("repeat_after").min())))
    return aged.filter(pl.col("gap_days") < pl.col("repeat_after"))


def _lab_screenings(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Laboratory screenings done early at an encounter, where no condition active at it calls for the
    test at that gap (in that encounter's class)."""
    markers, visit = screening_markers(), ["subject_id", "encounter_id"]
    done = (as_measured(facts).filter(pl.col("code").is_in(sorted(markers)) & pl.col("encounter_id").is_not_null())
            .select("subject_id", "time", "encounter_id", code=pl.col("code").replace_strict(markers))
            .unique(["subject_id", "time", "code"]))
    early = _early(_gaps(done.select("subject_id", "time", "code")), facts, lab_screenings()).join(
        done, on=["subject_id", "time", "code"])
    monitoring = pl.LazyFrame([(knowledge.conditions[key].code, lab.code, lab.interval_days, sorted(lab.settings) or None)
                               for key, labs in knowledge.monitoring.items() for lab in labs], orient="row",
                              schema={"condition": pl.String, "code": pl.String, "interval_days": pl.Float64,
                                      "settings": pl.List(pl.String)})
    visits = (facts.filter(pl.col("code").str.starts_with(VISIT_START_PREFIX)).select(
        *visit, encounter_class=pl.col("code").str.strip_prefix(VISIT_START_PREFIX))
        .join(facts.filter(pl.col("code") == VISIT_END).group_by(visit).agg(left=pl.col("time").max()), on=visit, how="left"))
    # a condition that ends as the test is done (an episode ended at a discharge) was active when it was ordered
    active = (pl.col("start") <= pl.coalesce("left", "time")) & (pl.col("end").is_null() | (pl.col("end") >= pl.col("time")))
    called_for = (early.join(visits, on=visit).join(monitoring, on="code")
                  .join(_condition_spells(facts, knowledge), on=["subject_id", "condition"])
                  .filter(active & (pl.col("gap_days") + LAB_GRACE_DAYS >= pl.col("interval_days"))
                          & (pl.col("settings").is_null() | pl.col("settings").list.contains(pl.col("encounter_class"))))
                  .select("subject_id", "time", "code").unique())
    return violation(early.join(called_for, on=["subject_id", "time", "code"], how="anti"), "lab_screening_repeated_early",
                     _detail())
