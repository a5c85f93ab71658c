"""Synthea CSV export (patients.csv, encounters.csv, conditions.csv, ...) -> candidate events.

Synthea's CSV ids are the same UUIDs its FHIR export uses, and both readers hash them the same way,
so one Synthea patient gets one subject_id whichever export it is read from. Codes carry no system
column in most Synthea versions: each table's system is fixed (conditions and procedures SNOMED CT,
medications RxNorm, immunizations CVX, observations LOINC); a `SYSTEM` column overrides it.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import polars as pl

from trajsim.events import (
    BIRTH, CONDITION_END, DEATH, MEDICATION_END, SEX_FEMALE, SEX_MALE, VISIT_END, VISIT_START_PREFIX,
)
from trajsim.ingest.common import (
    ENCOUNTER_CLASS, MISSING_CODE, SYSTEM_BY_URI, SYSTEM_BY_VOCABULARY, UNKNOWN_CLASS, IngestError, IngestReport,
    Step, drop_reason, event_rows, keep_rows, lookup, parse_time, scan_table, stable_ids,
)

REQUIRED_TABLES = ("patients", "encounters")
# table -> (default code system, time column, end column, end code)
CODED_TABLES = {
    "conditions": ("SNOMED", "START", "STOP", CONDITION_END),
    "medications": ("RXNORM", "START", "STOP", MEDICATION_END),
    "procedures": ("SNOMED", "START", None, None),
    "immunizations": ("CVX", "DATE", None, None),
    "observations": ("LOINC", "DATE", None, None),
}
_SYSTEMS = {**SYSTEM_BY_URI, **SYSTEM_BY_VOCABULARY, "SNOMED-CT": "SNOMED"}


def plan(source: Path, _workdir: Path) -> list[Step]:
    """Patients, encounters, then each clinical table present in the export folder."""
    if not source.is_dir():
        raise IngestError(f"{source}: a Synthea CSV export is a folder of CSV files")
    files = {path.stem.lower(): path for path in source.glob("*.csv")}
    missing = [name for name in REQUIRED_TABLES if name not in files]
    if missing:
        raise IngestError(f"{source}: missing table(s) {', '.join(n + '.csv' for n in missing)} of a Synthea CSV export")
    steps: list[Step] = [(str(files["patients"]), partial(_patients, files["patients"])),
                         (str(files["encounters"]), partial(_encounters, files["encounters"]))]
    steps += [(str(files[name]), partial(_coded, files[name], name)) for name in CODED_TABLES if name in files]
    return steps


def _scan(path: Path, required: tuple[str, ...], dates: tuple[str, ...]) -> pl.LazyFrame:
    return scan_table(path, required, dates, str.upper)


def _patients(path: Path, report: IngestReport) -> pl.LazyFrame:
    rows = _scan(path, ("ID", "BIRTHDATE", "GENDER"), ("BIRTHDATE", "DEATHDATE"))
    subject, born = stable_ids(pl.col("ID")), parse_time(pl.col("BIRTHDATE"))
    rows = keep_rows(rows, drop_reason(pl.col("ID"), born, pl.lit(BIRTH)), "patients", report)
    sex = lookup(pl.col("GENDER").str.to_uppercase(), {"F": SEX_FEMALE, "M": SEX_MALE})
    return event_rows(
        rows,
        {"subject_id": subject, "time": born, "code": pl.lit(BIRTH)},
        {"subject_id": subject, "time": pl.when(sex.is_not_null()).then(born), "code": sex},
        {"subject_id": subject, "time": parse_time(pl.col("DEATHDATE")), "code": pl.lit(DEATH)},
    )


def _encounters(path: Path, report: IngestReport) -> pl.LazyFrame:
    rows = _scan(path, ("ID", "START", "PATIENT", "ENCOUNTERCLASS"), ("START", "STOP"))
    encounter_class = lookup(pl.col("ENCOUNTERCLASS").str.to_lowercase(), ENCOUNTER_CLASS)
    start = parse_time(pl.col("START"))
    unmapped = (encounter_class.is_null(), UNKNOWN_CLASS)
    rows = keep_rows(rows, drop_reason(pl.col("PATIENT"), start, encounter_class, unmapped), "encounters", report)
    visit = {"subject_id": stable_ids(pl.col("PATIENT")), "encounter_id": stable_ids(pl.col("ID"))}
    encounter_type = pl.lit("SNOMED/") + pl.col("CODE") if "CODE" in rows.collect_schema().names() else pl.lit(None)
    return event_rows(
        rows,
        {**visit, "time": start, "code": pl.lit(VISIT_START_PREFIX) + encounter_class},
        {**visit, "time": pl.when(encounter_type.is_not_null()).then(start), "code": encounter_type},
        {**visit, "time": parse_time(pl.col("STOP")), "code": pl.lit(VISIT_END)},
    )


def _coded(path: Path, table: str, report: IngestReport) -> pl.LazyFrame:
    system, time_column, end_column, end_code = CODED_TABLES[table]
    dates = (time_column,) + ((end_column,) if end_column else ())
    rows = _scan(path, (time_column, "PATIENT", "CODE"), dates)
    columns = rows.collect_schema().names()
    systems = lookup(pl.col("SYSTEM"), _SYSTEMS) if "SYSTEM" in columns else pl.lit(system)
    code = systems + "/" + pl.col("CODE")
    time = parse_time(pl.col(time_column))
    no_code = (pl.col("CODE").is_null(), MISSING_CODE)
    rows = keep_rows(rows, drop_reason(pl.col("PATIENT"), time, code, no_code), table, report)
    fact = {"subject_id": stable_ids(pl.col("PATIENT")), "time": time, "code": code,
            "encounter_id": stable_ids(pl.col("ENCOUNTER")) if "ENCOUNTER" in columns else pl.lit(None)}
    if table == "observations" and "VALUE" in columns:
        number = pl.col("VALUE").cast(pl.Float64, strict=False)
        units = pl.col("UNITS") if "UNITS" in columns else pl.lit(None)
        fact |= {"numeric_value": number, "unit": pl.when(number.is_not_null()).then(units),
                 "text": pl.when(number.is_null()).then(pl.col("VALUE"))}
    if table == "medications" and "REASONCODE" in columns:
        fact["text"] = pl.lit("SNOMED/") + pl.col("REASONCODE")
    events = [fact]
    if end_column:
        events.append({**fact, "time": parse_time(pl.col(end_column)), "code": pl.lit(end_code), "text": code})
    return event_rows(rows, *events)
