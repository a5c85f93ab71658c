"""FHIR code systems, fixed codings and US Core profile addresses used across the exporter."""

from __future__ import annotations

from functools import cache
from typing import Any

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
CARE_PLAN_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"
DOCUMENT_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"  # kinds of places, and of personal relationships
LOCATION_TYPE = ROLE_CODE
CDC_RACE_ETHNICITY = "urn:oid:2.16.840.1.113883.6.238"
LANGUAGE = "urn:ietf:bcp:47"
NPI = "http://hl7.org/fhir/sid/us-npi"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
TRAJSIM_IDENTIFIERS = "urn:trajsim:"


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code} | ({"display": display} if display else {})


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    """A CodeableConcept with one coding (and its display as text)."""
    return {"coding": [coding(system, code, display)]} | ({"text": display} if display else {})


DIAGNOSIS_ROLE = "http://terminology.hl7.org/CodeSystem/diagnosis-role"
# the known condition a visit is for (an exacerbation, a decline), as Encounter.diagnosis states it
CHIEF_COMPLAINT = concept(DIAGNOSIS_ROLE, "CC", "Chief complaint")


@cache
def profile(name: str) -> dict[str, list[str]]:
    """`meta` claiming a US Core profile, e.g. profile("us-core-patient") (shared: do not modify)."""
    return {"profile": [US_CORE + name]}


CONDITION_ACTIVE = concept(CONDITION_CLINICAL, "active", "Active")
CONDITION_RESOLVED = concept(CONDITION_CLINICAL, "resolved", "Resolved")
CONFIRMED = concept(CONDITION_VERIFICATION, "confirmed", "Confirmed")
ALLERGY_ACTIVE = concept(ALLERGY_CLINICAL, "active", "Active")
ALLERGY_CONFIRMED = concept(ALLERGY_VERIFICATION, "confirmed", "Confirmed")
ENCOUNTER_DIAGNOSIS = [concept(CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")]
PROBLEM_LIST_ITEM = [concept(CONDITION_CATEGORY, "problem-list-item", "Problem List Item")]
OBSERVATION_CATEGORIES = {
    "vital": [concept(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")],
    "lab": [concept(OBSERVATION_CATEGORY, "laboratory", "Laboratory")],
    "social": [concept(OBSERVATION_CATEGORY, "social-history", "Social History")],
}
INTERPRETATIONS = {flag: [concept(INTERPRETATION, flag, display)]
                   for flag, display in (("H", "High"), ("L", "Low"), ("N", "Normal"), ("A", "Abnormal"))}
LAB_REPORT_CATEGORY = [concept(DIAGNOSTIC_SERVICE, "LAB", "Laboratory")]
ENCOUNTER_CLASSES = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter"}
BLOOD_PRESSURE_PANEL = ("LOINC/85354-9", "Blood pressure panel with all children optional")
BLOOD_PRESSURE_PARTS = ("LOINC/8480-6", "LOINC/8462-4")
MEDICATION_REQUEST_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
# Where the ordered drug is taken: in hospital during a stay, else at home (a retail prescription).
MEDICATION_CATEGORIES = {"IMP": [concept(MEDICATION_REQUEST_CATEGORY, "inpatient", "Inpatient")],
                         None: [concept(MEDICATION_REQUEST_CATEGORY, "community", "Community")]}
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
NOT_PERFORMED = concept(DATA_ABSENT_REASON, "not-performed", "Not Performed")
CONDITION_ASSERTED_DATE = "http://hl7.org/fhir/StructureDefinition/condition-assertedDate"
# IHE format code for a document whose MIME type says all a reader needs (our plain-text notes).
MIME_TYPE_SUFFICIENT = coding("http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                              "urn:ihe:iti:xds:2017:mimeTypeSufficient", "mimeType Sufficient")
