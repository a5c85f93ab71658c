"""OMOP CDM 5.3 / 5.4 (a folder of CSV tables, or a zip of one) -> candidate events.

Each fact's code is the first of: the standard concept (`*_concept_id`) as CONCEPT names it, the
source concept (`*_source_concept_id`) as CONCEPT names it, the source value (`*_source_value`) as
a local code `LOCAL/<CDM>-<table>/<value>`, the bare concept id `LOCAL/OMOP/<id>`. Concepts of
vocabularies trajsim does not know are local codes `LOCAL/<vocabulary_id>/<concept_code>`. The code
table beside the events keeps the concept name and, for a standard concept, the source codes behind
it. person_id and visit_occurrence_id are signed 64-bit integers; their bits are read as unsigned, so
a non-negative id is kept as it is and a negative one becomes id + 2^64 (write_meds gives it back).
Table and column names may be upper or lower case.
"""

from __future__ import annotations

import re
import shutil
import zipfile
import zlib
from functools import partial
from pathlib import Path
from typing import NamedTuple

import polars as pl

from trajsim.events import (
    BIRTH, CONDITION_END, DEATH, MEDICATION_END, SEX_FEMALE, SEX_MALE, VISIT_END, VISIT_START_PREFIX,
)
from trajsim.ingest.common import (
    OMOP_VISIT_CLASS, SYSTEM_BY_VOCABULARY, UNKNOWN_CLASS, IngestError, IngestReport, Step, drop_reason,
    event_rows, keep_rows, lookup, parse_time, scan_table,
)
from trajsim.vocab.local import local_codes

NO_CONCEPT = "no concept id or source value"
# table -> (column prefix of the concept, start date prefix, end date prefix, end code, kind of fact)
CLINICAL_TABLES = {
    "condition_occurrence": ("condition", "condition_start", "condition_end", CONDITION_END, "condition"),
    "drug_exposure": ("drug", "drug_exposure_start", "drug_exposure_end", MEDICATION_END, "medication"),
    "procedure_occurrence": ("procedure", "procedure", None, None, "procedure"),
    "measurement": ("measurement", "measurement", None, None, "lab"),
    "observation": ("observation", "observation", None, None, None),
    "device_exposure": ("device", "device_exposure_start", "device_exposure_end", None, None),
    "visit_detail": ("visit_detail", "visit_detail_start", None, None, None),
    "note": ("note_type", "note", None, None, None),
}
GENDER = {8507: SEX_MALE, 8532: SEX_FEMALE}
# A zip may expand to at most this many times its own size (CSV tables compress 5-20x), with a floor
# for small archives, so a crafted archive cannot fill the disk while it is extracted.
MAX_EXPANSION = 100
MIN_EXTRACT_BYTES = 256 * 2**20


def plan(source: Path, workdir: Path) -> list[Step]:
    """Person, death, visits, then each clinical table present."""
    tables = _tables(source, workdir)
    if "person" not in tables:
        raise IngestError(f"{source}: missing table PERSON.csv of an OMOP CDM")
    concept = tables.get("concept")
    cdm = _cdm_name(tables.get("cdm_source"))
    steps: list[Step] = [(tables["person"].where, partial(_person, tables["person"]))]
    if "death" in tables:
        steps.append((tables["death"].where, partial(_death, tables["death"])))
    if "visit_occurrence" in tables:
        steps.append((tables["visit_occurrence"].where, partial(_visits, tables["visit_occurrence"])))
    steps += [(tables[name].where, partial(_clinical, tables[name], name, concept, cdm))
              for name in CLINICAL_TABLES if name in tables]
    return steps


class _Table(NamedTuple):
    path: Path   # readable CSV (extracted, for a zip)
    where: str   # what error messages call it: the path, or `archive.zip/TABLE.csv`


def _tables(source: Path, workdir: Path) -> dict[str, _Table]:
    """Lower-case table name -> table, extracting a zip into `workdir` first."""
    if source.is_file():
        if not zipfile.is_zipfile(source):
            problem = "truncated or corrupt zip file" if source.suffix.lower() == ".zip" else "not a zip file"
            raise IngestError(f"{source}: {problem}; an OMOP CDM is a folder of CSV tables or a zip of one")
        return _extract(source, workdir / "omop")
    if not source.is_dir():
        raise IngestError(f"{source}: no such file or folder")
    paths = [path for path in sorted(source.rglob("*.csv")) if "__MACOSX" not in path.parts and not path.name.startswith(".")]
    _refuse_twice(source, [path.relative_to(source).as_posix() for path in paths])
    return {path.stem.lower(): _Table(path, str(path)) for path in paths}


def _refuse_twice(source: Path, members: list[str]) -> None:
    """An OMOP CDM holds each table once: two files of one table name are refused, naming both."""
    seen: dict[str, str] = {}
    for member in members:
        name = Path(member).stem.lower()
        if name in seen:
            raise IngestError(f"{source}: holds two {name} tables ({seen[name]} and {member}); keep one CDM per input")
        seen[name] = member


def _extract(source: Path, folder: Path) -> dict[str, _Table]:
    """Extract the CSV members of an OMOP zip into `folder`, streaming each member within the expansion
    limit; a damaged member (bad CRC, broken deflate stream) is an IngestError naming it."""
    budget = max(MAX_EXPANSION * source.stat().st_size, MIN_EXTRACT_BYTES)
    member = "(archive directory)"
    try:
        with zipfile.ZipFile(source) as archive:
            members = [info for info in archive.infolist() if info.filename.lower().endswith(".csv")
                       and "__MACOSX" not in info.filename and not Path(info.filename).name.startswith(".")]
            _refuse_twice(source, [info.filename for info in members])
            folder.mkdir(parents=True, exist_ok=True)
            for info in members:
                member = info.filename
                with archive.open(info) as packed, open(folder / Path(member).name, "wb") as unpacked:
                    while chunk := packed.read(2**20):
                        budget -= len(chunk)
                        if budget < 0:
                            raise IngestError(f"{source}/{member}: the archive expands to more than {MAX_EXPANSION}x its "
                                              "size; extract it yourself and ingest the folder if it is genuine")
                        unpacked.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise IngestError(f"{source}/{member}: truncated or corrupt zip member ({exc})") from None
    return {path.stem.lower(): _Table(path, f"{source}/{path.name}") for path in sorted(folder.glob("*.csv"))}


def _scan(table: _Table, required: tuple[str, ...], dates: tuple[str, ...]) -> pl.LazyFrame:
    return scan_table(table.path, required, dates, str.lower, table.where)


def _cdm_name(table: _Table | None) -> str:
    """The scheme prefix of this CDM's source values: CDM_SOURCE's abbreviation, else `OMOP`."""
    if table is not None:
        names = _scan(table, (), ()).collect().to_dicts()
        name = (names[0].get("cdm_source_abbreviation") or "") if names else ""
        name = re.sub(r"[^A-Z0-9]+", "-", name.upper()).strip("-")
        if name:
            return name
    return "OMOP"


def _integer(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Int64, strict=False)


def _id(column: str) -> pl.Expr:
    """A signed OMOP id as the event table's unsigned id (the same 64 bits)."""
    return _integer(column).reinterpret(signed=False)


def _when(prefix: str) -> pl.Expr:
    """A row's time from `<prefix>_datetime`, else `<prefix>_date`."""
    return pl.coalesce(parse_time(pl.col(f"{prefix}_datetime")), parse_time(pl.col(f"{prefix}_date")))


def _person(table: _Table, report: IngestReport) -> pl.LazyFrame:
    rows = _scan(table, ("person_id", "gender_concept_id", "year_of_birth"), ("birth_datetime",))
    for part in ("month_of_birth", "day_of_birth"):
        if part not in rows.collect_schema().names():
            rows = rows.with_columns(pl.lit(None, pl.String).alias(part))
    born = pl.coalesce(
        parse_time(pl.col("birth_datetime")),
        pl.datetime(_integer("year_of_birth"), _integer("month_of_birth").fill_null(1),
                    _integer("day_of_birth").fill_null(1), time_unit="us"),
    )
    rows = keep_rows(rows, drop_reason(_integer("person_id"), born, pl.lit(BIRTH)), "person", report)
    sex = lookup(_integer("gender_concept_id"), GENDER)
    subject = _id("person_id")
    return event_rows(rows, {"subject_id": subject, "time": born, "code": pl.lit(BIRTH)},
                      {"subject_id": subject, "time": pl.when(sex.is_not_null()).then(born), "code": sex})


def _death(table: _Table, report: IngestReport) -> pl.LazyFrame:
    rows = _scan(table, ("person_id", "death_date"), ("death_date", "death_datetime"))
    died = _when("death")
    rows = keep_rows(rows, drop_reason(_integer("person_id"), died, pl.lit(DEATH)), "death", report)
    return event_rows(rows, {"subject_id": _id("person_id"), "time": died, "code": pl.lit(DEATH)})


# Days after its start day an outpatient visit (overnight observation) or an emergency visit (boarding
# included) may end; one that ends later is a stay.
LONGEST_BEFORE_STAY = {"AMB": 1, "EMER": 3}


def _visits(table: _Table, report: IngestReport) -> pl.LazyFrame:
    dates = ("visit_start_date", "visit_start_datetime", "visit_end_date", "visit_end_datetime")
    rows = _scan(table, ("visit_occurrence_id", "person_id", "visit_concept_id", "visit_start_date"), dates)
    start = _when("visit_start")
    named = lookup(_integer("visit_concept_id"), OMOP_VISIT_CLASS)
    # A visit that ends later than the day after it began is a hospital stay, whatever place it names:
    # the MIMIC-IV ETL gives an admission its admission location (8870 Emergency Room - Hospital,
    # 581385 Observation Room, 8883 Ambulatory Surgical Center: 112 of its 138 admissions, 5-8 days
    # on average), which MEDS of the same people records as a hospital admission.
    days = (_when("visit_end").dt.date() - start.dt.date()).dt.total_days()
    encounter_class = pl.when(days > lookup(named, LONGEST_BEFORE_STAY)).then(pl.lit("IMP")).otherwise(named)
    unmapped = (encounter_class.is_null(), UNKNOWN_CLASS)
    rows = keep_rows(rows, drop_reason(_integer("person_id"), start, encounter_class, unmapped), "visit_occurrence", report)
    visit = {"subject_id": _id("person_id"), "encounter_id": _id("visit_occurrence_id")}
    return event_rows(rows, {**visit, "time": start, "code": pl.lit(VISIT_START_PREFIX) + encounter_class},
                      {**visit, "time": _when("visit_end"), "code": pl.lit(VISIT_END)})


def _concepts(table: _Table | None) -> pl.LazyFrame:
    """concept_id -> SYSTEM/CODE (a local code for vocabularies trajsim does not know), its name and
    the UCUM unit code."""
    if table is None:
        return pl.LazyFrame(schema={"concept_id": pl.Int64, "code": pl.String, "name": pl.String, "ucum": pl.String})
    concepts = _scan(table, ("concept_id", "vocabulary_id", "concept_code"), ())
    if "concept_name" not in concepts.collect_schema().names():
        concepts = concepts.with_columns(concept_name=pl.lit(None, pl.String))
    system = lookup(pl.col("vocabulary_id").str.to_uppercase(), SYSTEM_BY_VOCABULARY)
    code = pl.coalesce(system + "/" + pl.col("concept_code"), local_codes(pl.col("vocabulary_id"), pl.col("concept_code")))
    return concepts.select(
        _integer("concept_id").alias("concept_id"), code.alias("code"), pl.col("concept_name").alias("name"),
        pl.when(pl.col("vocabulary_id") == "UCUM").then(pl.col("concept_code")).alias("ucum"),
    ).unique("concept_id", keep="first")


def _clinical(source: _Table, table: str, concept: _Table | None, cdm: str, report: IngestReport) -> pl.LazyFrame:
    domain, start_prefix, end_prefix, end_code, kind = CLINICAL_TABLES[table]
    dates = tuple(f"{p}_{s}" for p in filter(None, (start_prefix, end_prefix)) for s in ("date", "datetime"))
    rows = _scan(source, ("person_id", f"{domain}_concept_id", f"{start_prefix}_date"), dates)
    optional = ("visit_occurrence_id", f"{domain}_source_concept_id", f"{domain}_source_value", "value_as_number",
                "value_as_string", "value_as_concept_id", "unit_concept_id", "unit_source_value", "note_text")
    columns = rows.collect_schema().names()
    rows = rows.with_columns(pl.lit(None, pl.String).alias(name) for name in optional if name not in columns)
    concepts = _concepts(concept)
    for role, column in (("standard", f"{domain}_concept_id"), ("source", f"{domain}_source_concept_id"),
                         ("unit", "unit_concept_id"), ("value", "value_as_concept_id")):
        rows = rows.with_columns(_integer(column).alias(f"_{role}_id")).join(
            concepts.rename({"concept_id": f"_{role}_id", "code": f"_{role}_code", "name": f"_{role}_name",
                             "ucum": f"_{role}_ucum"}),
            on=f"_{role}_id", how="left", maintain_order="left")
    source_value = pl.col(f"{domain}_source_value").str.strip_chars()
    source_value = pl.when(source_value != "").then(local_codes(pl.lit(f"{cdm}-{table}"), source_value))
    concept_id = pl.when(pl.col("_standard_id") != 0).then("_standard_id").otherwise(
        pl.when(pl.col("_source_id") != 0).then("_source_id"))
    bare_id = local_codes(pl.lit("OMOP"), concept_id.cast(pl.String))
    code = pl.coalesce("_standard_code", "_source_code", source_value, bare_id)
    behind = pl.when(pl.col("_standard_code").is_not_null()).then(pl.coalesce("_source_code", source_value))
    start = _when(start_prefix)
    rows = keep_rows(rows, drop_reason(_integer("person_id"), start, code, (code.is_null(), NO_CONCEPT)), table, report)
    number = pl.col("value_as_number").cast(pl.Float64, strict=False)
    fact = {"subject_id": _id("person_id"), "time": start, "code": code,
            "encounter_id": _id("visit_occurrence_id"), "numeric_value": number,
            "unit": pl.when(number.is_not_null()).then(pl.coalesce("_unit_ucum", "unit_source_value")),
            "text": pl.coalesce("note_text", "value_as_string", "_value_code"),
            "_description": pl.coalesce("_standard_name", "_source_name"), "_domain": pl.lit(kind),
            "_source_code": pl.coalesce(behind, bare_id.str.replace("^LOCAL/OMOP/", "OMOP concept "))}
    events = [fact]
    if end_code:
        events.append({**fact, "time": _when(end_prefix), "code": pl.lit(end_code), "text": code,
                       "numeric_value": pl.lit(None), "unit": pl.lit(None), "_description": pl.lit(None),
                       "_domain": pl.lit(None), "_source_code": pl.lit(None)})
    return event_rows(rows, *events)
