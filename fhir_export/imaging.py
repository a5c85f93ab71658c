"""The images behind an imaging procedure: an ImagingStudy (one series of DICOM instances, as a PACS
would index it) and the radiology report that points to it, so a receiving EHR can show a screening
mammogram or a stroke CT as a study, not only as a performed procedure. What each procedure images
(modality, body site, image count, report code) is data in `data/imaging_studies.csv`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir_export.identity import stable_uuid
from fhir_export.tables import load_table
from fhir_export.terminology import LOINC, coding, concept, profile
from trajsim.vocab import SYSTEM_URIS

Resource = dict[str, Any]
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID = "urn:dicom:uid"
RFC_3986 = "urn:ietf:rfc:3986"  # how FHIR codes a DICOM SOP class: its OID as a URI
RADIOLOGY = [concept(LOINC, "LP29684-5", "Radiology")]  # US Core DiagnosticReport category


@dataclass(frozen=True)
class ImagingExam:
    """What one imaging procedure acquires and how its report is coded."""

    modality: dict[str, str]
    body_site: dict[str, str]
    sop_class: dict[str, str]
    instances: int
    report: dict[str, Any]


@cache
def imaging_exams() -> dict[str, ImagingExam]:
    """SNOMED procedure code (`SNOMED/...`) -> the exam it performs."""
    exams = {}
    for row in load_table("imaging_studies", ("procedure", "modality", "modality_display", "body_site",
                                              "body_site_display", "sop_class", "sop_class_display", "instances",
                                              "report", "report_display")):
        exams[row["procedure"]] = ImagingExam(
            coding(DICOM, row["modality"], row["modality_display"]),
            coding(SYSTEM_URIS["SNOMED"], row["body_site"].removeprefix("SNOMED/"), row["body_site_display"]),
            coding(RFC_3986, "urn:oid:" + row["sop_class"], row["sop_class_display"]),
            int(row["instances"]),
            concept(LOINC, row["report"].removeprefix("LOINC/"), row["report_display"]))
    return exams


def dicom_uid(key: str) -> str:
    """A DICOM UID that depends only on `key`: the UUID-derived form "2.25.<decimal>" of PS3.5 B.2."""
    return f"2.25.{uuid.UUID(stable_uuid(key)).int}"


def imaging_study(ids: tuple[str, str], exam: ImagingExam, procedure: Resource, referrer: dict[str, str],
                  performer: dict[str, str], location: dict[str, str] | None, reasons: list[dict[str, str]],
                  reference: Callable[[Resource], dict[str, str]]) -> tuple[Resource, Resource]:
    """The study (`ids[0]`) of the performed exam `procedure`, in its encounter and at `location` (if
    any), for the conditions in `reasons`, and its final report (`ids[1]`) by the organization `performer`."""
    started, subject = procedure["performedDateTime"], procedure["subject"]
    encounter = {"encounter": procedure["encounter"]} if "encounter" in procedure else {}
    title = exam.report["text"]
    series = {"uid": dicom_uid(ids[0] + "/series/1"), "number": 1, "modality": exam.modality,
              "numberOfInstances": exam.instances, "bodySite": exam.body_site, "started": started,
              "instance": [{"uid": dicom_uid(f"{ids[0]}/instance/{n}"), "sopClass": exam.sop_class, "number": n,
                            "title": f"{title} image {n}"} for n in range(1, exam.instances + 1)]}
    study = {"resourceType": "ImagingStudy", "id": ids[0],
             "identifier": [{"system": DICOM_UID, "value": "urn:oid:" + dicom_uid(ids[0])}],
             "status": "available", "modality": [exam.modality], "subject": subject, **encounter,
             "started": started, "referrer": referrer, "numberOfSeries": 1, "numberOfInstances": exam.instances,
             "procedureReference": reference(procedure), "procedureCode": [procedure["code"]],
             **({"location": location} if location is not None else {}),
             **({"reasonReference": reasons} if reasons else {}), "description": title, "series": [series]}
    report = {"resourceType": "DiagnosticReport", "id": ids[1], "meta": profile("us-core-diagnosticreport-note"),
              "status": "final", "category": RADIOLOGY, "code": exam.report, "subject": subject, **encounter,
              "effectiveDateTime": started, "issued": started, "performer": [performer],
              "imagingStudy": [reference(study)]}
    return study, report
