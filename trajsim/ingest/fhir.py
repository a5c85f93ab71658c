"""FHIR R4 -> candidate events: transaction/collection bundles and bulk NDJSON, plain or gzipped.

Resources are plain dicts walked once (as in the exporter's fast path); each file becomes one
frame whose times are parsed and checked column-wise. Patient, Encounter, Condition,
MedicationRequest, Observation (with components), Procedure, Immunization and DocumentReference
become events; other resource types (claims, care plans, organizations...) are counted as dropped.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import polars as pl

from trajsim.events import (
    BIRTH, CAUSE_OF_DEATH, CONDITION_END, DEATH, PREGNANCY_STATUS, SEX_FEMALE, SEX_MALE, SMOKING_STATUS, VISIT_END,
    visit_start_code,
)
from trajsim.ingest.common import (
    ENCOUNTER_CLASS, MISSING_CODE, MISSING_TIME, SYSTEM_BY_URI, UNKNOWN_CLASS, UNKNOWN_SYSTEM, IngestError,
    IngestReport, Step, check_times, parse_time, source_files, stable_ids,
)
from trajsim.knowledge.labs import NEGATIVE, POSITIVE
from trajsim.vocab.local import local_code

SUFFIXES = (".json", ".json.gz", ".ndjson", ".ndjson.gz")
NOT_INGESTED = "resource type not ingested"
NO_PATIENT = "no patient reference"
UCUM = "http://unitsofmeasure.org"
Resource = dict[str, Any]
# A resource type's handler: adds the resource's events for (subject, encounter); returns why it was
# dropped, or None.
Handler = Callable[[Resource, str, "str | None", "_Rows"], "str | None"]
BATCH_BYTES = 8_000_000
# Bounds on what one file may expand to, so a small crafted gzip cannot exhaust memory: an NDJSON
# line is one resource, a bundle one patient's record (Synthea's largest lifetime bundles are ~30 MB).
MAX_LINE_BYTES = 64 * 2**20
MAX_BUNDLE_BYTES = 512 * 2**20
FLUSH_EVENTS = 250_000
_COLUMNS = ("subject", "time", "encounter", "code", "numeric_value", "unit", "text", "_rid", "_reason_ref")


def plan(source: Path, _workdir: Path) -> list[Step]:
    """One step per batch of FHIR files under `source` (a few MB each: small files read together)."""
    batches: list[list[Path]] = [[]]
    size = 0
    for path in source_files(source, SUFFIXES):
        if batches[-1] and size >= BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(path)
        size += path.stat().st_size
    return [(str(batch[0]) if len(batch) == 1 else f"{batch[0].parent} ({len(batch)} files)",
             partial(read_files, batch)) for batch in batches]


def read_files(paths: list[Path], report: IngestReport) -> Iterator[pl.DataFrame]:
    """Candidate events of every resource in some bundle and/or NDJSON files, in frames of at most
    about FLUSH_EVENTS events (so a large NDJSON file is never held whole)."""
    rows = _Rows()
    for path in paths:
        for label, resource in _resources(path):
            rows.label = f"{path} {label}"
            try:
                _extract(resource, rows, report)
            except _Malformed as exc:
                raise IngestError(f"{rows.label}: {exc}") from None
            except (TypeError, AttributeError, KeyError, ValueError) as exc:  # a shape no check above foresaw
                raise IngestError(f"{rows.label}: malformed {_kind(resource)} resource ({exc})") from None
            if len(rows.labels) >= FLUSH_EVENTS:
                yield rows.frame()
                rows = _Rows()
    yield rows.frame()


@contextmanager
def _opened(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes, gunzipped for `.gz`; a damaged gzip stream becomes an IngestError."""
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as handle:
            yield handle
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise IngestError(f"{path}: truncated or corrupt gzip file ({exc})") from None


def _resources(path: Path) -> Iterator[tuple[str, Resource]]:
    """(where, resource) for each resource: `line N` in NDJSON (read line by line), `entry N` in a bundle."""
    with _opened(path) as handle:
        if ".ndjson" in path.name:
            number = 0
            while line := handle.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(line) > MAX_LINE_BYTES:
                    raise IngestError(f"{path} line {number}: longer than {MAX_LINE_BYTES // 2**20} MB; "
                                      "an NDJSON line holds one resource")
                if line.strip():
                    yield f"line {number}", _parse(line, path, f"line {number}")
            return
        text = handle.read(MAX_BUNDLE_BYTES + 1)
        if len(text) > MAX_BUNDLE_BYTES:
            raise IngestError(f"{path}: larger than {MAX_BUNDLE_BYTES // 2**20} MB once read; split it into "
                              "one bundle per patient or bulk NDJSON")
        document = _parse(text, path, "")
    if document.get("resourceType") != "Bundle":
        yield "resource", document
        return
    entries = document.get("entry") or []
    if not isinstance(entries, list):
        raise IngestError(f"{path}: Bundle.entry must be a list, not {_json_type(entries)}")
    for number, entry in enumerate(entries, start=1):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise IngestError(f"{path} entry {number}: expected an entry object with a resource object, "
                              f"got {_json_type(resource if isinstance(entry, dict) else entry)}")
        yield f"entry {number}", resource


def _parse(text: bytes, path: Path, where: str) -> Resource:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise IngestError(f"{path}{' ' + where if where else ''}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise IngestError(f"{path}{' ' + where if where else ''}: expected a JSON object")
    return value


class _Malformed(ValueError):
    """A field of a resource with the wrong JSON type; `read_files` adds the file and entry."""


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _kind(resource: Resource) -> str:
    kind = resource.get("resourceType")
    return kind if isinstance(kind, str) else "(no resourceType)"


def _objects(value: Any, field: str) -> list[Resource]:
    """A list of JSON objects (empty when absent), or _Malformed naming the field."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Malformed(f"{field} must be a list of objects, not {_json_type(value)}")
    for number, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            raise _Malformed(f"{field} item {number} must be an object, not {_json_type(item)}")
    return value


def _string(resource: Resource, field: str) -> str | None:
    value = resource.get(field)
    if value is not None and not isinstance(value, str):
        raise _Malformed(f"{field} must be a string, not {_json_type(value)}")
    return value


class _Rows:
    """Column lists of candidate events, with the source position (file and line or entry) of each."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
        self.labels: list[str] = []
        self.label = ""

    def add(self, subject: str, time: str, encounter: str | None, code: str, numeric_value: float | None = None,
            unit: str | None = None, text: str | None = None, rid: str | None = None,
            reason_ref: str | None = None) -> None:
        for name, value in zip(_COLUMNS, (subject, time, encounter, code, numeric_value, unit, text, rid, reason_ref),
                               strict=True):
            self.columns[name].append(value)
        self.labels.append(self.label)

    def frame(self) -> pl.DataFrame:
        """These events as a frame with ids hashed and times parsed (IngestError names a bad date's place)."""
        frame = pl.DataFrame(self.columns, schema_overrides={"numeric_value": pl.Float64}, strict=False)
        frame = frame.with_columns(pl.col(name).cast(pl.String) for name in _COLUMNS if name != "numeric_value")
        check_times(frame, ["time"], "", lambda row: self.labels[row])
        return frame.select(
            stable_ids(pl.col("subject")).alias("subject_id"), parse_time(pl.col("time")).alias("time"),
            stable_ids(pl.col("encounter")).alias("encounter_id"),
            "code", "numeric_value", "unit", "text", "_rid", "_reason_ref",
        )


def _reference_id(reference: Any) -> str | None:
    """The id in `urn:uuid:X` or `Type/X` (conditional references cannot be resolved)."""
    target = reference.get("reference") if isinstance(reference, dict) else None
    if not target or "?" in target:
        return None
    return target.removeprefix("urn:uuid:").rsplit("/", 1)[-1]


def concept_code(concept: Any) -> tuple[str | None, str | None]:
    """(SYSTEM/CODE of the first coding in a known system, else the first coding as a local code
    `LOCAL/<last segment of its system URI>/<code>`; or None with the reason)."""
    codings = _objects(concept.get("coding"), "coding") if isinstance(concept, dict) else None
    if not codings:
        return None, MISSING_CODE
    for coding in codings:
        system = SYSTEM_BY_URI.get(coding.get("system", ""))
        if system and coding.get("code"):
            return f"{system}/{coding['code']}", None
    for coding in codings:
        if coding.get("code"):
            scheme = re.split(r"[/:]", coding.get("system", "").rstrip("/"))[-1] or "FHIR"
            return local_code(scheme, coding["code"]), None
    return None, UNKNOWN_SYSTEM


def _first(resource: Resource, *paths: str) -> Any:
    """The first present value among dotted `paths` (e.g. `onsetPeriod.start`)."""
    for path in paths:
        value: Any = resource
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            return value
    return None


def _extract(resource: Resource, rows: _Rows, report: IngestReport) -> None:
    kind = _string(resource, "resourceType") or "(no resourceType)"
    counts = report.table(kind)
    counts.read += 1
    handler = _HANDLERS.get(kind)
    if handler is None:
        counts.dropped[NOT_INGESTED] += 1
        return
    subject = resource.get("id") if kind == "Patient" else _reference_id(resource.get("subject") or resource.get("patient"))
    reason = NO_PATIENT if not subject else handler(resource, subject, _reference_id(resource.get("encounter")), rows)
    if reason:
        counts.dropped[reason] += 1


def _patient(resource: Resource, subject: str, _: str | None, rows: _Rows) -> str | None:
    born = _string(resource, "birthDate")
    if not born:
        return MISSING_TIME
    rows.add(subject, born, None, BIRTH)
    sex = {"female": SEX_FEMALE, "male": SEX_MALE}.get(_string(resource, "gender") or "")
    if sex:
        rows.add(subject, born, None, sex)
    if died := _string(resource, "deceasedDateTime"):
        rows.add(subject, died, None, DEATH)
    return None


def _encounter(resource: Resource, subject: str, _: str | None, rows: _Rows) -> str | None:
    category = resource.get("class")
    encounter_class = ENCOUNTER_CLASS.get(category.get("code", "") if isinstance(category, dict) else "")
    start, end = _first(resource, "period.start"), _first(resource, "period.end")
    if encounter_class is None:
        return UNKNOWN_CLASS
    if not start:
        return MISSING_TIME
    encounter = resource.get("id")
    rows.add(subject, start, encounter, visit_start_code(encounter_class))
    # the condition a visit is for (its chief complaint) becomes the visit type's text, as trajsim writes it
    complaint = next((_reference_id(d.get("condition")) for d in _objects(resource.get("diagnosis"), "diagnosis")
                      if _is_chief_complaint(d.get("use"))), None)
    for concept in _objects(resource.get("type"), "type"):
        code, _reason = concept_code(concept)
        if code:
            rows.add(subject, start, encounter, code, reason_ref=complaint)
            break
    if end:
        rows.add(subject, end, encounter, VISIT_END)
    return None


def _is_chief_complaint(use: Any) -> bool:
    codings = use.get("coding") if isinstance(use, dict) else None
    return any(isinstance(c, dict) and c.get("code") == "CC" and c.get("system", "").endswith("/diagnosis-role")
               for c in codings or ())


def _condition(resource: Resource, subject: str, encounter: str | None, rows: _Rows) -> str | None:
    code, reason = concept_code(resource.get("code"))
    onset = _first(resource, "onsetDateTime", "onsetPeriod.start", "recordedDate")
    if code is None or not onset:
        return reason or MISSING_TIME
    rows.add(subject, onset, encounter, code, rid=resource.get("id"))
    abated = _first(resource, "abatementDateTime", "abatementPeriod.end")
    if abated:
        rows.add(subject, abated, encounter, CONDITION_END, text=code)
    return None


def _medication(resource: Resource, subject: str, encounter: str | None, rows: _Rows) -> str | None:
    code, reason = concept_code(resource.get("medicationCodeableConcept"))
    authored = resource.get("authoredOn")
    if code is None or not authored:
        return reason or MISSING_TIME
    indication, reference = _reason(resource)
    rows.add(subject, authored, encounter, code, text=indication, reason_ref=reference)
    return None


def _reason(resource: Resource) -> tuple[str | None, str | None]:
    """What an order or a procedure is for: its first coded reason, and its first reference to one
    (a Condition, resolved to its code once every resource is read)."""
    indication = next(filter(None, (concept_code(c)[0] for c in _objects(resource.get("reasonCode"), "reasonCode"))), None)
    return indication, next(filter(None, map(_reference_id, resource.get("reasonReference") or [])), None)


def _value(element: Resource) -> tuple[float | None, str | None, str | None]:
    """(number, UCUM unit, text) of an Observation or component value[x]."""
    quantity = element.get("valueQuantity")
    if isinstance(quantity, dict) and quantity.get("value") is not None:
        number = quantity["value"]
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise _Malformed(f"valueQuantity.value {number!r} is not a number")
        unit = quantity.get("code") if quantity.get("system") == UCUM else quantity.get("unit")
        return float(number), unit, None
    concept = element.get("valueCodeableConcept")
    if isinstance(concept, dict):
        return None, None, concept.get("text") or next((c.get("display") for c in concept.get("coding") or []), None)
    text = element.get("valueString")
    return None, None, str(text) if text is not None else None


TEST_STRIP_ANSWERS = (NEGATIVE, POSITIVE)  # SNOMED CT qualifier values a urinalysis reports


def _observation(resource: Resource, subject: str, encounter: str | None, rows: _Rows) -> str | None:
    code, reason = concept_code(resource.get("code"))
    when = _first(resource, "effectiveDateTime", "effectivePeriod.start", "issued")
    if code is None or not when:
        return reason or MISSING_TIME
    components = _objects(resource.get("component"), "component")
    value = _value(resource)
    answer = concept_code(resource.get("valueCodeableConcept"))[0]
    # a coded answer kept as its code (a death takes its cause: _finish), as is a test strip's
    if code in (CAUSE_OF_DEATH, SMOKING_STATUS, PREGNANCY_STATUS) or answer in TEST_STRIP_ANSWERS:
        value = (None, None, answer or value[2])
    # A panel (blood pressure) carries its values in components: one event per measured component;
    # a panel of members (a questionnaire's) is no fact of its own: its members are.
    if not components and value == (None, None, None) and resource.get("hasMember"):
        return None
    if not components or value != (None, None, None):
        rows.add(subject, when, encounter, code, *value)
    for component in components:
        component_code, _reason = concept_code(component.get("code"))
        if component_code and "dataAbsentReason" not in component:  # a half not measured is no fact
            rows.add(subject, when, encounter, component_code, *_value(component))
    return None


def _coded_fact(concept_key: str, *time_paths: str, reasoned: bool = False) -> Handler:
    """Handler for resources that are one code at one time (Procedure, Immunization); a `reasoned`
    one keeps what it was done for, as an order keeps its indication."""
    def handler(resource: Resource, subject: str, encounter: str | None, rows: _Rows) -> str | None:
        code, reason = concept_code(resource.get(concept_key))
        when = _first(resource, *time_paths)
        if code is None or not when:
            return reason or MISSING_TIME
        indication, reference = _reason(resource) if reasoned else (None, None)
        rows.add(subject, when, encounter, code, text=indication, reason_ref=reference)
        return None
    return handler


def _document(resource: Resource, subject: str, _: str | None, rows: _Rows) -> str | None:
    code, reason = concept_code(resource.get("type"))
    when = _first(resource, "date", "context.period.start")
    if code is None or not when:
        return reason or MISSING_TIME
    encounter = next(filter(None, map(_reference_id, _first(resource, "context.encounter") or [])), None)
    note = None
    for content in _objects(resource.get("content"), "content"):
        data = _first(content, "attachment.data")
        if data:
            try:
                note = base64.b64decode(data).decode("utf-8", errors="replace")
            except (binascii.Error, ValueError):
                note = None
            break
    rows.add(subject, when, encounter, code, text=note)
    return None


_HANDLERS: dict[str, Handler] = {
    "Patient": _patient, "Encounter": _encounter, "Condition": _condition, "MedicationRequest": _medication,
    "Observation": _observation, "DocumentReference": _document,
    "Procedure": _coded_fact("code", "performedDateTime", "performedPeriod.start", reasoned=True),
    "Immunization": _coded_fact("vaccineCode", "occurrenceDateTime", "occurrenceString"),
}
