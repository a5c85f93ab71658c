"""MEDS (Medical Event Data Standard) Parquet <-> the canonical event table.

MEDS is already one row per fact (`subject_id, time, code, numeric_value`), so reading renames and
normalises: `MEDS_BIRTH`/`MEDS_DEATH` become trajsim's structural codes, code-system prefixes are
upper-cased to trajsim's names (`RxNorm/` -> `RXNORM/`), a `value` column stands in for
`numeric_value` (numbers) or `text_value` (strings). Rows with no time (MEDS static facts) or an
unknown code system are dropped and counted. Writing keeps trajsim's extra columns (`encounter_id`,
`unit`, and `text` as MEDS' `text_value`) and float64 values, so a round trip loses nothing.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import polars as pl

from trajsim.atomic import atomic_writer
from trajsim.events import BIRTH, CODE_SYSTEMS, DEATH, EVENT_SCHEMA
from trajsim.ingest.common import (
    SYSTEM_BY_VOCABULARY, IngestError, IngestReport, Step, check_times, drop_reason, keep_rows, lookup, parse_time,
    sort_events, source_files,
)

MEDS_CODES = {"MEDS_BIRTH": BIRTH, "MEDS_DEATH": DEATH}
REQUIRED = ("subject_id", "time", "code")
_SYSTEMS = {**SYSTEM_BY_VOCABULARY, **{system: system for system in CODE_SYSTEMS}}


def plan(source: Path, _workdir: Path) -> list[Step]:
    """One step per Parquet shard (a MEDS dataset's `metadata/` folder is not event data)."""
    files = source_files(source, (".parquet",))
    if source.is_dir():
        files = [path for path in files if "metadata" not in path.relative_to(source).parts[:-1]]
    return [(str(path), partial(_shard, path)) for path in files]


def _time(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        zoned = column.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if dtype.time_zone else column
        return zoned.cast(pl.Datetime("us"))
    if dtype == pl.Date:
        return column.cast(pl.Datetime("us"))
    return parse_time(column)


def _code(code: pl.Expr) -> pl.Expr:
    """MEDS code -> SYSTEM/CODE, null when its system is not one trajsim knows."""
    parts = code.str.splitn("/", 2)
    system = lookup(parts.struct.field("field_0").str.to_uppercase(), _SYSTEMS)
    local = parts.struct.field("field_1")
    return pl.coalesce(lookup(code, MEDS_CODES), system + "/" + local)


def _shard(path: Path, report: IngestReport) -> pl.LazyFrame:
    rows = pl.scan_parquet(path)
    schema = rows.collect_schema()
    missing = [name for name in REQUIRED if name not in schema]
    if missing:
        raise IngestError(f"{path}: missing column(s) {', '.join(missing)} of a MEDS table")
    if schema["time"] == pl.String:
        check_times(rows.select("time"), ["time"], str(path), lambda row: f"row {row + 1}")
    raw = pl.col("value").cast(pl.String).str.strip_chars() if "value" in schema else pl.lit(None, pl.String)
    value = pl.when(raw != "").then(raw)
    number = pl.col("numeric_value") if "numeric_value" in schema else value.cast(pl.Float64, strict=False)
    text = next((pl.col(name) for name in ("text_value", "text") if name in schema),
                pl.when(number.is_null()).then(value.cast(pl.String)))
    optional = {name: pl.col(name) if name in schema else pl.lit(None) for name in ("encounter_id", "unit")}
    time, code = _time(pl.col("time"), schema["time"]), _code(pl.col("code").cast(pl.String))
    return keep_rows(rows, drop_reason(pl.col("subject_id"), time, code), path.name, report).select(
        pl.col("subject_id").cast(pl.UInt64).alias("subject_id"), time.alias("time"),
        optional["encounter_id"].cast(pl.UInt64).alias("encounter_id"), code.alias("code"),
        number.cast(pl.Float64).alias("numeric_value"), optional["unit"].cast(pl.String).alias("unit"),
        text.cast(pl.String).alias("text"),
    )


def write_meds(events: pl.DataFrame, out: Path) -> None:
    """Write canonical events as one MEDS data shard (Parquet, sorted by subject and time), atomically."""
    meds_code = {code: meds for meds, code in MEDS_CODES.items()}
    frame = sort_events(events.lazy().select(list(EVENT_SCHEMA))).select(
        pl.col("subject_id").cast(pl.Int64), "time",
        pl.coalesce(lookup(pl.col("code"), meds_code), "code").alias("code"), "numeric_value",
        pl.col("text").alias("text_value"), "encounter_id", "unit",
    ).collect()
    with atomic_writer(Path(out)) as handle:
        frame.write_parquet(handle, compression="zstd")
