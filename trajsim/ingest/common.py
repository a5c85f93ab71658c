"""What every reader shares: the error and report types, stable ids, time parsing, code-system and
encounter-class vocabularies, and the per-table bookkeeping of kept and dropped rows.

Readers turn kept source rows into *candidate events*: the canonical columns plus `_rid` (a source
resource id others may point at) and `_reason_ref` (the id of the condition a medication treats),
which the pipeline in `trajsim.ingest` resolves once all files are read.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from trajsim.events import (
    BIRTH, CODE_SYSTEMS, CONDITION_END, DEATH, EVENT_SCHEMA, MEDICATION_END, SEX_FEMALE, SEX_MALE, VISIT_END,
    VISIT_START_PREFIX,
)
from trajsim.vocab import SYSTEM_URIS
from trajsim.vocab.local import EXTRA_SYSTEM_URIS

CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    **EVENT_SCHEMA, "_rid": pl.String(), "_reason_ref": pl.String(),
    # what the codes table (trajsim/vocab/local.py) says about the event's code
    "_description": pl.String(), "_domain": pl.String(), "_source_code": pl.String(),
}
MISSING_TIME = "missing time"
MISSING_PATIENT = "missing patient id"
UNKNOWN_SYSTEM = "unknown code system"
MISSING_CODE = "missing code"
UNKNOWN_CLASS = "unmapped encounter class"

# FHIR code-system URIs (and OMOP vocabulary_id / MEDS prefixes, upper-cased) -> trajsim SYSTEM. A
# code in any other system is kept as a local code of its source (trajsim/vocab/local.py).
SYSTEM_BY_URI = {
    **{uri: system for system, uri in {**EXTRA_SYSTEM_URIS, **SYSTEM_URIS}.items()},
    "http://hl7.org/fhir/sid/icd-10-pcs": "ICD10PCS",
    "http://www.nlm.nih.gov/research/umls/hcpcs": "HCPCS",
}
SYSTEM_BY_VOCABULARY = {
    **{system: system for system in CODE_SYSTEMS if system not in ("LOCAL", "TRAJSIM")},
    "SNOMEDCT": "SNOMED", "SNOMEDCT_US": "SNOMED", "ICD-10-CM": "ICD10CM", "ICD-9-CM": "ICD9CM",
    "ICD9PROC": "ICD9PCS", "ICD-10-PCS": "ICD10PCS", "CPT": "CPT4",
}

# Encounter classes of each source -> AMB (ambulatory), EMER (emergency), IMP (inpatient).
# Home health, virtual and pre-admission visits are ambulatory care; acute, non-acute, short-stay,
# skilled-nursing and hospice stays are residential, so inpatient; an observation stay is billed as
# outpatient, so ambulatory.
ENCOUNTER_CLASS = {
    # Synthea CSV ENCOUNTERCLASS
    "wellness": "AMB", "ambulatory": "AMB", "outpatient": "AMB", "urgentcare": "AMB", "home": "AMB",
    "virtual": "AMB", "emergency": "EMER", "inpatient": "IMP", "snf": "IMP", "hospice": "IMP",
    # FHIR v3-ActCode encounter class
    "AMB": "AMB", "HH": "AMB", "VR": "AMB", "PRENC": "AMB", "OBSENC": "AMB", "FLD": "AMB",
    "EMER": "EMER", "IMP": "IMP", "ACUTE": "IMP", "NONAC": "IMP", "SS": "IMP",
}
# OMOP visit_concept_id -> class (standard Visit domain concepts).
OMOP_VISIT_CLASS = {
    9202: "AMB",       # Outpatient Visit
    581477: "AMB",     # Office Visit
    581476: "AMB",     # Home Visit
    5083: "AMB",       # Telehealth
    38004193: "AMB",   # Case Management Visit
    38004207: "AMB",   # Ambulatory Clinic / Center
    8883: "AMB",       # Ambulatory Surgical Center
    581385: "AMB",     # Observation Room (an observation stay is billed as outpatient)
    8870: "EMER",      # Emergency Room - Hospital
    9203: "EMER",      # Emergency Room Visit
    581478: "EMER",    # Ambulance Visit
    9201: "IMP",       # Inpatient Visit
    262: "IMP",        # Emergency Room and Inpatient Visit (the stay is what the record is about)
    8717: "IMP",       # Inpatient Hospital
    32037: "IMP",      # Intensive Care
    42898160: "IMP",   # Non-hospital institution Visit (nursing home, hospice)
}

# Events at one instant keep a readable order: birth and sex, then the visit opening, the facts,
# ends of conditions and medications, the visit closing, and death last.
_STRUCTURAL_RANK = {BIRTH: 0, SEX_FEMALE: 1, SEX_MALE: 1, CONDITION_END: 4, MEDICATION_END: 4,
                    VISIT_END: 5, DEATH: 6}


class IngestError(ValueError):
    """Input that cannot be read; the message names the file and, where there is one, the line or row."""


@dataclass
class TableCounts:
    """Source rows of one table (or FHIR resource type): read, kept, and dropped by reason."""

    read: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def kept(self) -> int:
        return self.read - sum(self.dropped.values())


@dataclass
class IngestReport:
    """What an ingest did: per-table row counts, the events written and how long it took."""

    format: str
    source: Path
    tables: dict[str, TableCounts] = field(default_factory=dict)
    events: int = 0
    subjects: int = 0
    prefixes: dict[str, int] = field(default_factory=dict)  # events per code system (LOCAL: per scheme)
    seconds: float = 0.0

    def table(self, name: str) -> TableCounts:
        return self.tables.setdefault(name, TableCounts())

    @property
    def rows_read(self) -> int:
        return sum(t.read for t in self.tables.values())

    @property
    def rows_kept(self) -> int:
        return sum(t.kept for t in self.tables.values())


# One unit of work for the progress bar: a label and a function giving candidate events (one frame,
# or several in turn when a step is too large for one).
Step = tuple[str, Callable[["IngestReport"], pl.DataFrame | pl.LazyFrame | Iterator[pl.DataFrame]]]


def stable_id(key: str) -> int:
    """A 63-bit id fixed by the source identifier (fits MEDS' int64 subject_id, same on every run)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1


def stable_ids(keys: pl.Expr) -> pl.Expr:
    """`stable_id` of a string column, hashing each distinct value once."""
    def hash_batch(series: pl.Series) -> pl.Series:
        distinct = series.drop_nulls().unique()
        mapping = dict(zip(distinct.to_list(), (stable_id(k) for k in distinct.to_list()), strict=True))
        return series.replace_strict(mapping, default=None, return_dtype=pl.UInt64)
    return keys.cast(pl.String).map_batches(hash_batch, return_dtype=pl.UInt64, is_elementwise=True)


def lookup(key: pl.Expr, mapping: dict, default: object = None) -> pl.Expr:
    """`mapping[key]` per row (`default` when absent). A when/then chain rather than `replace_strict`,
    which in polars 2.1 makes a streaming query hold the whole column in memory."""
    values = pl.lit(default)
    for source, target in mapping.items():
        values = pl.when(key == source).then(pl.lit(target)).otherwise(values)
    return values


def parse_time(text: pl.Expr) -> pl.Expr:
    """ISO 8601 date or date-time (offset, `Z`, or none meaning UTC; `T` or space) as naive UTC."""
    value = text.cast(pl.String).str.strip_chars().str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
    return pl.coalesce(
        value.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_unit="us")
        .dt.convert_time_zone("UTC").dt.replace_time_zone(None),
        value.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us"),
        value.str.to_datetime("%Y-%m-%dT%H:%M", strict=False, time_unit="us"),
        value.str.to_datetime("%Y-%m-%d", strict=False, time_unit="us"),
    )


def check_times(frame: pl.LazyFrame | pl.DataFrame, columns: list[str], where: str,
                row_label: Callable[[int], str]) -> None:
    """Raise IngestError naming the first row whose value in `columns` is present but not a date."""
    if not columns:
        return
    bad = {name: pl.col(name).is_not_null() & parse_time(pl.col(name)).is_null() for name in columns}
    first = (frame.lazy().with_row_index("_row").filter(pl.any_horizontal(*bad.values()))
             .select("_row", *columns, *(flag.alias(f"_bad_{name}") for name, flag in bad.items()))
             .head(1).collect())
    if first.height:
        row = first.row(0, named=True)
        name = next(name for name in columns if row[f"_bad_{name}"])
        place = f"{where} {row_label(row['_row'])}".strip()
        raise IngestError(f"{place}: {name} {row[name]!r} is not a date or date-time")


def keep_rows(rows: pl.LazyFrame, reason: pl.Expr, table: str, report: IngestReport) -> pl.LazyFrame:
    """Count `rows` of `table` and why each is dropped (`reason`, see drop_reason) into `report`;
    return the rows kept."""
    rows = rows.with_columns(reason.alias("_drop"))
    counts = report.table(table)
    for why, n in rows.group_by("_drop").len().collect().iter_rows():
        counts.read += n
        if why is not None:
            counts.dropped[why] += n
    return rows.filter(pl.col("_drop").is_null()).drop("_drop")


def candidates(frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Add any missing candidate columns as nulls and cast to the candidate schema."""
    lazy = frame.lazy()
    names = lazy.collect_schema().names()
    return lazy.select([
        (pl.col(name) if name in names else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in CANDIDATE_SCHEMA.items()
    ])


def rank(code: pl.Expr) -> pl.Expr:
    """Order of events at the same instant (see _STRUCTURAL_RANK; visit start 2, clinical facts 3)."""
    return (pl.when(code.str.starts_with(VISIT_START_PREFIX)).then(pl.lit(2, pl.UInt8))
            .otherwise(lookup(code, _STRUCTURAL_RANK, 3).cast(pl.UInt8)))


def sort_events(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Canonical order: by subject, time, then structural rank; ties keep source order."""
    return frame.sort("subject_id", "time", rank(pl.col("code")), maintain_order=True)


def source_files(source: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """`source` itself, or every file under it ending with one of `suffixes`, in name order."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise IngestError(f"{source}: no such file or folder")
    found = sorted(p for p in source.rglob("*") if p.is_file() and p.name.endswith(suffixes)
                   and not p.name.startswith("."))
    if not found:
        raise IngestError(f"{source}: no input files ({', '.join(suffixes)}) found")
    return found


def scan_table(path: Path, required: tuple[str, ...], dates: tuple[str, ...], rename: Callable[[str], str],
               where: str | None = None) -> pl.LazyFrame:
    """A CSV table as strings, column names passed through `rename`; raise IngestError naming the file
    (`where`, if it was extracted from an archive) for a missing required column or the line of the
    first unparseable date in `dates`."""
    where = where or str(path)
    rows = pl.scan_csv(path, infer_schema=False).rename(rename)
    try:
        columns = rows.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise IngestError(f"{where}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    missing = [name for name in required if name not in columns]
    if missing:
        raise IngestError(f"{where}: missing column(s) {', '.join(missing)}")
    ragged = _ragged_line(path, len(columns))
    if ragged is not None:
        line, fields = ragged
        raise IngestError(f"{where} line {line}: {fields} fields where the header has {len(columns)}")
    present = [name for name in dates if name in columns]
    check_times(rows.select(present), present, where, lambda row: f"line {row + 2}")
    return rows.with_columns(pl.lit(None, pl.String).alias(name) for name in dates if name not in columns)


def _ragged_line(path: Path, fields: int) -> tuple[int, int] | None:
    """(line number, field count) of the first line whose field count differs from the header's,
    counting commas outside quoted values; None when every line fits. Reading only some columns
    would otherwise pass a ragged row unseen."""
    lines = pl.scan_csv(path, has_header=False, separator="\x1f", quote_char=None, infer_schema=False,
                        new_columns=["line"])
    counted = pl.col("line").str.replace_all('"[^"]*"', "").str.count_matches(",") + 1
    bad = (lines.with_row_index("row").filter(counted != fields).select("row", counted.alias("fields"))
           .head(1).collect())
    return None if bad.is_empty() else (int(bad["row"][0]) + 1, int(bad["fields"][0]))


def drop_reason(subject: pl.Expr, time: pl.Expr, code: pl.Expr, *rules: tuple[pl.Expr, str]) -> pl.Expr:
    """Why a source row is left out (null when kept): no patient, no time, then each (condition,
    reason), then no code.

    `code` is the row's SYSTEM/CODE, null where the code is missing or its system is unknown, so
    the caller's rules must tell those apart before this falls back to UNKNOWN_SYSTEM."""
    reason = pl.when(subject.is_null()).then(pl.lit(MISSING_PATIENT)).when(time.is_null()).then(pl.lit(MISSING_TIME))
    for condition, text in rules:
        reason = reason.when(condition).then(pl.lit(text))
    return reason.when(code.is_null()).then(pl.lit(UNKNOWN_SYSTEM)).otherwise(pl.lit(None, pl.String))


def event_rows(rows: pl.LazyFrame, *events: dict[str, pl.Expr]) -> pl.LazyFrame:
    """Candidate events from kept source rows: one event per spec in `events` (canonical column ->
    expression) for each row, skipping those whose time is null (an optional end date)."""
    return pl.concat([candidates(rows.select(**spec)) for spec in events]).filter(pl.col("time").is_not_null())
