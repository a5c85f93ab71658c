"""FHIR R4 export of canonical events: resources as plain dicts (orjson fast path), transaction
bundles and bulk NDJSON, and validation against the `fhir.resources.R4B` models."""

from fhir_export.resources import PatientResources, ResourceBuilder
from fhir_export.writers import NdjsonWriter, transaction_bundle, write_bundle

__all__ = ["NdjsonWriter", "PatientResources", "ResourceBuilder", "transaction_bundle", "write_bundle"]
