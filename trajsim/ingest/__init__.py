"""Real records -> the canonical event table (trajsim/events.py), whatever shape they arrive in.

Each format has one reader module that plans its work as steps (one per table, or per batch of
FHIR files). The pipeline here runs the steps one at a time, spilling each step's candidate events
to Parquet parts so memory holds one step's worth, then, bucket of patients by bucket, resolves
cross-file references (a medication's indication), sorts, and collects or writes the result
atomically.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
import zipfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from trajsim.atomic import atomic_writer
from trajsim.events import CAUSE_OF_DEATH, DEATH, EVENT_SCHEMA, EventTableError, validate_events
from trajsim.ingest import fhir, meds, omop, synthea_csv
from trajsim.ingest.common import (
    IngestError, IngestReport, Step, TableCounts, candidates, lookup, sort_events, source_files,
)
from trajsim.ingest.meds import write_meds
from trajsim.vocab.local import ALL_SYSTEM_URIS, CODES_SCHEMA, CODES_SUFFIX, LOCAL, LOCAL_URI_PREFIX, codes_path
from trajsim.vocab.local import read_codes as read_codes_file

__all__ = ["FORMATS", "IngestError", "IngestReport", "TableCounts", "detect_format", "ingest", "load_events", "load_records",
           "read_codes", "read_events", "write_meds"]

READERS: dict[str, Callable[[Path, Path], list[Step]]] = {
    "meds": meds.plan,
    "omop": omop.plan,
    "fhir": fhir.plan,
    "synthea-csv": synthea_csv.plan,
}
FORMATS = tuple(READERS)
CANONICAL = "events"
EVENTS_PER_BUCKET = 500_000
Progress = Callable[[int, int, str], None]


def _check_format(format: str) -> None:
    if format not in READERS:
        raise IngestError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")


def _spill(format: str, source: Path, workdir: Path, report: IngestReport,
           progress: Progress | None) -> tuple[list[pl.LazyFrame], pl.LazyFrame]:
    """Run the reader's steps, writing each step's candidate events to a Parquet part in `workdir`;
    return the finished event table as lazy buckets of whole patients, each sorted, and its codes
    table (see `_codes`).

    A global sort would hold every event in memory, so events are first split by subject_id into
    buckets of about EVENTS_PER_BUCKET and each bucket is sorted on its own. A medication and the
    condition it treats belong to one patient, so the indication lookup stays within a bucket."""
    steps = READERS[format](source, workdir)
    for number, (label, step) in enumerate(steps):
        try:
            output = step(report)
            frames = [output] if isinstance(output, pl.DataFrame | pl.LazyFrame) else output
            for chunk, frame in enumerate(frames):
                candidates(frame).sink_parquet(workdir / f"part-{number:06d}-{chunk:04d}.parquet")
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException) as exc:  # a panic: polars on a corrupt file
            raise IngestError(f"{label}: {str(exc).splitlines()[0]}") from None
        if progress is not None:
            progress(number + 1, len(steps), label)
    parts = pl.scan_parquet(workdir / "part-*.parquet")
    total = parts.select(pl.len()).collect().item()
    if total == 0:
        reasons = Counter()
        for counts in report.tables.values():
            reasons.update(counts.dropped)
        why = "; ".join(f"{reason}: {count:,}" for reason, count in reasons.most_common(3))
        raise IngestError(f"{source}: no event kept of {report.rows_read:,} rows read" + (f" ({why})" if why else ""))
    buckets = max(1, -(-total // EVENTS_PER_BUCKET))
    if buckets == 1:
        return [_finish(parts)], _codes(parts)
    paths = [workdir / f"bucket-{number:05d}.parquet" for number in range(buckets)]
    pl.collect_all([parts.filter(pl.col("subject_id") % buckets == number).sink_parquet(path, lazy=True)
                    for number, path in enumerate(paths)])
    return [_finish(pl.scan_parquet(path)) for path in paths], _codes(parts)


def _codes(candidates: pl.LazyFrame) -> pl.LazyFrame:
    """One row per code the events use (structural TRAJSIM codes aside): the source's description,
    kind and FHIR system URI, the source codes behind it and its event count (schema CODES_SCHEMA)."""
    system = pl.col("code").str.splitn("/", 3)
    uri = pl.when(system.struct.field("field_0") == LOCAL).then(pl.lit(LOCAL_URI_PREFIX) + system.struct.field("field_1"))
    uri = uri.otherwise(lookup(system.struct.field("field_0"), ALL_SYSTEM_URIS))
    return (candidates.filter(~pl.col("code").str.starts_with("TRAJSIM/"))
            .group_by("code").agg(
                pl.col("_description").drop_nulls().first().alias("description"),
                pl.col("_domain").drop_nulls().first().alias("domain"),
                pl.col("_source_code").drop_nulls().unique().sort().alias("source_codes"),
                pl.len().cast(pl.UInt64).alias("events"))
            .with_columns(uri.alias("system_uri"))
            .select(list(CODES_SCHEMA)).sort("code"))


def code_prefix(code: pl.Expr) -> pl.Expr:
    """What the ingest report counts events by: the code system, and for local codes the scheme
    (`LOCAL/MEDS-LAB`)."""
    parts = code.str.splitn("/", 3)
    system = parts.struct.field("field_0")
    return pl.when(system == LOCAL).then(system + "/" + parts.struct.field("field_1")).otherwise(system)


def _finish(candidates: pl.LazyFrame) -> pl.LazyFrame:
    """Canonical events from candidates: a medication's `_reason_ref` names the condition it treats,
    whose code becomes the medication event's text; a death takes as its text the cause a
    cause-of-death record states, which then stands only where no death is recorded; sorted."""
    indications = (candidates.filter(pl.col("_rid").is_not_null())
                   .select(pl.col("_rid").alias("_reason_ref"), pl.col("code").alias("_indication"))
                   .unique("_reason_ref", keep="first"))
    causes = (candidates.filter(pl.col("code") == CAUSE_OF_DEATH).group_by("subject_id")
              .agg(pl.col("text").drop_nulls().first().alias("_cause")))
    died = candidates.filter(pl.col("code") == DEATH).select("subject_id").unique().with_columns(_died=pl.lit(True))
    is_death = pl.col("code") == DEATH
    events = (candidates.join(indications, on="_reason_ref", how="left", maintain_order="left")
              .join(causes, on="subject_id", how="left", maintain_order="left")
              .join(died, on="subject_id", how="left", maintain_order="left")
              .filter((pl.col("code") != CAUSE_OF_DEATH) | pl.col("_died").is_null())
              .with_columns(pl.when(is_death).then(pl.coalesce("text", "_cause"))
                            .otherwise(pl.coalesce("text", "_indication")).alias("text"))
              .select(list(EVENT_SCHEMA)))
    return sort_events(events)


def read_events(format: str, source: Path) -> pl.DataFrame:
    """The canonical event table of `source` read as `format` (one of FORMATS)."""
    return _read(format, source)[0]


def _read(format: str, source: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The event table and codes table of `source` read as `format`, in one pass."""
    _check_format(format)
    report = IngestReport(format, Path(source))
    with tempfile.TemporaryDirectory(prefix="trajsim-ingest-") as workdir:
        buckets, codes = _spill(format, Path(source), Path(workdir), report, None)
        return pl.concat([bucket.collect() for bucket in buckets]), codes.collect()


def read_codes(format: str, source: Path) -> pl.DataFrame:
    """The codes table (trajsim/vocab/local.py CODES_SCHEMA) of `source` read as `format`."""
    _check_format(format)
    report = IngestReport(format, Path(source))
    with tempfile.TemporaryDirectory(prefix="trajsim-ingest-") as workdir:
        return _spill(format, Path(source), Path(workdir), report, None)[1].collect()


def ingest(format: str, source: Path, out: Path, progress: Progress | None = None) -> IngestReport:
    """Read `source` as `format` and write its event table to the Parquet file `out`, one row
    group per bucket of patients (see `_spill`), so memory holds one bucket at a time, and its codes
    table (descriptions of the source's codes) beside it (`trajsim.vocab.local.codes_path`).

    `out` appears only when the whole input was read; on IngestError nothing is written.
    """
    _check_format(format)
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    report = IngestReport(format, source)
    _check_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ingest-", dir=out.parent) as workdir:
        buckets, codes = _spill(format, source, Path(workdir), report, progress)
        codes = codes.collect()
        with atomic_writer(codes_path(out)) as handle:
            codes.write_parquet(handle, compression="zstd")
        with atomic_writer(out) as handle:
            writer = None
            for bucket in buckets:
                table = bucket.collect().to_arrow()
                writer = writer or pq.ParquetWriter(handle, table.schema, compression="zstd")
                writer.write_table(table)
            writer.close()
    totals = pl.scan_parquet(out).select(pl.len(), pl.col("subject_id").n_unique()).collect()
    report.events, report.subjects = totals.row(0)
    prefixes = (pl.scan_parquet(out).group_by(code_prefix(pl.col("code")).alias("prefix")).len()
                .sort("len", "prefix", descending=[True, False]).collect())
    report.prefixes = dict(prefixes.iter_rows())
    report.seconds = time.perf_counter() - started
    return report


def _check_output(out: Path) -> None:
    """Refuse an output path that cannot become the events file, before any work is done."""
    if out.is_symlink():
        raise IngestError(f"{out}: is a symbolic link; name a new or regular file to write the events to")
    if out.is_dir():
        raise IngestError(f"{out}: is a folder; --out names the Parquet file to write the events to")
    blocking = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise IngestError(f"{out}: {blocking} is a file, not a folder")


def _parquet_columns(path: Path) -> list[str]:
    return pl.scan_parquet(path).collect_schema().names()


def detect_format(source: Path) -> str:
    """Which reader fits `source`: `events` (canonical Parquet), or one of FORMATS."""
    source = Path(source)
    if source.is_dir():
        names = {p.name.lower() for p in source.iterdir()}
        parquet = sorted(p for p in source.rglob("*.parquet") if not p.name.endswith(CODES_SUFFIX))
        if parquet:
            first = parquet[0]
        elif "person.csv" in names or any(n.endswith(".zip") for n in names):
            return "omop"
        elif {"patients.csv", "encounters.csv"} <= names:
            return "synthea-csv"
        elif any(n.endswith(fhir.SUFFIXES) for n in names) or any(source.rglob("*.json*")):
            return "fhir"
        else:
            raise IngestError(f"{source}: cannot tell the input format; pass --format ({', '.join(FORMATS)})")
    elif not source.is_file():
        raise IngestError(f"{source}: no such file or folder")
    else:
        first = source
    if first.name.endswith(".parquet"):
        columns = set(_parquet_columns(first))
        return CANONICAL if set(EVENT_SCHEMA) <= columns else "meds"
    if first.name.endswith(fhir.SUFFIXES):
        return "fhir"
    if zipfile.is_zipfile(first):
        return "omop"
    raise IngestError(f"{source}: cannot tell the input format; pass --format ({', '.join(FORMATS)})")


def load_events(source: Path, format: str | None = None) -> pl.DataFrame:
    """The canonical event table from `source`: an events Parquet file or folder of parts (as
    `trajsim generate` writes to out/events/), or records in any of FORMATS (detected if not given)."""
    return load_records(source, format)[0]


def load_records(source: Path, format: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`load_events` and the codes table naming the source's codes (for events Parquet, the
    `<stem>.codes.parquet` files `trajsim ingest` writes beside them; empty when there are none)."""
    source = Path(source)
    format = format or detect_format(source)
    if format != CANONICAL:
        return _read(format, source)
    parts = [p for p in source_files(source, (".parquet",)) if not p.name.endswith(CODES_SUFFIX)]
    codes = [read_codes_file(codes_path(p)) for p in parts if codes_path(p).is_file()]
    try:
        events = validate_events(pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed"), str(source))
    except EventTableError as exc:
        raise IngestError(str(exc)) from None
    return events, pl.concat([pl.DataFrame(schema=CODES_SCHEMA), *codes]).unique("code", keep="first", maintain_order=True)
