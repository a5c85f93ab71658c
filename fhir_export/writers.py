"""Writing patients as FHIR: one bundle file per patient (a transaction to load into a server, or a
collection to read), and bulk NDJSON (one file per resource type, the layout of a FHIR Bulk Data
export). Every file appears atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from fhir_export.providers import SHARED_TYPES
from fhir_export.resources import PatientResources
from trajsim.atomic import temporary_path, write_bytes_atomic

BundleType = Literal["transaction", "collection"]
WRITE_BUFFER = 1 << 20  # bytes an NDJSON file gathers before a system call


def patient_bundle(patient: PatientResources, bundle_type: BundleType = "transaction") -> dict[str, Any]:
    """The patient's resources linked by urn:uuid. A transaction PUTs each resource at its own id,
    so loading a bundle twice, or many patients sharing a provider, creates nothing twice."""
    patient.use_bundle_references()
    return _bundle(patient.resources, patient.resources, bundle_type)


def _bundle(resources: list[dict[str, Any]], contents: Sequence[Any], bundle_type: BundleType) -> dict[str, Any]:
    """A bundle whose entries hold `contents`: the resources themselves or their serialised bytes."""
    entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": content} for r, content in zip(resources, contents)]
    if bundle_type == "transaction":
        for entry, resource in zip(entries, resources):
            entry["request"] = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}


def write_bundle(path: Path, patient: PatientResources, bundle_type: BundleType = "transaction") -> int:
    """Write one patient's bundle; returns the bytes written."""
    return write_bundles({bundle_type: path}, patient)


def write_bundles(paths: Mapping[BundleType, Path], patient: PatientResources) -> int:
    """Write the patient's bundle of each type at its path, each resource serialised once for all of
    them; returns the bytes written."""
    patient.use_bundle_references()
    contents = patient.resources if len(paths) == 1 else [orjson.Fragment(orjson.dumps(r)) for r in patient.resources]
    written = 0
    for bundle_type, path in paths.items():
        data = orjson.dumps(_bundle(patient.resources, contents, bundle_type))
        write_bytes_atomic(path, data)
        written += len(data)
    return written


class NdjsonWriter:
    """Streams resources into `<dir>/<ResourceType>.ndjson`, each provider once however many
    patients it cares for. Files are written under temporary names and renamed into place only by
    `close()`, so an interrupted run leaves no partial file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[str, tuple[Path, BinaryIO]] = {}
        self._shared_written: set[str] = set()
        self.bytes_written = 0

    def write(self, patient: PatientResources) -> None:
        patient.use_relative_references()
        lines: dict[str, list[bytes]] = {}  # one write per file and patient, in the patient's order
        for resource in patient.resources:
            if resource["resourceType"] in SHARED_TYPES:
                if resource["id"] in self._shared_written:
                    continue
                self._shared_written.add(resource["id"])
            lines.setdefault(resource["resourceType"], []).append(orjson.dumps(resource))
        for resource_type, serialised in lines.items():
            data = b"\n".join(serialised) + b"\n"
            self._handle(resource_type).write(data)
            self.bytes_written += len(data)

    def _handle(self, resource_type: str) -> BinaryIO:
        if resource_type not in self._files:
            self.directory.mkdir(parents=True, exist_ok=True)
            final = self.directory / f"{resource_type}.ndjson"
            self._files[resource_type] = (final, open(temporary_path(final), "wb", buffering=WRITE_BUFFER))
        return self._files[resource_type][1]

    def close(self) -> None:
        """Finish every file and move it into place."""
        for final, handle in self._files.values():
            handle.close()
            os.replace(temporary_path(final), final)
        self._files.clear()

    def abort(self) -> None:
        """Discard everything written so far."""
        for final, handle in self._files.values():
            handle.close()
            temporary_path(final).unlink(missing_ok=True)
        self._files.clear()
