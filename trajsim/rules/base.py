"""What every rule family shares: the shape of a violation row, each patient's birth and sex,
measurements read by what they measure, and the spells in which a drug is taken."""

from __future__ import annotations

import polars as pl

from trajsim.events import BIRTH, MEDICATION_END, SEX_FEMALE, SEX_MALE
from trajsim.knowledge.physiology import SAME_MEASUREMENT

VIOLATION_SCHEMA = {"rule": pl.String(), "subject_id": pl.UInt64(), "time": pl.Datetime("us"),
                    "code": pl.String(), "detail": pl.String()}


def violation(frame: pl.LazyFrame, rule: str, detail: pl.Expr) -> pl.LazyFrame:
    """Violation rows of `rule` for the facts in `frame` (which has subject_id, time and code)."""
    return frame.select(pl.lit(rule).alias("rule"), "subject_id", "time", "code", detail.alias("detail"))


def as_measured(facts: pl.LazyFrame) -> pl.LazyFrame:
    """Facts with a measurement recorded under another code for it read as the body's code (an eGFR
    with the MDRD code, as Synthea records it, is judged as the eGFR)."""
    return facts.with_columns(pl.col("code").replace(SAME_MEASUREMENT))


def drug_spells(facts: pl.LazyFrame, orders: pl.LazyFrame) -> pl.LazyFrame:
    """Each order (`drug`, `ordered`, in encounter `order_encounter`) with the first stop of its drug
    after it (`stopped`, null while taken)."""
    stops = (facts.filter(pl.col("code") == MEDICATION_END)
             .select("subject_id", drug=pl.col("text"), stopped=pl.col("time")).sort("stopped"))
    return (orders.select("subject_id", drug=pl.col("code"), ordered=pl.col("time"), order_encounter=pl.col("encounter_id"))
            .sort("ordered")
            .join_asof(stops, left_on="ordered", right_on="stopped", by=["subject_id", "drug"], strategy="forward",
                       check_sortedness=False))


def people_of(facts: pl.LazyFrame) -> pl.LazyFrame:
    """Each patient's `birth` and `sex` ("F", "M" or null), from the structural codes."""
    code = pl.col("code")
    return facts.group_by("subject_id").agg(
        birth=pl.col("time").filter(code == BIRTH).min(),
        sex=code.filter(code.is_in([SEX_FEMALE, SEX_MALE])).first().replace_strict(
            {SEX_FEMALE: "F", SEX_MALE: "M"}, default=None, return_dtype=pl.String),
    )
