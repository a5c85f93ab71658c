"""Canonical events of one patient -> FHIR R4 resources as plain dicts (the fast path).

Resources are built in one pass over the patient's time-ordered events. Every reference to a
resource is one shared dict, so the same resources serve a transaction bundle (`urn:uuid:`
references) and bulk NDJSON (`Type/id` references) by flipping those dicts, not by rebuilding.
"""

from __future__ import annotations

import csv
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from trajsim.events import (
    BIRTH, CONDITION_END, DEATH, MEDICATION_END, SEX_FEMALE, SEX_MALE, VISIT_END, VISIT_START_PREFIX, Event,
)
from trajsim.vocab import SYSTEM_URIS, Vocabulary

Resource = dict[str, Any]

ENCOUNTER_CLASS_DISPLAY = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter"}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"
SUBJECT_ID_SYSTEM = "urn:trajsim:subject-id"
# Resource type for a code the vocabulary does not know (e.g. learned from a user's data), by system.
RESOURCE_BY_SYSTEM = {"LOINC": "lab", "RXNORM": "medication", "CVX": "immunization",
                      "SNOMED": "condition", "ICD10CM": "condition"}


def _status(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


ACTIVE, RESOLVED = _status(CONDITION_CLINICAL, "active"), _status(CONDITION_CLINICAL, "resolved")
CONFIRMED = _status(CONDITION_VERIFICATION, "confirmed")
ENCOUNTER_DIAGNOSIS = [{"coding": [{"system": CONDITION_CATEGORY, "code": "encounter-diagnosis",
                                    "display": "Encounter Diagnosis"}]}]
OBSERVATION_CATEGORIES = {
    category: [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category, "display": display}]}]
    for category, display in (("vital-signs", "Vital Signs"), ("laboratory", "Laboratory"))
}


@cache
def _names() -> dict[str, list[str]]:
    text = resources.files(__package__).joinpath("data/names.csv").read_text(encoding="utf-8")
    names: dict[str, list[str]] = {}
    for row in csv.DictReader(text.splitlines()):
        names.setdefault(row["kind"], []).append(row["name"])
    return names


def fhir_datetime(moment: datetime) -> str:
    """FHIR dateTime with an explicit zone (simulated clocks run in UTC)."""
    return moment.isoformat(timespec="seconds") + "Z"


class IdMinter:
    """Deterministic UUIDs: the n-th resource of a patient always gets the same id for the same
    namespace (scenario + seed), so identical runs give identical bytes."""

    def __init__(self, patient_key: str) -> None:
        self._key = patient_key.encode()
        self._count = 0

    def next(self) -> str:
        self._count += 1
        digest = hashlib.blake2b(self._key + b"/%d" % self._count, digest_size=16).digest()
        return str(uuid.UUID(bytes=digest, version=4))


@dataclass
class PatientResources:
    """One patient's resources plus the shared reference dicts that point between them."""

    resources: list[Resource] = field(default_factory=list)
    _references: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)

    def reference(self, resource: Resource) -> dict[str, str]:
        rid = resource["id"]
        if rid not in self._references:
            self._references[rid] = (resource["resourceType"], {"reference": f"urn:uuid:{rid}"})
        return self._references[rid][1]

    def use_bundle_references(self) -> None:
        for rid, (_, ref) in self._references.items():
            ref["reference"] = f"urn:uuid:{rid}"

    def use_relative_references(self) -> None:
        for rid, (rtype, ref) in self._references.items():
            ref["reference"] = f"{rtype}/{rid}"


class ResourceBuilder:
    """Turns a patient's events into FHIR R4 resources.

    `crosswalk` maps a condition code to extra codings (e.g. SNOMED -> ICD-10-CM) shown beside it.
    """

    def __init__(self, namespace: str, vocabulary: Vocabulary, crosswalk: Mapping[str, str] | None = None) -> None:
        self.namespace = namespace
        self.vocabulary = vocabulary
        self.crosswalk = dict(crosswalk or {})
        self._concepts: dict[str, dict[str, Any]] = {}

    def concept(self, code: str) -> dict[str, Any]:
        """CodeableConcept for SYSTEM/CODE (plus its crosswalk coding), cached per code."""
        cached = self._concepts.get(code)
        if cached is None:
            codings = [self._coding(code)] + ([self._coding(self.crosswalk[code])] if code in self.crosswalk else [])
            cached = {"coding": codings}
            if "display" in codings[0]:
                cached["text"] = codings[0]["display"]
            self._concepts[code] = cached
        return cached

    def _coding(self, code: str) -> dict[str, str]:
        system, local = code.split("/", 1)
        coding = {"system": SYSTEM_URIS[system], "code": local}
        known = self.vocabulary.get(code)
        if known is not None:
            coding["display"] = known.display
        return coding

    def _domain(self, code: str) -> str | None:
        known = self.vocabulary.get(code)
        return known.domain if known is not None else RESOURCE_BY_SYSTEM.get(code.split("/", 1)[0])

    def build(self, events: Sequence[Event]) -> PatientResources:
        """All resources of one patient, Patient first, then in the order their facts occurred."""
        subject_id = events[0].subject_id
        ids = IdMinter(f"{self.namespace}/{subject_id}")
        out = PatientResources()
        patient = self._patient(ids.next(), subject_id)
        out.resources.append(patient)
        subject = out.reference(patient)
        encounters: dict[int, Resource] = {}
        open_conditions: dict[str, Resource] = {}
        current_orders: dict[str, Resource] = {}
        for event in events:
            code, when = event.code, fhir_datetime(event.time)
            encounter = encounters.get(event.encounter_id) if event.encounter_id is not None else None
            if code == BIRTH:
                patient["birthDate"] = event.time.date().isoformat()
            elif code in (SEX_FEMALE, SEX_MALE):
                patient["gender"] = "female" if code == SEX_FEMALE else "male"
                patient["name"] = [self._name(subject_id, code[-1])]
            elif code == DEATH:
                patient["deceasedDateTime"] = when
            elif code.startswith(VISIT_START_PREFIX):
                encounter_class = code.removeprefix(VISIT_START_PREFIX)
                resource = {
                    "resourceType": "Encounter", "id": ids.next(), "status": "finished",
                    "class": {"system": ACT_CODE, "code": encounter_class,
                              "display": ENCOUNTER_CLASS_DISPLAY.get(encounter_class, encounter_class)},
                    "subject": subject, "period": {"start": when},
                }
                encounters[event.encounter_id] = resource
                out.resources.append(resource)
            elif code == VISIT_END:
                if encounter is not None:
                    encounter["period"]["end"] = when
            elif code == CONDITION_END:
                condition = open_conditions.pop(event.text or "", None)
                if condition is not None:
                    condition["clinicalStatus"] = RESOLVED
                    condition["abatementDateTime"] = when
            elif code == MEDICATION_END:
                order = current_orders.pop(event.text or "", None)
                if order is not None:
                    order["status"] = "completed"
            else:
                resource = self._clinical(ids, event, when, subject, encounter, out, open_conditions, current_orders)
                if resource is not None:
                    out.resources.append(resource)
        if "deceasedDateTime" in patient:
            for order in current_orders.values():
                order["status"] = "stopped"
        return out

    def _clinical(self, ids: IdMinter, event: Event, when: str, subject: dict, encounter: Resource | None,
                  out: PatientResources, open_conditions: dict[str, Resource],
                  current_orders: dict[str, Resource]) -> Resource | None:
        code, domain = event.code, self._domain(event.code)
        context = {"encounter": out.reference(encounter)} if encounter is not None else {}
        if domain == "encounter_type":
            if encounter is not None:
                encounter["type"] = [self.concept(code)]
            return None
        if domain == "condition":
            resource = {
                "resourceType": "Condition", "id": ids.next(), "clinicalStatus": ACTIVE,
                "verificationStatus": CONFIRMED, "category": ENCOUNTER_DIAGNOSIS, "code": self.concept(code),
                "subject": subject, **context, "onsetDateTime": when, "recordedDate": when,
            }
            open_conditions[code] = resource
            if encounter is not None:
                encounter.setdefault("reasonReference", []).append(out.reference(resource))
            return resource
        if domain in ("vital", "lab"):
            if event.numeric_value is None:
                return None
            category = "vital-signs" if domain == "vital" else "laboratory"
            quantity = {"value": event.numeric_value}
            if event.unit:
                quantity |= {"unit": event.unit, "system": UCUM, "code": event.unit}
            return {
                "resourceType": "Observation", "id": ids.next(), "status": "final",
                "category": OBSERVATION_CATEGORIES[category], "code": self.concept(code), "subject": subject,
                **context, "effectiveDateTime": when, "valueQuantity": quantity,
            }
        if domain == "medication":
            previous = current_orders.get(code)
            if previous is not None:
                previous["status"] = "completed"  # superseded by this renewal
            resource = {
                "resourceType": "MedicationRequest", "id": ids.next(), "status": "active", "intent": "order",
                "medicationCodeableConcept": self.concept(code), "subject": subject, **context, "authoredOn": when,
            }
            indication = open_conditions.get(event.text or "")
            if indication is not None:
                resource["reasonReference"] = [out.reference(indication)]
            elif event.text:
                resource["reasonCode"] = [self.concept(event.text)]
            current_orders[code] = resource
            return resource
        if domain == "immunization":
            return {
                "resourceType": "Immunization", "id": ids.next(), "status": "completed",
                "vaccineCode": self.concept(code), "patient": subject, **context,
                "occurrenceDateTime": when, "primarySource": True,
            }
        return None

    def _patient(self, rid: str, subject_id: int) -> Resource:
        return {
            "resourceType": "Patient", "id": rid,
            "identifier": [{"system": SUBJECT_ID_SYSTEM, "value": f"{self.namespace}/{subject_id}"}],
        }

    def _name(self, subject_id: int, sex: str) -> dict[str, Any]:
        """A name drawn from national name-frequency lists, fixed by the patient's identity."""
        names = _names()
        digest = hashlib.blake2b(f"{self.namespace}/{subject_id}/name".encode(), digest_size=8).digest()
        pick = int.from_bytes(digest, "big")
        given, family = names[f"given_{sex}"], names["family"]
        return {"use": "official", "family": family[pick % len(family)],
                "given": [given[(pick // len(family)) % len(given)]]}
