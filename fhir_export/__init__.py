"""FHIR R4 export of canonical events: US Core-shaped resources as plain dicts (orjson fast path),
clinical notes, transaction and collection bundles, bulk NDJSON, and validation."""

from fhir_export.resources import PatientResources, ResourceBuilder
from fhir_export.writers import NdjsonWriter, patient_bundle, write_bundle, write_bundles

__all__ = ["NdjsonWriter", "PatientResources", "ResourceBuilder", "patient_bundle", "write_bundle", "write_bundles"]
