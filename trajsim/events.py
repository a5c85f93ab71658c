"""The canonical event table: the one schema every stage reads and writes.

One row per clinical fact, in the spirit of MEDS. Readers (ingest) produce it, the engine emits it,
the model tokenizes it, evaluation and the FHIR exporter consume it. The schema is declared here once
and checked at stage boundaries with `validate_events`.

Codes are `SYSTEM/CODE` (`SNOMED/44054006`, `LOINC/4548-4`, `RXNORM/860975`, `CVX/140`,
`ICD10CM/E11.9`), a source's own codes as `LOCAL/<scheme>/<code>`, plus `TRAJSIM/...` structural
codes for the shape of a record.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

import polars as pl

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "subject_id": pl.UInt64(),
    "time": pl.Datetime("us"),
    "encounter_id": pl.UInt64(),
    "code": pl.String(),
    "numeric_value": pl.Float64(),
    "unit": pl.String(),
    "text": pl.String(),
}
REQUIRED_NON_NULL = ("subject_id", "time", "code")
# The curated systems, the other standard systems ingest keeps (trajsim/vocab/local.py), LOCAL/<scheme>/<code>
# for a source's own codes, and trajsim's structural codes.
CODE_SYSTEMS = ("SNOMED", "ICD10CM", "LOINC", "RXNORM", "CVX", "ICD9CM", "ICD9PCS", "ICD10PCS", "NDC", "CPT4", "HCPCS",
                "ATC", "LOCAL", "TRAJSIM")

# Structural codes. A visit opens with VISIT_START + class and closes with VISIT_END, both carrying
# the encounter_id; CONDITION_END / MEDICATION_END carry the ended code in `text`. A visit-type fact
# (an encounter_type code) may name in `text` the known condition the visit is for (an exacerbation).
BIRTH = "TRAJSIM/birth"
DEATH = "TRAJSIM/death"  # `text` names the cause (a condition code)
CAUSE_OF_DEATH = "LOINC/69453-9"  # Cause of death [US Standard Certificate of Death], as records (FHIR) state it
SMOKING_STATUS = "LOINC/72166-2"  # Tobacco smoking status: `text` is the SNOMED CT answer
PREGNANCY_STATUS = "LOINC/82810-3"  # Pregnancy status: `text` is the SNOMED CT answer (pregnant, not pregnant)
WELL_CHILD = "SNOMED/410620009"  # Well child visit: the visit type of a child's preventive visit
WELL_ADULT = "SNOMED/162673000"  # General examination of patient: the visit type of an adult's preventive exam
FOLLOW_UP_VISIT = "SNOMED/390906007"  # Follow-up encounter: the visit type of an office visit for known conditions
SEX_FEMALE = "TRAJSIM/sex/F"
SEX_MALE = "TRAJSIM/sex/M"
VISIT_START_PREFIX = "TRAJSIM/visit/"
VISIT_END = "TRAJSIM/visit_end"
CONDITION_END = "TRAJSIM/condition_end"
MEDICATION_END = "TRAJSIM/medication_end"
ENCOUNTER_CLASSES = ("AMB", "EMER", "IMP")


def visit_start_code(encounter_class: str) -> str:
    """The structural code that opens a visit of `encounter_class` (AMB, EMER or IMP)."""
    return VISIT_START_PREFIX + encounter_class


class Event(NamedTuple):
    """One row of the event table, as the engine builds it before it becomes a frame."""

    subject_id: int
    time: datetime
    encounter_id: int | None
    code: str
    numeric_value: float | None = None
    unit: str | None = None
    text: str | None = None


class EventTableError(ValueError):
    """An event table that breaks the schema; the message names the column and the first bad row."""


def events_frame(events: Iterable[Event]) -> pl.DataFrame:
    """Build a schema-conformant frame from engine events (kept in the order given)."""
    rows = list(events)
    columns = {name: [row[i] for row in rows] for i, name in enumerate(EVENT_SCHEMA)}
    return pl.DataFrame(columns, schema=EVENT_SCHEMA)


def empty_events() -> pl.DataFrame:
    """A zero-row frame with the canonical schema."""
    return pl.DataFrame(schema=EVENT_SCHEMA)


def _cast_lenient(column: pl.Series, dtype: pl.DataType) -> pl.Series:
    """Cast, turning values that do not convert into nulls (so the caller can point at them)."""
    if column.dtype == pl.String and isinstance(dtype, pl.Datetime):
        return column.str.to_datetime(time_unit="us", strict=False).dt.replace_time_zone(None)
    return column.cast(dtype, strict=False)


def validate_events(frame: pl.DataFrame, source: str = "event table") -> pl.DataFrame:
    """Return `frame` cast to the canonical schema, or raise EventTableError naming what is wrong.

    Checks: every column present, each castable to its type, no nulls where a fact needs one, and
    every code of the form SYSTEM/CODE with a known system.
    """
    missing = [name for name in EVENT_SCHEMA if name not in frame.columns]
    if missing:
        raise EventTableError(
            f"{source}: missing column(s) {', '.join(missing)}; "
            f"the event table needs {', '.join(EVENT_SCHEMA)}"
        )
    frame = frame.select(list(EVENT_SCHEMA))
    for name, dtype in EVENT_SCHEMA.items():
        column = frame.get_column(name)
        if column.dtype == dtype:
            continue
        cast = _cast_lenient(column, dtype)
        failed = cast.is_null() & column.is_not_null()
        if failed.any():
            row = int(failed.arg_max())
            raise EventTableError(
                f"{source}: column '{name}' row {row}: value {column[row]!r} is not {dtype}"
            )
        frame = frame.with_columns(cast.alias(name))
    for name in REQUIRED_NON_NULL:
        nulls = frame.get_column(name).is_null()
        if nulls.any():
            raise EventTableError(f"{source}: column '{name}' row {int(nulls.arg_max())}: missing value")
    system = frame.get_column("code").str.split_exact("/", 1).struct.field("field_0")
    malformed = ~frame.get_column("code").str.contains("/") | ~system.is_in(CODE_SYSTEMS)
    if malformed.any():
        row = int(malformed.arg_max())
        raise EventTableError(
            f"{source}: column 'code' row {row}: {frame['code'][row]!r} is not SYSTEM/CODE "
            f"with SYSTEM one of {', '.join(CODE_SYSTEMS)}"
        )
    return frame
