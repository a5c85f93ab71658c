"""Where care happens and who gives it: each city has a primary-care clinic and a hospital
(Organization + Location), staffed by practitioners. A patient's care team is fixed by identity.

Provider resources are shared by every patient of a city and have ids that depend only on what
they are, so loading many patients' bundles (which PUT them) creates each provider once.
NPIs start with 9, a prefix the NPI registry never issues, and carry a valid Luhn check digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir_export.demographics import Place, address, draw_name, phone
from fhir_export.identity import stable_random, stable_uuid
from fhir_export.terminology import LOCATION_TYPE, NPI, ORGANIZATION_TYPE, TRAJSIM_IDENTIFIERS, concept, profile

Resource = dict[str, Any]
PRIMARY_CARE_PHYSICIANS_PER_CLINIC = 4
SHARED_TYPES = frozenset({"Organization", "Location", "Practitioner"})  # one copy per provider, not per patient


def npi(key: str) -> str:
    """A 10-digit NPI-shaped identifier (prefix 9) with the ISO/IEC 7812 check digit over 80840 + base."""
    base = f"9{stable_random(key).randrange(10**8):08d}"
    digits = [int(d) for d in "80840" + base]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if position % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return base + str((10 - total % 10) % 10)


@dataclass(frozen=True)
class CareTeam:
    """The providers one patient sees: a clinic and its physician, a hospital and its physicians, and
    the pharmacy that fills the patient's prescriptions."""

    clinic: Resource
    clinic_location: Resource
    primary_physician: Resource
    hospital: Resource
    hospital_location: Resource
    emergency_physician: Resource
    hospitalist: Resource
    pharmacy: Resource

    def resources(self) -> list[Resource]:
        return [self.clinic, self.clinic_location, self.primary_physician, self.hospital,
                self.hospital_location, self.emergency_physician, self.hospitalist, self.pharmacy]

    def for_class(self, encounter_class: str) -> tuple[Resource, Resource, Resource]:
        """(organization, location, attending practitioner) of a visit of this encounter class."""
        if encounter_class == "AMB":
            return self.clinic, self.clinic_location, self.primary_physician
        physician = self.emergency_physician if encounter_class == "EMER" else self.hospitalist
        return self.hospital, self.hospital_location, physician


def _organization(place: Place, kind: str, name: str, type_code: str, type_display: str) -> Resource:
    key = f"trajsim/{place.city}/{place.state}/{kind}"
    rng = stable_random(key)
    return {"resourceType": "Organization", "id": stable_uuid(key), "meta": profile("us-core-organization"),
            "identifier": [{"system": NPI, "value": npi(key)}], "active": True,
            "type": [concept(ORGANIZATION_TYPE, type_code, type_display)], "name": name,
            "telecom": [{"system": "phone", "value": phone(rng, place), "use": "work"}],
            "address": [address(rng, place) | {"use": "work"}]}


def _location(organization: Resource, type_code: str, type_display: str) -> Resource:
    """The organization's site; the patient's bundle links `managingOrganization` (see care_team)."""
    key = f"{organization['id']}/location"
    return {"resourceType": "Location", "id": stable_uuid(key), "meta": profile("us-core-location"),
            "identifier": [{"system": TRAJSIM_IDENTIFIERS + "location-id", "value": key}], "status": "active", "name": organization["name"], "type": [concept(LOCATION_TYPE, type_code, type_display)],
            "telecom": organization["telecom"], "address": organization["address"][0]}


def _practitioner(organization: Resource, role: str) -> Resource:
    key = f"{organization['id']}/{role}"
    rng = stable_random(key)
    return {"resourceType": "Practitioner", "id": stable_uuid(key), "meta": profile("us-core-practitioner"),
            "identifier": [{"system": NPI, "value": npi(key)}], "active": True,
            "name": [draw_name(rng, rng.choice("FM"), prefix="Dr.")],
            # reached at the practice they work for
            "telecom": organization["telecom"], "address": organization["address"]}


@cache
def _city_providers(place: Place) -> tuple[Resource, ...]:
    clinic = _organization(place, "clinic", f"{place.city} Family Medicine", "prov", "Healthcare Provider")
    hospital = _organization(place, "hospital", f"{place.city} General Hospital", "prov", "Healthcare Provider")
    pharmacy = _organization(place, "pharmacy", f"{place.city} Community Pharmacy", "prov", "Healthcare Provider")
    physicians = tuple(_practitioner(clinic, f"physician-{n}") for n in range(PRIMARY_CARE_PHYSICIANS_PER_CLINIC))
    return (clinic, _location(clinic, "PC", "primary care clinic"), hospital,
            _location(hospital, "HOSP", "Hospital"), _practitioner(hospital, "emergency"),
            _practitioner(hospital, "hospitalist"), pharmacy, *physicians)


def care_team(place: Place, patient_key: str) -> CareTeam:
    """The patient's providers, as copies whose top-level fields the patient's bundle may set (the
    nested values stay shared and must not be modified)."""
    clinic, clinic_location, hospital, hospital_location, emergency, hospitalist, pharmacy, *physicians = _city_providers(place)
    physician = physicians[stable_random(f"{patient_key}/physician").randrange(len(physicians))]
    return CareTeam(*(dict(r) for r in (clinic, clinic_location, physician, hospital, hospital_location, emergency,
                                         hospitalist, pharmacy)))
