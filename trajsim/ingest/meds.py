"""MEDS (Medical Event Data Standard) <-> the canonical event table.

A MEDS dataset is a folder: `data/**/*.parquet` shards (`subject_id, time, code, numeric_value,
text_value`; the MEDS ETL of MIMIC-IV writes one `value` column instead), and `metadata/codes.parquet`
(`code, description, parent_codes`), `metadata/dataset.json`, `metadata/subject_splits.parquet`. A
single shard file reads too. MEDS is already one row per fact, so reading renames codes:

- `MEDS_BIRTH`/`MEDS_DEATH` -> trajsim's birth/death; `GENDER//F|M` (a static row) -> sex at birth;
  other static rows (no time) are dated at the subject's birth;
- `DIAGNOSIS//ICD//9//4019` -> `ICD9CM/401.9`, `//10//` -> `ICD10CM`; `PROCEDURE//ICD//9|10//...` ->
  `ICD9PCS`/`ICD10PCS`; `LOINC/...`, `RxNorm/...` (any known system, any case) -> `SYSTEM/CODE`;
- `HOSPITAL_ADMISSION//...`/`HOSPITAL_DISCHARGE//...` open and close an inpatient visit, `ED_REGISTRATION`/
  `ED_OUT` an emergency visit; the admission type and discharge disposition stay as local codes;
- everything else is a local code `LOCAL/<SOURCE>-<PREFIX>/<rest>` (`LAB//50912//mg/dL` ->
  `LOCAL/MEDS-LAB/50912` with unit mg/dL), SOURCE being dataset.json's `dataset_name` or `MEDS`.

Facts get the encounter_id of the visit open at their time (inpatient before emergency) unless the
shard has an `encounter_id` or `hadm_id` column. Visits are matched within one shard: MEDS keeps
a subject's rows in one shard. Writing keeps trajsim's extra columns (`encounter_id`, `unit`) and
float64 values, so a round trip loses nothing; `write_meds` to a folder writes a whole dataset.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import orjson
import polars as pl

from trajsim.atomic import atomic_writer
from trajsim.events import (
    BIRTH, DEATH, EVENT_SCHEMA, SEX_FEMALE, SEX_MALE, VISIT_END,
)
from trajsim.ingest.common import (
    MISSING_CODE, SYSTEM_BY_VOCABULARY, IngestError, IngestReport, Step, check_times, drop_reason, event_rows,
    keep_rows, lookup, parse_time, sort_events, source_files, stable_ids,
)
from trajsim.vocab.local import CODES_SCHEMA, LOCAL, local_codes

MEDS_CODES = {"MEDS_BIRTH": BIRTH, "MEDS_DEATH": DEATH}
REQUIRED = ("subject_id", "time", "code")
_SYSTEMS = {**SYSTEM_BY_VOCABULARY, LOCAL: LOCAL, "TRAJSIM": "TRAJSIM"}
# MEDS prefix -> (visit class, opens (True) or closes (False) the visit)
VISIT_CODES = {"HOSPITAL_ADMISSION": ("IMP", True), "HOSPITAL_DISCHARGE": ("IMP", False),
               "ED_REGISTRATION": ("EMER", True), "ED_OUT": ("EMER", False)}
# Prefixes whose last `//` part is the unit of the value (the MIMIC-IV MEDS ETL: LAB//<itemid>//<unit>).
UNIT_SUFFIXED = ("LAB", "SUBJECT_FLUID_OUTPUT")
NO_UNIT = "UNK"
# MEDS prefix -> the kind of fact (trajsim.vocab.DOMAINS), so the exporter writes the right resource.
DOMAINS = {"DIAGNOSIS": "condition", "PROCEDURE": "procedure", "LAB": "lab", "HCPCS": "procedure",
           "INFUSION_START": "medication", "SUBJECT_WEIGHT_AT_INFUSION": "vital"}
DEFAULT_SOURCE = "MEDS"


def plan(source: Path, _workdir: Path) -> list[Step]:
    """One step per data shard: `data/**/*.parquet` of a dataset folder, every Parquet file of any
    other folder but `metadata/`, or the one file given."""
    root = source if source.is_dir() else source.parent
    metadata = _metadata(root / "metadata" if (root / "metadata").is_dir() else root.parent / "metadata")
    data = source / "data" if (source / "data").is_dir() else source
    files = source_files(data, (".parquet",))
    if data.is_dir():
        files = [path for path in files if "metadata" not in path.relative_to(data).parts[:-1]]
    return [(str(path), partial(_shard, path, *metadata)) for path in files]


def _metadata(folder: Path) -> tuple[str, pl.LazyFrame]:
    """(source name for local codes, code -> description) from a MEDS `metadata/` folder."""
    name = DEFAULT_SOURCE
    if (folder / "dataset.json").is_file():
        try:
            name = str(orjson.loads((folder / "dataset.json").read_bytes()).get("dataset_name") or name)
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise IngestError(f"{folder / 'dataset.json'}: not a JSON object ({exc})") from None
    name = re.sub(r"[^A-Z0-9]+", "-", name.upper()).strip("-") or DEFAULT_SOURCE
    descriptions = pl.LazyFrame(schema={"_raw": pl.String, "_description": pl.String})
    if (folder / "codes.parquet").is_file():
        codes = pl.scan_parquet(folder / "codes.parquet")
        if not {"code", "description"} <= set(codes.collect_schema().names()):
            raise IngestError(f"{folder / 'codes.parquet'}: missing column(s) code, description of MEDS code metadata")
        descriptions = (codes.select(pl.col("code").cast(pl.String).alias("_raw"),
                                     pl.col("description").cast(pl.String).alias("_description"))
                        .unique("_raw", keep="first", maintain_order=True))
    return name, descriptions


def _time(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        zoned = column.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if dtype.time_zone else column
        return zoned.cast(pl.Datetime("us"))
    if dtype == pl.Date:
        return column.cast(pl.Datetime("us"))
    return parse_time(column)


def _dotted(code: pl.Expr, after: int) -> pl.Expr:
    """An ICD code as its system writes it: a dot after the category (`4019` -> `401.9`)."""
    return pl.when(code.str.len_chars() > after).then(code.str.slice(0, after) + "." + code.str.slice(after)).otherwise(code)


def _code_columns(raw: pl.Expr, source_name: str) -> dict[str, pl.Expr]:
    """MEDS code -> trajsim `code`, `unit` (from the code), `_domain` and the visit it opens or closes."""
    parts = raw.str.split("//")
    head, second, third, last = (parts.list.get(i, null_on_oob=True) for i in (0, 1, 2, -1))
    count = parts.list.len()
    icd, version = second == "ICD", third
    number = parts.list.get(3, null_on_oob=True)
    single = raw.str.splitn("/", 2)
    system = lookup(single.struct.field("field_0").str.to_uppercase(), _SYSTEMS)
    unit_suffixed = head.is_in(UNIT_SUFFIXED) & (count >= 3)
    rest = pl.when(unit_suffixed).then(parts.list.slice(1, count - 2)).otherwise(parts.list.slice(1)).list.join("//")
    scheme = pl.lit(source_name + "-") + head
    code = (pl.when(raw.is_in(list(MEDS_CODES))).then(lookup(raw, MEDS_CODES))
            .when((head == "GENDER") & second.is_in(["F", "M"]))
            .then(pl.when(second == "F").then(pl.lit(SEX_FEMALE)).otherwise(pl.lit(SEX_MALE)))
            .when((head == "DIAGNOSIS") & icd & (version == "9"))
            .then(pl.lit("ICD9CM/") + pl.when(number.str.starts_with("E")).then(_dotted(number, 4))
                  .otherwise(_dotted(number, 3)))
            .when((head == "DIAGNOSIS") & icd & (version == "10")).then(pl.lit("ICD10CM/") + _dotted(number, 3))
            .when((head == "PROCEDURE") & icd & (version == "9")).then(pl.lit("ICD9PCS/") + _dotted(number, 2))
            .when((head == "PROCEDURE") & icd & (version == "10")).then(pl.lit("ICD10PCS/") + number)
            .when(system.is_not_null() & ~single.struct.field("field_1").str.starts_with("/"))
            .then(system + "/" + single.struct.field("field_1"))
            .when(count == 1).then(local_codes(pl.lit(source_name), raw))
            .otherwise(local_codes(scheme, rest)))
    visit = lookup(head, {prefix: kind for prefix, (kind, _) in VISIT_CODES.items()})
    opens = lookup(head, {prefix: opening for prefix, (_, opening) in VISIT_CODES.items()})
    domain = pl.when((head == "MEDICATION") & (second == "START")).then(pl.lit("medication")).otherwise(lookup(head, DOMAINS))
    unit = pl.when(unit_suffixed & (last != NO_UNIT)).then(last)
    return {"code": code, "unit": unit, "_domain": domain, "_visit": visit, "_opens": opens}


def _shard(path: Path, source_name: str, descriptions: pl.LazyFrame, report: IngestReport) -> pl.LazyFrame:
    rows = pl.scan_parquet(path)
    schema = rows.collect_schema()
    missing = [name for name in REQUIRED if name not in schema]
    if missing:
        raise IngestError(f"{path}: missing column(s) {', '.join(missing)} of a MEDS table")
    if schema["time"] == pl.String:
        check_times(rows.select("time"), ["time"], str(path), lambda row: f"row {row + 1}")
    raw_value = pl.col("value").cast(pl.String).str.strip_chars() if "value" in schema else pl.lit(None, pl.String)
    value = pl.when(raw_value != "").then(raw_value)
    number = pl.col("numeric_value") if "numeric_value" in schema else value.cast(pl.Float64, strict=False)
    text = next((pl.col(name) for name in ("text_value", "text") if name in schema),
                pl.when(number.is_null()).then(value.cast(pl.String)))
    given_encounter = next((pl.col(name) for name in ("encounter_id", "hadm_id") if name in schema), None)
    given_unit = pl.col("unit").cast(pl.String) if "unit" in schema else pl.lit(None, pl.String)
    raw = pl.col("code").cast(pl.String)
    time = _time(pl.col("time"), schema["time"])
    rows = rows.select(
        pl.col("subject_id"), time.alias("_time"), raw.alias("_raw"), number.cast(pl.Float64).alias("numeric_value"),
        text.cast(pl.String).alias("text"), given_unit.alias("_given_unit"),
        (given_encounter if given_encounter is not None else pl.lit(None)).cast(pl.UInt64).alias("encounter_id"),
    ).with_row_index("_row")
    births = rows.filter(pl.col("_raw") == "MEDS_BIRTH").group_by("subject_id").agg(pl.col("_time").min().alias("_born"))
    rows = (rows.join(births, on="subject_id", how="left").join(descriptions, on="_raw", how="left")
            .sort("_row").with_columns(pl.coalesce("_time", "_born").alias("time"), **_code_columns(pl.col("_raw"), source_name)))
    no_code = ((pl.col("_raw").is_null() | (pl.col("_raw") == "")), MISSING_CODE)
    rows = keep_rows(rows, drop_reason(pl.col("subject_id"), pl.col("time"), pl.col("code"), no_code), path.name, report)
    rows = rows.with_columns(pl.col("subject_id").cast(pl.UInt64), pl.coalesce("_given_unit", "unit").alias("unit"))
    if given_encounter is None:
        rows = _visits(rows)
    fact = {name: pl.col(name) for name in ("subject_id", "time", "encounter_id", "numeric_value", "unit", "text",
                                              "_description", "_domain")}
    fact |= {"code": pl.col("code"), "_source_code": pl.col("_raw")}
    start = pl.col("_opens").fill_null(False)
    structural = pl.when(start).then(pl.lit("TRAJSIM/visit/") + pl.col("_visit")).otherwise(pl.lit(VISIT_END))
    # An admission or discharge row is the visit edge, plus its own code when it says more (type, disposition).
    edge = {**fact, "time": pl.when(pl.col("_visit").is_not_null()).then("time"), "code": structural,
            "_description": pl.lit(None), "_domain": pl.lit(None), "_source_code": pl.lit(None)}
    said = pl.col("_visit").is_null() | pl.col("_raw").str.contains("//")
    return event_rows(rows, edge, {**fact, "time": pl.when(said).then("time")})


def _visits(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Give each row the encounter_id of the visit open at its time (inpatient first, else emergency);
    a visit runs from its admission to the next discharge of its class."""
    rows = rows.sort("subject_id", "time", "_row")
    edges = rows.filter(pl.col("_visit").is_not_null())
    starts = edges.filter(pl.col("_opens")).select(
        "subject_id", "_visit", pl.col("time").alias("_start"),
        stable_ids(pl.format("{}/{}/{}", "subject_id", "_visit", "time")).alias("_encounter"))
    ends = edges.filter(~pl.col("_opens")).select("subject_id", "_visit", pl.col("time").alias("_end"))
    visits = starts.join_asof(ends, left_on="_start", right_on="_end", by=["subject_id", "_visit"], strategy="forward",
                            check_sortedness=False)
    for kind in ("IMP", "EMER"):
        open_visits = visits.filter(pl.col("_visit") == kind).drop("_visit").rename({"_encounter": f"_{kind}"})
        rows = rows.join_asof(open_visits, left_on="time", right_on="_start", by="subject_id", strategy="backward",
                              check_sortedness=False)
        rows = rows.with_columns(pl.when(pl.col("_end").is_null() | (pl.col("time") <= pl.col("_end")))
                                 .then(pl.col(f"_{kind}")).alias(f"_{kind}")).drop("_start", "_end")
    encounter = (pl.when(pl.col("_visit") == "IMP").then("_IMP").when(pl.col("_visit") == "EMER").then("_EMER")
                 .otherwise(pl.coalesce("_IMP", "_EMER")))
    return rows.with_columns(encounter.alias("encounter_id")).sort("_row")


def write_meds(events: pl.DataFrame, out: Path, codes: pl.DataFrame | None = None, name: str = "trajsim") -> None:
    """Write canonical events as MEDS, atomically: to `out` ending in `.parquet`, one data shard
    (sorted by subject and time); to a folder, a MEDS dataset (`data/0.parquet`, and in `metadata/`
    `codes.parquet` with the descriptions of `codes` (a codes table, trajsim/vocab/local.py),
    `dataset.json` and `subject_splits.parquet` with every subject in `train`)."""
    out = Path(out)
    meds_code = {code: meds for meds, code in MEDS_CODES.items()}
    frame = sort_events(events.lazy().select(list(EVENT_SCHEMA))).select(
        pl.col("subject_id").reinterpret(signed=True), "time",
        pl.coalesce(lookup(pl.col("code"), meds_code), "code").alias("code"), "numeric_value",
        pl.col("text").alias("text_value"), "encounter_id", "unit",
    ).collect()
    if out.suffix == ".parquet":
        with atomic_writer(out) as handle:
            frame.write_parquet(handle, compression="zstd")
        return
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "metadata").mkdir(parents=True, exist_ok=True)
    known = codes if codes is not None else pl.DataFrame(schema=CODES_SCHEMA)
    metadata = (frame.select(pl.col("code").unique().sort())
                .join(known.select("code", "description", pl.col("source_codes").alias("parent_codes")),
                      on="code", how="left", maintain_order="left")
                .with_columns(pl.col("parent_codes").fill_null([])))
    splits = frame.select(pl.col("subject_id").unique().sort(), split=pl.lit("train"))
    dataset = {"dataset_name": name, "dataset_version": "1", "etl_name": "trajsim", "meds_version": "0.3.3"}
    for target, write in ((out / "metadata" / "codes.parquet", metadata.write_parquet),
                          (out / "metadata" / "subject_splits.parquet", splits.write_parquet),
                          (out / "data" / "0.parquet", frame.write_parquet)):
        with atomic_writer(target) as handle:
            write(handle, compression="zstd")
    with atomic_writer(out / "metadata" / "dataset.json") as handle:
        handle.write(json.dumps(dataset, indent=2).encode())
