"""What every rule family shares: the shape of a violation row, and measurements read by what they measure."""

from __future__ import annotations

import polars as pl

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
