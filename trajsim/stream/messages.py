"""The FHIR interactions a hospital's systems make as things happen: register a patient, create the
ED Encounter on arrival and update it through triage, rooming, transfer to a ward and discharge,
record vital signs and lab results as Observations, diagnoses as Conditions and orders as
MedicationRequests.

Patients and their providers come from the project's exporter (`ResourceBuilder`); the updates
that the batch exporter never needs (an Encounter moving through its statuses and locations) are
small dicts here, in the same US Core shape. Every resource has a client-assigned id and is PUT,
so a retried request after a dropped connection updates instead of duplicating.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from fhir_export.identity import stable_uuid
from fhir_export.resources import PatientResources
from fhir_export.resources import VITAL_SIGN_PROFILES, fhir_datetime
from fhir_export.terminology import (
    ACT_CODE, BLOOD_PRESSURE_PANEL, CONDITION_ACTIVE, CONFIRMED, DISCHARGE_DISPOSITION, ENCOUNTER_CLASSES,
    ENCOUNTER_DIAGNOSIS, LOCATION_TYPE, LOINC, OBSERVATION_CATEGORIES, ORGANIZATION_TYPE, TRAJSIM_IDENTIFIERS, UCUM,
    concept, profile,
)
from fhir_export.writers import patient_bundle
from trajsim.events import BIRTH, SEX_FEMALE, SEX_MALE, Event
from trajsim.output import default_builder, fhir_namespace
from trajsim.stream.scenario import StreamScenario

Resource = dict[str, Any]
ACT_PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
# ESI level -> Encounter.priority (v3 ActPriority): resuscitation and emergent levels are emergencies.
PRIORITY_BY_ESI = {1: ("EM", "emergency"), 2: ("EM", "emergency"), 3: ("UR", "urgent"), 4: ("R", "routine"),
                   5: ("R", "routine")}
ED_VISIT, EMERGENCY_ADMISSION = "SNOMED/50849002", "SNOMED/183452005"
DECIMALS = {"LOINC/8310-5": 1, "LOINC/6298-4": 1, "LOINC/38483-4": 2}  # as labs report them; others whole


@dataclass(frozen=True)
class Request:
    """One FHIR interaction: `url` is relative to the server's base ("" for a transaction bundle)."""

    method: str
    url: str
    body: bytes


def _put(resource: Resource) -> Request:
    return Request("PUT", f"{resource['resourceType']}/{resource['id']}", orjson.dumps(resource))


class HospitalRecords:
    """Builds the request for each hospital event; resource ids depend only on the scenario's name
    and seed and on the patient's number, so the same run sends the same resources."""

    def __init__(self, scenario: StreamScenario) -> None:
        self.namespace = f"stream/{scenario.name}/{scenario.seed}"
        self.builder = default_builder(fhir_namespace(scenario.name, scenario.seed))
        key = f"{self.namespace}/hospital"
        self.hospital = {"resourceType": "Organization", "id": stable_uuid(key), "meta": profile("us-core-organization"),
                         "active": True, "type": [concept(ORGANIZATION_TYPE, "prov", "Healthcare Provider")],
                         "name": f"{scenario.name} hospital"}
        self.units = {code: {"resourceType": "Location", "id": stable_uuid(f"{key}/{code}"),
                             "meta": profile("us-core-location"), "status": "active", "name": name,
                             "type": [concept(LOCATION_TYPE, code, name)],
                             "managingOrganization": {"reference": f"Organization/{self.hospital['id']}"}}
                      for code, name in (("ER", "Emergency room"), ("HU", "Hospital unit"))}

    def setup(self) -> Request:
        """The hospital and its units, sent once before any patient."""
        return Request("POST", "", orjson.dumps(patient_bundle(PatientResources([self.hospital, *self.units.values()]))))

    def register(self, number: int, sex: str, birth: datetime) -> tuple[Request, str]:
        """The patient with their own care team (a transaction), and the Patient reference."""
        sex_code = SEX_FEMALE if sex == "F" else SEX_MALE
        built = self.builder.build([Event(number, birth, None, BIRTH), Event(number, birth, None, sex_code)])
        resources = [r for r in built.resources if r["resourceType"] != "Provenance"]
        built.resources = resources
        bundle = patient_bundle(built)
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        return Request("POST", "", orjson.dumps(bundle)), f"Patient/{patient['id']}"

    def arrival(self, number: int, patient: str, when: datetime) -> Resource:
        """The ED Encounter, status `arrived`; later events update this dict and PUT it again."""
        return {"resourceType": "Encounter", "id": stable_uuid(f"{self.namespace}/{number}/encounter"),
                "meta": profile("us-core-encounter"),
                "identifier": [{"system": TRAJSIM_IDENTIFIERS + "encounter-id", "value": f"{self.namespace}/{number}"}],
                "status": "arrived", "class": self._class("EMER"), "type": [self.builder.concept(ED_VISIT)],
                "subject": {"reference": patient}, "period": {"start": fhir_datetime(when)},
                "location": [self._at("ER", when)],
                "serviceProvider": {"reference": f"Organization/{self.hospital['id']}"}}

    @staticmethod
    def arrived(encounter: Resource) -> Request:
        return _put(encounter)

    def triaged(self, encounter: Resource, esi: int) -> Request:
        encounter["status"] = "triaged"
        encounter["priority"] = concept(ACT_PRIORITY, *PRIORITY_BY_ESI[esi])
        return _put(encounter)

    def roomed(self, encounter: Resource, bed: int) -> Request:
        encounter["status"] = "in-progress"
        encounter["location"][-1]["location"]["display"] = f"Emergency room, bed {bed}"
        return _put(encounter)

    def admitted(self, encounter: Resource, when: datetime) -> Request:
        """Transfer from the ED to a ward: the class becomes inpatient, the ED location is closed."""
        moment = fhir_datetime(when)
        encounter["classHistory"] = [{"class": encounter["class"], "period": {"start": encounter["period"]["start"],
                                                                              "end": moment}}]
        encounter["class"] = self._class("IMP")
        encounter["type"] = [self.builder.concept(EMERGENCY_ADMISSION)]
        self._leave(encounter, moment)
        encounter["location"].append(self._at("HU", when))
        return _put(encounter)

    def discharged(self, encounter: Resource, when: datetime) -> Request:
        moment = fhir_datetime(when)
        encounter["status"] = "finished"
        encounter["period"]["end"] = moment
        self._leave(encounter, moment)
        encounter["hospitalization"] = {"dischargeDisposition": concept(DISCHARGE_DISPOSITION, "home", "Home")}
        return _put(encounter)

    def observation(self, encounter: Resource, code: str, value: float | tuple[float, float], when: datetime) -> Request:
        """A vital sign or lab result (a blood pressure `value` is a (systolic, diastolic) pair)."""
        domain = self.builder.domain(code)
        resource = self._about(encounter, "Observation", code, {
            "meta": profile(VITAL_SIGN_PROFILES.get(code, "us-core-vital-signs") if domain == "vital"
                            else "us-core-observation-lab"),
            "status": "final", "category": OBSERVATION_CATEGORIES[domain], "effectiveDateTime": fhir_datetime(when)})
        if code == BLOOD_PRESSURE_PANEL[0]:
            resource["code"] = concept(LOINC, code.split("/", 1)[1], BLOOD_PRESSURE_PANEL[1])
            resource["component"] = [{"code": self.builder.concept(part), "valueQuantity": self.quantity(part, v)}
                                     for part, v in zip(("LOINC/8480-6", "LOINC/8462-4"), value)]
        else:
            resource["code"] = self.builder.concept(code)
            resource["valueQuantity"] = self.quantity(code, value)
        return _put(resource)

    def diagnosis(self, encounter: Resource, code: str, when: datetime) -> Request:
        return _put(self._about(encounter, "Condition", code, {
            "meta": profile("us-core-condition-encounter-diagnosis"), "clinicalStatus": CONDITION_ACTIVE,
            "verificationStatus": CONFIRMED, "category": ENCOUNTER_DIAGNOSIS, "code": self.builder.concept(code),
            "onsetDateTime": fhir_datetime(when), "recordedDate": fhir_datetime(when)}))

    def order(self, encounter: Resource, code: str, reason: str, when: datetime) -> Request:
        return _put(self._about(encounter, "MedicationRequest", code, {
            "meta": profile("us-core-medicationrequest"), "status": "active", "intent": "order",
            "reportedBoolean": False, "medicationCodeableConcept": self.builder.concept(code),
            "authoredOn": fhir_datetime(when), "reasonCode": [self.builder.concept(reason)],
            "requester": {"reference": f"Organization/{self.hospital['id']}"}}))

    def quantity(self, code: str, value: float) -> dict[str, Any]:
        unit = self.builder.vocabulary[code].unit
        return {"value": round(value, DECIMALS.get(code)), "unit": unit, "system": UCUM, "code": unit}

    # --- helpers ---------------------------------------------------------------------------------
    def _about(self, encounter: Resource, resource_type: str, code: str, fields: Resource) -> Resource:
        """A resource of the encounter's patient, its id fixed by encounter, type and code."""
        return {"resourceType": resource_type, "id": stable_uuid(f"{encounter['id']}/{resource_type}/{code}"),
                **fields, "subject": copy.copy(encounter["subject"]),
                "encounter": {"reference": f"Encounter/{encounter['id']}"}}

    def _at(self, unit: str, when: datetime) -> Resource:
        return {"location": {"reference": f"Location/{self.units[unit]['id']}"}, "status": "active",
                "period": {"start": fhir_datetime(when)}}

    @staticmethod
    def _leave(encounter: Resource, moment: str) -> None:
        current = encounter["location"][-1]
        if current["status"] == "active":
            current["status"] = "completed"
            current["period"]["end"] = moment

    @staticmethod
    def _class(code: str) -> dict[str, str]:
        return {"system": ACT_CODE, "code": code, "display": ENCOUNTER_CLASSES[code]}
