"""Canonical events of one patient -> FHIR R4 resources as plain dicts (the fast path), shaped
after the US Core profiles a US EHR exports.

Resources are built in one pass over the patient's time-ordered events. Every reference to a
resource is one shared dict, so the same resources serve a transaction bundle (`urn:uuid:`
references) and bulk NDJSON (`Type/id` references) by flipping those dicts, not by rebuilding.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any

from fhir_export.chronic_care import care_team as chronic_care_team
from fhir_export.chronic_care import end_care_team, goal, goal_targets
from fhir_export.demographics import patient_details
from fhir_export.dispenses import dispense, fill_times
from fhir_export.guardian import adulthood, end_guardianship, guardian
from fhir_export.identity import IdMinter, stable_random
from fhir_export.imaging import imaging_exams, imaging_study
from fhir_export.implants import implant, implanted_devices
from fhir_export.lab_orders import LabOrder, order_lab
from fhir_export.notes import NOTE_TYPES, Reading, VisitRecord, age_phrase, write_note
from fhir_export.providers import SHARED_TYPES, CareTeam, care_team
from fhir_export.supplies import supplies_for, supply_delivery
from fhir_export.tables import load_table
from fhir_export.terminology import (
    ACT_CODE, BLOOD_PRESSURE_PANEL, CHIEF_COMPLAINT, BLOOD_PRESSURE_PARTS, CARE_PLAN_CATEGORY, CONDITION_ACTIVE, CONDITION_RESOLVED,
    ALLERGY_ACTIVE, ALLERGY_CONFIRMED, CONDITION_ASSERTED_DATE, CONFIRMED, DISCHARGE_DISPOSITION, DOCUMENT_CATEGORY, ENCOUNTER_CLASSES, ENCOUNTER_DIAGNOSIS, IDENTIFIER_TYPE,
    INTERPRETATIONS, LAB_REPORT_CATEGORY, LOINC, MEDICATION_CATEGORIES, MIME_TYPE_SUFFICIENT, NOT_PERFORMED,
    OBSERVATION_CATEGORIES, OBSERVATION_CATEGORY, PARTICIPATION_TYPE,
    PROBLEM_LIST_ITEM,
    PROVENANCE_AGENT, TRAJSIM_IDENTIFIERS, UCUM, concept, profile,
)
from trajsim.clock import DAYS_PER_YEAR
from trajsim.events import (
    BIRTH, CAUSE_OF_DEATH, CONDITION_END, DEATH, MEDICATION_END, PREGNANCY_STATUS, SEX_FEMALE, SEX_MALE, SMOKING_STATUS,
    VISIT_END, VISIT_START_PREFIX, Event,
)
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.labs import POSITIVE, ReferenceInterval, order_of, reference_interval
from trajsim.knowledge.therapy import RENEWAL_DAYS, supply_days
from trajsim.vocab import Vocabulary, domain_of
from trajsim.vocab.local import system_and_code

Resource = dict[str, Any]

CAUSE_OF_DEATH_CODE = concept(LOINC, CAUSE_OF_DEATH.removeprefix("LOINC/"), "Cause of death [US Standard Certificate of Death]")
SURVEY_CATEGORY = [concept(OBSERVATION_CATEGORY, "survey", "Survey")]  # LOINC classes 69453-9 as a survey item
VISIT_WITHOUT_TYPE = "SNOMED/308335008"  # "Patient encounter procedure", when the record names no visit type
COUNTED_UNITS = frozenset({"{tbl}", "{cap}"})  # doses a pharmacy dispenses by count
PERIODS_PER_DAY = {"d": 1.0, "h": 24.0, "min": 24.0 * 60}
# An acute illness the record never ends is a current problem for this long after its diagnosis.
ACUTE_PROBLEM_DAYS = 30
PERSON_WORDS = {("F", False): "woman", ("F", True): "girl", ("M", False): "man", ("M", True): "boy"}
VITAL_SIGN_PROFILES = {"LOINC/8302-2": "us-core-body-height", "LOINC/29463-7": "us-core-body-weight",
                       "LOINC/39156-5": "us-core-bmi", BLOOD_PRESSURE_PANEL[0]: "us-core-blood-pressure",
                       "LOINC/8867-4": "us-core-heart-rate", "LOINC/9279-1": "us-core-respiratory-rate",
                       "LOINC/8310-5": "us-core-body-temperature", "LOINC/59408-5": "us-core-pulse-oximetry",
                       "LOINC/59576-9": "pediatric-bmi-for-age", "LOINC/77606-2": "pediatric-weight-for-height",
                       "LOINC/9843-4": "us-core-head-circumference",
                       "LOINC/8289-1": "head-occipital-frontal-circumference-percentile"}
# A coding US Core asks for beside the one recorded: pulse oximetry is also oxygen saturation (2708-6).
EXTRA_CODINGS = {"LOINC/59408-5": "LOINC/2708-6"}
SOCIAL_PROFILES = {SMOKING_STATUS: "us-core-smokingstatus", PREGNANCY_STATUS: "us-core-observation-pregnancystatus"}
# A questionnaire's total score -> the panel of its answers (LOINC), the screening-assessment Observation
# that groups it with `hasMember`.
QUESTIONNAIRE_PANELS = {"LOINC/55758-7": "LOINC/55757-9", "LOINC/44261-6": "LOINC/44249-1"}
NO_META: dict[str, Any] = {}
NO_CONTEXT: dict[str, Any] = {}  # a fact outside any visit


@lru_cache(maxsize=4096)
def fhir_datetime(moment: datetime) -> str:
    """FHIR dateTime with an explicit zone (simulated clocks run in UTC); cached, since a visit's
    facts share a few instants."""
    return moment.isoformat(timespec="seconds") + "Z"


def _flag(value: float, known: ReferenceInterval | None) -> str | None:
    """"L" or "H" for a value outside its reference range, "N" inside it, None without one."""
    if known is None:
        return None
    return "L" if known.low is not None and value < known.low else "H" if known.high is not None and value > known.high else "N"


def _quantity(value: float, unit: str | None) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit} if unit else {"value": value}


@lru_cache(maxsize=1024)
def _reference_range(known: ReferenceInterval, unit: str | None) -> list[dict[str, Any]]:
    """An Observation's `referenceRange`, shared by every result of one interval (a table has few)."""
    bounds = {"low": known.low, "high": known.high}
    return [{name: _quantity(bound, unit) for name, bound in bounds.items() if bound is not None}]


@cache
def dosages() -> dict[str, dict[str, Any]]:
    """RxNorm code -> FHIR Dosage, from the labels cited in data/dosage.csv."""
    out = {}
    columns = ("code", "text", "dose", "dose_unit", "frequency", "period", "period_unit", "as_needed")
    for row in load_table("dosage", columns):
        out[row["code"]] = {
            "text": row["text"], "asNeededBoolean": row["as_needed"] == "true",
            "timing": {"repeat": {"frequency": int(row["frequency"]), "period": float(row["period"]),
                                  "periodUnit": row["period_unit"]}},
            "doseAndRate": [{"doseQuantity": _quantity(float(row["dose"]), row["dose_unit"])}],
        }
    return out


@cache
def long_term_supply() -> dict[str, float]:
    """RxNorm code of a long-term drug -> days one dispense lasts (medications.csv refill_days)."""
    return supply_days(load_knowledge())


@dataclass
class PatientResources:
    """One patient's resources plus the shared reference dicts that point between them."""

    resources: list[Resource] = field(default_factory=list)
    # id -> (the shared reference dict, its bundle form, its Type/id form)
    _references: dict[str, tuple[dict[str, str], str, str]] = field(default_factory=dict)

    def reference(self, resource: Resource) -> dict[str, str]:
        rid = resource["id"]
        known = self._references.get(rid)
        if known is None:
            bundle_form = f"urn:uuid:{rid}"
            known = self._references[rid] = ({"reference": bundle_form}, bundle_form, f"{resource['resourceType']}/{rid}")
        return known[0]

    def use_bundle_references(self) -> None:
        for ref, bundle_form, _ in self._references.values():
            ref["reference"] = bundle_form

    def use_relative_references(self) -> None:
        for ref, _, relative_form in self._references.values():
            ref["reference"] = relative_form


class ResourceBuilder:
    """Turns a patient's events into FHIR R4 resources.

    `crosswalk` maps a condition code to an extra coding (e.g. SNOMED -> ICD-10-CM) shown beside it
    (with `EXTRA_CODINGS`);
    `chronic` lists condition codes kept on the problem list, each with a care plan; `allergy_kinds`
    gives each allergy code its (category, criticality); `home` is the (state, city) patients live in,
    None for any.
    """

    def __init__(self, namespace: str, vocabulary: Vocabulary, crosswalk: Mapping[str, str] | None = None,
                 chronic: frozenset[str] = frozenset(), allergy_kinds: Mapping[str, tuple[str, str]] | None = None,
                 home: tuple[str | None, str | None] = (None, None)) -> None:
        self.namespace = namespace
        self.vocabulary = vocabulary
        self.crosswalk = EXTRA_CODINGS | dict(crosswalk or {})
        self.chronic = chronic
        self.allergy_kinds = dict(allergy_kinds or {})
        self.home = home
        self._concepts: dict[str, dict[str, Any]] = {}
        # per code, asked for every fact exported: its domain, its display, an Observation's meta,
        # category and code
        self._domains: dict[str, str | None] = {}
        self._displays: dict[str, str] = {}
        self._observation_heads: dict[tuple[str, str], tuple[dict[str, Any], list[Any], dict[str, Any]]] = {}

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

    def domain(self, code: str) -> str | None:
        """The kind of fact a code records: as the builder's vocabulary files it (which may hold a
        source's own local codes), else the shared `domain_of`."""
        try:
            return self._domains[code]
        except KeyError:
            known = self.vocabulary.get(code)
            domain = self._domains[code] = known.domain if known is not None and known.domain else domain_of(code)
            return domain

    def display(self, code: str) -> str:
        try:
            return self._displays[code]
        except KeyError:
            known = self.vocabulary.get(code)
            display = self._displays[code] = known.display if known is not None else code
            return display

    def observation_head(self, code: str, domain: str) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
        """An Observation's `meta`, `category` and `code` for a measurement of `code` in `domain`
        ("vital" or "lab"), shared by every such Observation."""
        key = (code, domain)
        head = self._observation_heads.get(key)
        if head is None:
            meta = profile(VITAL_SIGN_PROFILES.get(code, "us-core-vital-signs") if domain == "vital"
                           else "us-core-observation-lab")
            coded = (concept(LOINC, code.split("/", 1)[1], BLOOD_PRESSURE_PANEL[1]) if code == BLOOD_PRESSURE_PANEL[0]
                     else self.concept(code))
            head = self._observation_heads[key] = (meta, OBSERVATION_CATEGORIES[domain], coded)
        return head

    def _coding(self, code: str) -> dict[str, str]:
        system, local = system_and_code(code)
        coding = {"system": system, "code": local}
        known = self.vocabulary.get(code)
        if known is not None:
            coding["display"] = known.display
        return coding

    def build(self, events: Sequence[Event]) -> PatientResources:
        """All resources of one patient: Patient and providers first, then in the order their facts
        occurred, then the Provenance of the whole record."""
        return _PatientBuild(self, events).run()

    def start(self, events: Sequence[Event]) -> _PatientBuild:
        """An open build for a live feed: the resources of a patient's first `events` (birth and
        sex), to which `apply` adds each later event as it happens. Visits close on their own end
        events; no Provenance is added, since the record is never complete."""
        build = _PatientBuild(self, events)
        for event in events:
            build.apply(event)
        return build


@dataclass
class _Visit:
    """An open encounter and what its note and lab reports will draw on."""

    resource: Resource
    record: VisitRecord
    organization: Resource
    location: Resource
    practitioner: Resource
    context: dict[str, Any]  # {"encounter": its reference}, for every resource recorded in the visit
    labs: dict[str, LabOrder] = field(default_factory=dict)  # by panel (or single test) code


class _PatientBuild:
    """The state of one pass over one patient's events."""

    def __init__(self, builder: ResourceBuilder, events: Sequence[Event]) -> None:
        self.b = builder
        self.events = events
        self.subject_id = events[0].subject_id
        self.key = f"{builder.namespace}/{self.subject_id}"
        self.ids = IdMinter(self.key)
        self.out = PatientResources()
        self.sex = "F" if any(e.code == SEX_FEMALE for e in events[:4]) else "M"
        self.birth: datetime | None = None
        self.death = next((e.time for e in reversed(events) if e.code == DEATH), None)
        self.visits: dict[int, _Visit] = {}  # the open ones
        self.encounters: dict[int, Resource] = {}  # every Encounter by encounter id
        self.conditions: dict[str, Resource] = {}
        self.diagnosed: dict[str, datetime] = {}  # when each condition in `conditions` was diagnosed
        self.resolved: dict[str, Resource] = {}  # conditions that have ended, by code (the latest of each)
        self.care_plans: dict[str, Resource] = {}
        self.goals: dict[str, Resource] = {}  # the active ones, by the condition they serve
        self.chronic_care: Resource | None = None  # the CareTeam, from the first chronic condition
        self.guardian: Resource | None = None
        self.orders: dict[str, Resource] = {}
        self.supplied: set[str] = set()  # the supply codes delivered so far, so a device comes once
        self.allergies: list[str] = []  # displays of the allergies recorded so far
        self.blood_pressure: dict[tuple[int | None, datetime], Resource] = {}
        # every code of each encounter (outside encounters, of each instant), to tell its lab orders apart
        self.drawn_together: dict[int | datetime, set[str]] = {}
        for event in events:
            self.drawn_together.setdefault(event.time if event.encounter_id is None else event.encounter_id,
                                           set()).add(event.code)
        self.outside_labs: dict[datetime, dict[str, LabOrder]] = {}  # the orders of results outside a visit
        self.patient, self.team = self._patient()
        self.subject = self.out.reference(self.patient)

    def run(self) -> PatientResources:
        for event in self.events:
            self._apply(event)
        for encounter_id in list(self.visits):
            self._close_visit(encounter_id, None)
        self._finish()
        return self.out

    # --- patient and providers -------------------------------------------------------------
    def _patient(self) -> tuple[Resource, CareTeam]:
        details, place = patient_details(self.key, self.sex, *self.b.home)
        team = care_team(place, self.key)
        patient = {"resourceType": "Patient", "id": self.ids.next(), "meta": profile("us-core-patient"),
                   "extension": details["extension"],
                   "identifier": [{"use": "usual", "type": concept(IDENTIFIER_TYPE, "MR", "Medical record number"),
                                   "system": TRAJSIM_IDENTIFIERS + "subject-id", "value": self.key}],
                   "name": details["name"], "telecom": details["telecom"],
                   "gender": "female" if self.sex == "F" else "male",
                   "address": details["address"], "communication": details["communication"]}
        self.out.resources.append(patient)
        self.out.resources.extend(team.resources())
        for location, organization in ((team.clinic_location, team.clinic), (team.hospital_location, team.hospital)):
            location["managingOrganization"] = self.out.reference(organization)
        patient["generalPractitioner"] = [self.out.reference(team.primary_physician)]
        patient["managingOrganization"] = self.out.reference(team.clinic)
        return patient, team

    # --- one event ---------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Add one more event (in time order) to the resources built so far, in `out`."""
        self._apply(event)

    def _apply(self, event: Event) -> None:
        code = event.code
        if code == BIRTH:
            self.birth = event.time
            self.patient["birthDate"] = event.time.date().isoformat()
        elif code in (SEX_FEMALE, SEX_MALE):
            return
        elif code == DEATH:
            self.patient["deceasedDateTime"] = fhir_datetime(event.time)
            if event.text:
                self._cause_of_death(event)
        elif code.startswith(VISIT_START_PREFIX):
            self._open_visit(event)
        elif code == VISIT_END:
            self._close_visit(event.encounter_id, event.time)
        elif code == CONDITION_END:
            self._end_condition(event)
        elif code == MEDICATION_END:
            order = self.orders.pop(event.text or "", None)
            if order is not None:
                order["status"] = "completed"
                self._dispenses(order, event.time)
        else:
            visit = self.visits.get(event.encounter_id) if event.encounter_id is not None else None
            domain = self.b.domain(code)
            if domain == "encounter_type":
                if visit is not None:
                    visit.resource["type"] = [self.b.concept(code)]
                    visit.record.visit_type = self.b.display(code)
                    if event.text in self.conditions:  # the known condition the visit is for (an exacerbation)
                        condition = self.conditions[event.text]
                        self._give_reason(visit, condition)
                        visit.resource["diagnosis"] = [{"condition": self.out.reference(condition), "use": CHIEF_COMPLAINT}]
            elif domain == "condition":
                self._condition(event, visit)
            elif domain in ("vital", "lab") and event.numeric_value is not None:
                self._observation(event, visit, domain)
            elif domain == "lab" and event.text:
                self._lab_finding(event, visit)
            elif domain == "medication":
                self._medication(event, visit)
            elif domain == "immunization":
                self._immunization(event, visit)
            elif domain == "procedure":
                self._procedure(event, visit)
            elif domain == "allergy":
                self._allergy(event)
            elif domain == "social" and event.text:
                self._social_status(event, visit)
            elif domain == "survey" and event.numeric_value is not None:
                self._questionnaire(event, visit)

    def _add(self, resource: Resource) -> Resource:
        """Append a resource built as `{"resourceType": ..., "id": self.ids.next(), ...}`."""
        self.out.resources.append(resource)
        return resource

    @staticmethod
    def _context(visit: _Visit | None) -> dict[str, Any]:
        return visit.context if visit is not None else NO_CONTEXT

    def _cause_of_death(self, event: Event) -> None:
        """The cause a death certificate states (LOINC 69453-9), in the encounter the patient died in."""
        encounter = self.encounters.get(event.encounter_id)
        self._add({"resourceType": "Observation", "id": self.ids.next(), "meta": profile("us-core-simple-observation"),
                   "status": "final", "category": SURVEY_CATEGORY, "code": CAUSE_OF_DEATH_CODE,
                   "subject": self.subject, **({"encounter": self.out.reference(encounter)} if encounter else {}),
                   "effectiveDateTime": fhir_datetime(event.time), "valueCodeableConcept": self.b.concept(event.text)})

    # --- visits ------------------------------------------------------------------------------
    def _open_visit(self, event: Event) -> None:
        encounter_class = event.code.removeprefix(VISIT_START_PREFIX)
        organization, location, practitioner = self.team.for_class(encounter_class)
        period = {"start": fhir_datetime(event.time)}  # the attending's too: ends with the visit
        resource = self._add({
            "resourceType": "Encounter", "id": self.ids.next(), "meta": profile("us-core-encounter"),
            "identifier": [{"system": TRAJSIM_IDENTIFIERS + "encounter-id", "value": f"{self.key}/{event.encounter_id}"}],
            "status": "finished",
            "class": {"system": ACT_CODE, "code": encounter_class,
                      "display": ENCOUNTER_CLASSES.get(encounter_class, encounter_class)},
            "subject": self.subject,
            "participant": [{"type": [concept(PARTICIPATION_TYPE, "ATND", "attender")], "period": period,
                             "individual": self.out.reference(practitioner)}],
            "period": period,
            "location": [{"location": self.out.reference(location)}],
            "serviceProvider": self.out.reference(organization),
        })
        age, child = age_phrase(self.birth, event.time)
        age_years = (event.time - self.birth).days / 365.25 if self.birth is not None else None
        if self.guardian is None and self.birth is not None and event.time < adulthood(self.birth):
            self.guardian = self._add(guardian(self.ids.next(), self.key, self.patient, self.subject, self.birth))
        record = VisitRecord(encounter_class, None, event.time, None, age, PERSON_WORDS[self.sex, child], age_years,
                             history=self._current_problems(event.time), allergies=list(self.allergies),
                             medications=[self.b.display(code) for code in self.orders])
        self.visits[event.encounter_id] = _Visit(resource, record, organization, location, practitioner,
                                                 {"encounter": self.out.reference(resource)})
        self.encounters[event.encounter_id] = resource

    def _current_problems(self, moment: datetime) -> list[str]:
        """The conditions active at `moment`: chronic ones until they end, acute ones until they
        end or, when the record never ends them, for `ACUTE_PROBLEM_DAYS` after diagnosis."""
        return [self.b.display(code) for code in self.conditions
                if code in self.b.chronic or (moment - self.diagnosed[code]).days < ACUTE_PROBLEM_DAYS]

    def _close_visit(self, encounter_id: int | None, end: datetime | None) -> None:
        visit = self.visits.pop(encounter_id, None)
        if visit is None:
            return
        encounter, record = visit.resource, visit.record
        if end is not None:
            encounter["period"]["end"] = fhir_datetime(end)
            record.end = end
        record.died = self.death is not None and (end is None or end >= self.death)
        encounter.setdefault("type", [self.b.concept(VISIT_WITHOUT_TYPE)])
        if record.encounter_class == "IMP":
            disposition = ("exp", "Expired") if record.died else ("home", "Home")
            encounter["hospitalization"] = {"dischargeDisposition": concept(DISCHARGE_DISPOSITION, *disposition)}
        self._lab_reports(visit)
        self._note(visit)

    def _lab_reports(self, visit: _Visit) -> None:
        """One DiagnosticReport per panel (or single test) ordered and resulted in the visit."""
        for order in visit.labs.values():
            when = order.results[0]["effectiveDateTime"]
            self._add({"resourceType": "DiagnosticReport", "id": self.ids.next(), "meta": profile("us-core-diagnosticreport-lab"),
                       "basedOn": [self.out.reference(order.request)],
                       "status": "final", "category": LAB_REPORT_CATEGORY, "code": order.request["code"], "subject": self.subject,
                       "encounter": self.out.reference(visit.resource), "effectiveDateTime": when, "issued": when,
                       "performer": [self.out.reference(visit.organization)],
                       "specimen": [self.out.reference(order.specimen)],
                       "result": [self.out.reference(o) for o in order.results]})

    def _order_lab(self, observation: Resource, event: Event, visit: _Visit | None) -> None:
        """Link a lab result to its order and specimen: the visit's order of the result's panel
        (or test), placed with the visit's first result of it; results outside a visit share the
        order of their panel drawn at the same instant."""
        orders = visit.labs if visit is not None else self.outside_labs.setdefault(event.time, {})
        code = event.code
        present = self.drawn_together.get(event.encounter_id if visit is not None else event.time, {code})
        panel = order_of(code, present)
        order = orders.get(panel)
        if order is None:
            when = observation["effectiveDateTime"]
            requester = visit.practitioner if visit is not None else self.team.primary_physician
            order_code = self.b.concept(panel)
            accession = f"{self.key}/{observation['id'][:8]}"
            order = orders[panel] = order_lab(
                (self.ids.next(), self.ids.next()), order_code, self.b.display(panel), accession, self.subject,
                self._context(visit), visit.resource["period"]["start"] if visit is not None else when, when,
                self.out.reference(requester), self.out.reference)
            self.out.resources[-1:-1] = [order.request, order.specimen]  # before the result that refers to them
        observation["basedOn"] = [self.out.reference(order.request)]
        observation["specimen"] = self.out.reference(order.specimen)
        order.results.append(observation)

    def _note(self, visit: _Visit) -> None:
        record = visit.record
        text = write_note(record, stable_random(f"{self.key}/{visit.resource['id']}/note"))
        note_code, note_display = NOTE_TYPES.get(record.encounter_class, NOTE_TYPES["AMB"])
        period = visit.resource["period"]
        self._add({
            "resourceType": "DocumentReference", "id": self.ids.next(), "meta": profile("us-core-documentreference"),
            "identifier": [{"system": TRAJSIM_IDENTIFIERS + "note-id",
                            "value": visit.resource["identifier"][0]["value"] + "/note"}],
            "status": "current", "docStatus": "final", "type": concept(LOINC, note_code, note_display),
            "category": [concept(DOCUMENT_CATEGORY, "clinical-note", "Clinical Note")],
            "subject": self.subject, "date": period.get("end", period["start"]),
            "author": [self.out.reference(visit.practitioner)], "custodian": self.out.reference(visit.organization),
            "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                        "data": base64.b64encode(text.encode()).decode("ascii")},
                         "format": MIME_TYPE_SUFFICIENT}],
            "context": {"encounter": [self.out.reference(visit.resource)], "period": dict(period)},
        })

    # --- clinical facts ----------------------------------------------------------------------
    def _condition(self, event: Event, visit: _Visit | None) -> None:
        code, when = event.code, fhir_datetime(event.time)
        chronic = code in self.b.chronic
        condition = self._add({
            "resourceType": "Condition", "id": self.ids.next(),
            "meta": profile("us-core-condition-problems-health-concerns" if chronic else "us-core-condition-encounter-diagnosis"),
            "extension": [{"url": CONDITION_ASSERTED_DATE, "valueDateTime": when}],
            "clinicalStatus": CONDITION_ACTIVE, "verificationStatus": CONFIRMED,
            "category": PROBLEM_LIST_ITEM if chronic else ENCOUNTER_DIAGNOSIS, "code": self.b.concept(code),
            "subject": self.subject, **self._context(visit), "onsetDateTime": when, "recordedDate": when,
        })
        self.conditions[code] = condition
        self.diagnosed[code] = event.time
        if visit is not None:
            self._give_reason(visit, condition)
            visit.record.diagnoses.append(self.b.display(code))
        if chronic:
            self._chronic_care(code, condition, visit, when)

    def _chronic_care(self, code: str, condition: Resource, visit: _Visit | None, when: str) -> None:
        """The care plan of a chronic condition, with the care team (the patient's one, formed at the
        first chronic condition) and the goal a guideline sets for it, if any."""
        if self.chronic_care is None:
            self.chronic_care = self._add(chronic_care_team(
                self.ids.next(), self.subject, self.out.reference(self.team.primary_physician),
                self.out.reference(self.team.clinic), when))
        if code not in self.goals and code in goal_targets():
            practitioner = visit.practitioner if visit is not None else self.team.primary_physician
            self.goals[code] = self._add(goal(self.ids.next(), code, self.subject, self.out.reference(condition),
                                              self.out.reference(practitioner), when, self.b.concept))
        display = self.b.display(code)
        self.care_plans[code] = self._add({
            "resourceType": "CarePlan", "id": self.ids.next(), "meta": profile("us-core-careplan"),
            "text": {"status": "generated",
                     "div": f'<div xmlns="http://www.w3.org/1999/xhtml">Care plan for {display}: ongoing '
                            f'management with scheduled follow-up.</div>'},
            "status": "active", "intent": "plan",
            "category": [concept(CARE_PLAN_CATEGORY, "assess-plan", "Assessment and Plan of Treatment")],
            "title": f"{display} care plan", "subject": self.subject, **self._context(visit),
            "period": {"start": when}, "created": when, "careTeam": [self.out.reference(self.chronic_care)],
            "addresses": [self.out.reference(condition)],
            **({"goal": [self.out.reference(self.goals[code])]} if code in self.goals else {}),
        })

    def _give_reason(self, visit: _Visit, condition: Resource) -> None:
        """A condition diagnosed or treated at a visit is a reason for it (once)."""
        reasons = visit.resource.setdefault("reasonReference", [])
        reference = self.out.reference(condition)
        if reference not in reasons:
            reasons.append(reference)
            visit.resource.setdefault("reasonCode", []).append(condition["code"])

    def _end_condition(self, event: Event) -> None:
        condition = self.conditions.pop(event.text or "", None)
        if condition is not None:
            self.resolved[event.text] = condition
            condition["clinicalStatus"] = CONDITION_RESOLVED
            condition["abatementDateTime"] = fhir_datetime(event.time)
        plan = self.care_plans.pop(event.text or "", None)
        if plan is not None:
            plan["status"] = "completed"
            plan["period"]["end"] = fhir_datetime(event.time)
        target = self.goals.pop(event.text or "", None)
        if target is not None:
            target["lifecycleStatus"] = "completed"

    def _observation(self, event: Event, visit: _Visit | None, domain: str) -> None:
        code, value, unit = event.code, event.numeric_value, event.unit
        known = self._reference_range(event)
        if visit is not None:
            visit.record.measurements.append(Reading(code, self.b.display(code), value, unit, _flag(value, known)))
        component = {"code": self.b.concept(code), "valueQuantity": _quantity(value, unit)}
        part = code
        if code in BLOOD_PRESSURE_PARTS:
            panel = self.blood_pressure.get((event.encounter_id, event.time))
            if panel is not None:
                panel["component"][BLOOD_PRESSURE_PARTS.index(code)] = component
                return
            code = BLOOD_PRESSURE_PANEL[0]
        meta, category, coded = self.b.observation_head(code, domain)
        observation = self._add({
            "resourceType": "Observation", "id": self.ids.next(), "meta": meta, "status": "final",
            "category": category, "code": coded, "subject": self.subject, **self._context(visit),
            "effectiveDateTime": fhir_datetime(event.time),
        })
        if code == BLOOD_PRESSURE_PANEL[0]:
            # A pressure is systolic over diastolic: a half the record lacks is stated as not performed.
            observation["component"] = [component if other == part else
                                        {"code": self.b.concept(other), "dataAbsentReason": NOT_PERFORMED}
                                        for other in BLOOD_PRESSURE_PARTS]
            self.blood_pressure[(event.encounter_id, event.time)] = observation
            return
        observation["valueQuantity"] = component["valueQuantity"]
        self._interpret(observation, event, known)
        if domain == "lab":
            self._order_lab(observation, event, visit)

    def _reference_range(self, event: Event) -> ReferenceInterval | None:
        """The laboratory's interval for the patient's sex and age at the result (none without a birth)."""
        if self.birth is None:
            return None
        return reference_interval(event.code, self.sex, (event.time - self.birth).days / DAYS_PER_YEAR)

    def _interpret(self, observation: Resource, event: Event, known: ReferenceInterval | None) -> None:
        if known is None:
            return
        observation["referenceRange"] = _reference_range(known, event.unit)
        observation["interpretation"] = INTERPRETATIONS[_flag(event.numeric_value, known)]

    def _lab_finding(self, event: Event, visit: _Visit | None) -> None:
        """A result reported as a coded finding (a urine test strip's positive or negative), with its
        order like any lab result; a positive reading is flagged abnormal."""
        observation = self._add({
            "resourceType": "Observation", "id": self.ids.next(), "meta": profile("us-core-observation-lab"),
            "status": "final", "category": OBSERVATION_CATEGORIES["lab"], "code": self.b.concept(event.code),
            "subject": self.subject, **self._context(visit), "effectiveDateTime": fhir_datetime(event.time),
            "valueCodeableConcept": self.b.concept(event.text),
            "interpretation": INTERPRETATIONS["A" if event.text == POSITIVE else "N"]})
        self._order_lab(observation, event, visit)

    def _medication(self, event: Event, visit: _Visit | None) -> None:
        code = event.code
        previous = self.orders.get(code)
        if previous is not None:
            previous["status"] = "completed"  # superseded by this renewal
            self._dispenses(previous, event.time)
        requester = visit.practitioner if visit is not None else self.team.primary_physician
        order = self._add({
            "resourceType": "MedicationRequest", "id": self.ids.next(), "meta": profile("us-core-medicationrequest"),
            "status": "active", "intent": "order",
            "category": MEDICATION_CATEGORIES.get(visit.record.encounter_class if visit else None, MEDICATION_CATEGORIES[None]),
            "reportedBoolean": False, "medicationCodeableConcept": self.b.concept(code), "subject": self.subject, **self._context(visit),
            "authoredOn": fhir_datetime(event.time), "requester": self.out.reference(requester),
        })
        if code in dosages():
            order["dosageInstruction"] = [dosages()[code]]
        if code in long_term_supply():
            order["dispenseRequest"] = self._dispense(event.time, long_term_supply()[code], dosages().get(code))
        indication = self.conditions.get(event.text or "")
        if indication is not None:
            order["reasonReference"] = [self.out.reference(indication)]
            if visit is not None:
                self._give_reason(visit, indication)
        elif event.text:
            order["reasonCode"] = [self.b.concept(event.text)]
        self.orders[code] = order
        if visit is not None and visit.record.encounter_class != "IMP":  # a stay's drugs are given there
            self._supplies(code, event, visit)
        if visit is not None:
            visit.record.prescriptions.append((self.b.display(code), self.b.display(event.text) if event.text else None))

    def _supplies(self, drug: str, event: Event, visit: _Visit) -> None:
        """What the visit that orders `drug` hands the patient with it (strips and a meter for insulin)."""
        supplier, when = self.out.reference(visit.organization), fhir_datetime(event.time)
        for supply in supplies_for(drug, event.text, self.supplied):
            self._add(supply_delivery(self.ids.next(), supply, self.subject, supplier, when))

    @staticmethod
    def _dispense(authored: datetime, days: float, dosage: dict[str, Any] | None) -> dict[str, Any]:
        """A long-term order covers the pharmacy's refills until it must be renewed at a visit; with
        a scheduled dose counted in tablets or capsules, each fill is what that supply takes."""
        request = {"validityPeriod": {"start": fhir_datetime(authored),
                                      "end": fhir_datetime(authored + timedelta(days=RENEWAL_DAYS))},
                   "numberOfRepeatsAllowed": max(math.ceil(RENEWAL_DAYS / days) - 1, 0)}
        dose = dosage["doseAndRate"][0]["doseQuantity"] if dosage is not None else None
        if dose is not None and dose.get("code") in COUNTED_UNITS and not dosage["asNeededBoolean"]:
            repeat = dosage["timing"]["repeat"]
            per_day = dose["value"] * repeat["frequency"] / (repeat["period"] / PERIODS_PER_DAY[repeat["periodUnit"]])
            request["quantity"] = _quantity(math.ceil(per_day * days), dose["code"])
        request["expectedSupplyDuration"] = {"value": days, "unit": "days", "system": UCUM, "code": "d"}
        return request

    def _dispenses(self, order: Resource, until: datetime) -> None:
        """The pharmacy's fills of an order that ends at `until`."""
        reference, pharmacy = self.out.reference(order), self.out.reference(self.team.pharmacy)
        for number, moment in enumerate(fill_times(order, until)):
            self._add(dispense(self.ids.next(), order, reference, pharmacy, fhir_datetime(moment), number == 0))

    def _procedure(self, event: Event, visit: _Visit | None) -> None:
        """A performed procedure, with the device it implants (before it) or the images it takes and
        their report (after it)."""
        code = event.code
        device_type = implanted_devices().get(code)
        device = None if device_type is None else self._add(implant(self.ids.next(), device_type, self.subject, event.time))
        procedure = self._add({"resourceType": "Procedure", "id": self.ids.next(), "meta": profile("us-core-procedure"),
                               "status": "completed", "code": self.b.concept(code), "subject": self.subject,
                               **self._context(visit), "performedDateTime": fhir_datetime(event.time)})
        if device is not None:
            procedure["focalDevice"] = [{"manipulated": self.out.reference(device)}]
        # the condition it is done for (a delivery's pregnancy may have ended at the same moment)
        reason = self.conditions.get(event.text or "") or self.resolved.get(event.text or "")
        if reason is not None:
            procedure["reasonReference"] = [self.out.reference(reason)]
            if visit is not None:
                self._give_reason(visit, reason)
        elif event.text:  # a reason the chart holds no condition for (an observation stay for chest pain)
            procedure["reasonCode"] = [self.b.concept(event.text)]
        exam = imaging_exams().get(code)
        if exam is not None:
            practitioner, organization = ((visit.practitioner, visit.organization) if visit is not None
                                          else (self.team.primary_physician, self.team.clinic))
            location = self.out.reference(visit.location) if visit is not None else None
            reasons = list(visit.resource.get("reasonReference", ())) if visit is not None else []
            for resource in imaging_study((self.ids.next(), self.ids.next()), exam, procedure,
                                          self.out.reference(practitioner), self.out.reference(organization),
                                          location, reasons, self.out.reference):
                self._add(resource)
        if visit is not None:
            visit.record.procedures.append(self.b.display(code))

    def _allergy(self, event: Event) -> None:
        category, criticality = self.b.allergy_kinds.get(event.code, (None, None))
        when = fhir_datetime(event.time)
        self._add({"resourceType": "AllergyIntolerance", "id": self.ids.next(), "meta": profile("us-core-allergyintolerance"),
                   "clinicalStatus": ALLERGY_ACTIVE, "verificationStatus": ALLERGY_CONFIRMED, "type": "allergy",
                   **({"category": [category]} if category else {}), **({"criticality": criticality} if criticality else {}),
                   "code": self.b.concept(event.code), "patient": self.subject, "onsetDateTime": when,
                   "recordedDate": when})
        self.allergies.append(self.b.display(event.code))

    def _social_status(self, event: Event, visit: _Visit | None) -> None:
        """A status asked at a visit (tobacco smoking 72166-2, pregnancy 82810-3), answered in SNOMED CT."""
        self._add({"resourceType": "Observation", "id": self.ids.next(),
                   "meta": profile(SOCIAL_PROFILES.get(event.code, "us-core-simple-observation")),
                   "status": "final", "category": OBSERVATION_CATEGORIES["social"], "code": self.b.concept(event.code),
                   "subject": self.subject, **self._context(visit), "effectiveDateTime": fhir_datetime(event.time),
                   "valueCodeableConcept": self.b.concept(event.text)})
        if visit is not None:
            visit.record.social_history.append(self.b.display(event.text))

    def _questionnaire(self, event: Event, visit: _Visit | None) -> None:
        """A questionnaire's total score and the panel that holds it, both US Core screening assessments
        in the survey category."""
        common = {"meta": profile("us-core-observation-screening-assessment"), "status": "final",
                  "category": SURVEY_CATEGORY, "subject": self.subject, **self._context(visit),
                  "effectiveDateTime": fhir_datetime(event.time)}
        total = self._add({"resourceType": "Observation", "id": self.ids.next(), **common,
                           "code": self.b.concept(event.code),
                           # a score is a count of points: the UCUM annotation as its code, no unit to print
                           "valueQuantity": {"value": event.numeric_value, "system": UCUM, "code": event.unit or "{score}"}})
        panel = QUESTIONNAIRE_PANELS.get(event.code)
        if panel is not None:
            self._add({"resourceType": "Observation", "id": self.ids.next(), **common, "code": self.b.concept(panel),
                       "hasMember": [self.out.reference(total)]})
        if visit is not None:
            visit.record.measurements.append(Reading(event.code, self.b.display(event.code), event.numeric_value,
                                                     None, None))

    def _immunization(self, event: Event, visit: _Visit | None) -> None:
        self._add({"resourceType": "Immunization", "id": self.ids.next(), "meta": profile("us-core-immunization"), "status": "completed",
                   "vaccineCode": self.b.concept(event.code), "patient": self.subject, **self._context(visit),
                   "occurrenceDateTime": fhir_datetime(event.time), "primarySource": True,
                   **({"location": self.out.reference(visit.location)} if visit is not None else {})})
        if visit is not None:
            visit.record.immunizations.append(self.b.display(event.code))

    # --- end of record -----------------------------------------------------------------------
    def _finish(self) -> None:
        death = self.patient.get("deceasedDateTime")
        record_end = self.events[-1].time
        for order in self.orders.values():
            self._dispenses(order, self.death or record_end)
        if death is not None:
            for order in self.orders.values():
                order["status"] = "stopped"
            for plan in self.care_plans.values():
                plan["status"] = "completed"
                plan["period"]["end"] = death
            for target in self.goals.values():
                target["lifecycleStatus"] = "cancelled"
            if self.chronic_care is not None:
                end_care_team(self.chronic_care, death)
        if self.guardian is not None:
            end_guardianship(self.guardian, self.birth, record_end)
        recorded = fhir_datetime(record_end)
        own = [r for r in self.out.resources if r["resourceType"] not in SHARED_TYPES]
        stamped: dict[int, dict[str, Any]] = {}  # by the id of the meta it stamps: most resources share a profile's
        for resource in own:  # the simulated chart last changed with the record's last fact
            meta = resource.get("meta", NO_META)  # ImagingStudy claims no profile
            resource["meta"] = stamped.get(id(meta)) or stamped.setdefault(id(meta), {"lastUpdated": recorded, **meta})
        self._add({"resourceType": "Provenance", "id": self.ids.next(),
                   "meta": {"lastUpdated": recorded, **profile("us-core-provenance")},
                   "target": [self.out.reference(r) for r in own], "recorded": recorded,
                   "agent": [{"type": concept(PROVENANCE_AGENT, "author", "Author"),
                              "who": self.out.reference(self.team.clinic)}]})
