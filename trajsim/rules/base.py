"""What every rule family shares: the shape of a violation row."""

from __future__ import annotations

import polars as pl

VIOLATION_SCHEMA = {"rule": pl.String(), "subject_id": pl.UInt64(), "time": pl.Datetime("us"),
                    "code": pl.String(), "detail": pl.String()}


def violation(frame: pl.LazyFrame, rule: str, detail: pl.Expr) -> pl.LazyFrame:
    """Violation rows of `rule` for the facts in `frame` (which has subject_id, time and code)."""
    return frame.select(pl.lit(rule).alias("rule"), "subject_id", "time", "code", detail.alias("detail"))
