"""Writing patients as FHIR: one transaction bundle file per patient, and bulk NDJSON (one file
per resource type, the layout of a FHIR Bulk Data export). Every file appears atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import orjson

from fhir_export.resources import PatientResources
from trajsim.atomic import temporary_path, write_bytes_atomic


def transaction_bundle(patient: PatientResources) -> dict:
    """A FHIR transaction that creates every resource of the patient, linked by urn:uuid."""
    patient.use_bundle_references()
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:{r['id']}", "resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
            for r in patient.resources
        ],
    }


def write_bundle(path: Path, patient: PatientResources) -> int:
    """Write one patient's transaction bundle; returns the bytes written."""
    data = orjson.dumps(transaction_bundle(patient))
    write_bytes_atomic(path, data)
    return len(data)


class NdjsonWriter:
    """Streams resources into `<dir>/<ResourceType>.ndjson`. Files are written under temporary
    names and renamed into place only by `close()`, so an interrupted run leaves no partial file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[str, tuple[Path, BinaryIO]] = {}
        self.bytes_written = 0

    def write(self, patient: PatientResources) -> None:
        patient.use_relative_references()
        for resource in patient.resources:
            handle = self._handle(resource["resourceType"])
            line = orjson.dumps(resource) + b"\n"
            handle.write(line)
            self.bytes_written += len(line)

    def _handle(self, resource_type: str) -> BinaryIO:
        if resource_type not in self._files:
            self.directory.mkdir(parents=True, exist_ok=True)
            final = self.directory / f"{resource_type}.ndjson"
            self._files[resource_type] = (final, open(temporary_path(final), "wb"))
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
