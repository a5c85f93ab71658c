"""Check FHIR output the way a receiving server would: every resource against the FHIR R4 models of
`fhir.resources.R4B`, and every reference resolvable (inside its bundle, or within the NDJSON set).

Each resource is validated on its own: the Bundle model does not validate the resources it holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

MAX_LISTED_FAILURES = 50


@dataclass
class ValidationReport:
    files: int = 0
    resources: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0

    @property
    def ok(self) -> bool:
        return self.failure_count == 0 and self.files > 0

    def fail(self, message: str) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_LISTED_FAILURES:
            self.failures.append(message)


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


def _check_resource(resource: Any, where: str, report: ValidationReport) -> bool:
    if not isinstance(resource, dict) or "resourceType" not in resource:
        report.fail(f"{where}: not a FHIR resource (no resourceType)")
        return False
    resource_type = resource["resourceType"]
    try:
        model = get_fhir_model_class(resource_type)
    except KeyError:
        report.fail(f"{where}: unknown resourceType {resource_type!r}")
        return False
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        report.fail(f"{where}: {resource_type}/{resource.get('id')}: {location}: {first['msg']}"
                    f" ({exc.error_count()} problem(s))")
        return False
    report.resources[resource_type] += 1
    return True


def _parse(data: bytes, where: str, report: ValidationReport) -> Any | None:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        report.fail(f"{where}: line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})")
        return None


def validate_bundle_file(path: Path, report: ValidationReport) -> None:
    bundle = _parse(path.read_bytes(), str(path), report)
    if bundle is None:
        return
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        report.fail(f"{path}: not a FHIR Bundle")
        return
    _check_resource({k: v for k, v in bundle.items() if k != "entry"} | {"entry": []}, str(path), report)
    entries = bundle.get("entry", [])
    full_urls = {entry.get("fullUrl") for entry in entries}
    for index, entry in enumerate(entries):
        resource, where = entry.get("resource"), f"{path}: entry {index}"
        if not _check_resource(resource, where, report):
            continue
        if bundle.get("type") in ("transaction", "batch") and "request" not in entry:
            report.fail(f"{where}: a {bundle['type']} entry needs a request")
        for reference in _references(resource):
            if reference.startswith("urn:uuid:") and reference not in full_urls:
                report.fail(f"{where}: reference {reference} does not resolve inside the bundle")


def validate_ndjson_file(path: Path, report: ValidationReport, known: set[str], wanted: list[tuple[str, str]]) -> None:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            resource = _parse(line, where, report)
            if resource is None or not _check_resource(resource, where, report):
                continue
            known.add(f"{resource['resourceType']}/{resource.get('id')}")
            wanted.extend((reference, where) for reference in _references(resource) if "/" in reference)


def validate_directory(directory: Path, on_file: Callable[[Path], None] | None = None) -> ValidationReport:
    """Validate every `*.json` bundle and `*.ndjson` file below `directory`."""
    report = ValidationReport()
    known: set[str] = set()
    wanted: list[tuple[str, str]] = []
    for path in sorted(Path(directory).rglob("*")):
        if path.name == "manifest.json" or path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".json":
            validate_bundle_file(path, report)
        elif path.suffix == ".ndjson":
            validate_ndjson_file(path, report, known, wanted)
        else:
            continue
        report.files += 1
        if on_file is not None:
            on_file(path)
    for reference, where in wanted:
        if reference not in known:
            report.fail(f"{where}: reference {reference} matches no resource in the NDJSON files")
    return report
