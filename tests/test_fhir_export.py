"""The exporter turns a patient's events into FHIR R4 a server accepts, and the validator catches
what a server would reject."""

import base64
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from fhir_export import NdjsonWriter, patient_bundle, write_bundle, write_bundles
from fhir_export.notes import format_value
from fhir_export.validate import validate_directory
from trajsim.events import BIRTH, CONDITION_END, DEATH, SEX_FEMALE, VISIT_END, Event, visit_start_code
from trajsim.output import default_builder
from trajsim.vocab import load_vocabulary

HYPERTENSION, STREP, AMOXICILLIN = "SNOMED/59621000", "SNOMED/43878008", "RXNORM/308182"


def event(day: int, code: str, encounter: int | None = None, value=None, unit=None, text=None) -> Event:
    return Event(1, datetime(2020, 1, day, 9), encounter, code, value, unit, text)


def patient_events(died: bool = False) -> list[Event]:
    events = [
        Event(1, datetime(1970, 5, 1), None, BIRTH, None, None, None),
        Event(1, datetime(1970, 5, 1), None, SEX_FEMALE, None, None, None),
        event(2, visit_start_code("AMB"), 1),
        event(2, HYPERTENSION, 1),
        event(2, STREP, 1),
        event(2, AMOXICILLIN, 1, text=STREP),
        event(2, "LOINC/8480-6", 1, 142.0, "mm[Hg]"),
        event(2, VISIT_END, 1),
        event(12, CONDITION_END, text=STREP),
    ]
    if died:
        events.append(event(20, DEATH))
    return events


def resources_by_type(events):
    built = default_builder("test/1").build(events)
    out: dict[str, list[dict]] = {}
    for resource in built.resources:
        out.setdefault(resource["resourceType"], []).append(resource)
    return out


def test_conditions_carry_snomed_and_icd10cm_codings():
    hypertension = next(c for c in resources_by_type(patient_events())["Condition"]
                        if c["code"]["coding"][0]["code"] == "59621000")
    systems = {coding["system"]: coding for coding in hypertension["code"]["coding"]}
    assert systems["http://snomed.info/sct"]["display"] == "Essential hypertension"
    assert systems["http://hl7.org/fhir/sid/icd-10-cm"]["code"] == "I10"


def test_a_resolved_acute_condition_has_an_abatement_date():
    strep = next(c for c in resources_by_type(patient_events())["Condition"]
                 if c["code"]["coding"][0]["code"] == "43878008")
    assert strep["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert strep["abatementDateTime"].startswith("2020-01-12")


def test_a_prescription_points_at_the_condition_it_treats():
    resources = resources_by_type(patient_events())
    strep = next(c for c in resources["Condition"] if c["code"]["coding"][0]["code"] == "43878008")
    order = resources["MedicationRequest"][0]
    assert order["reasonReference"] == [{"reference": f"urn:uuid:{strep['id']}"}]


def test_vital_signs_have_loinc_and_ucum():
    observation = resources_by_type(patient_events())["Observation"][0]["component"][0]
    assert observation["code"]["coding"][0]["system"] == "http://loinc.org"
    assert observation["valueQuantity"] == {"value": 142.0, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                                            "code": "mm[Hg]"}
    panel = resources_by_type(patient_events())["Observation"][0]
    assert panel["category"][0]["coding"][0]["code"] == "vital-signs"


def test_death_is_recorded_and_open_orders_are_stopped():
    resources = resources_by_type(patient_events(died=True))
    assert resources["Patient"][0]["deceasedDateTime"].startswith("2020-01-20")
    assert resources["MedicationRequest"][0]["status"] == "stopped"


def test_a_death_in_hospital_states_its_cause_and_the_stay_ends_expired():
    events = [*patient_events(), event(18, visit_start_code("IMP"), 2), event(20, VISIT_END, 2),
              event(20, DEATH, 2, text=HYPERTENSION)]
    resources = resources_by_type(events)
    stay = next(e for e in resources["Encounter"] if e["class"]["code"] == "IMP")
    assert stay["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "exp"
    cause = next(o for o in resources["Observation"] if o["code"]["coding"][0]["code"] == "69453-9")
    assert cause["valueCodeableConcept"]["coding"][0]["display"] == "Essential hypertension"
    assert cause["encounter"]["reference"].endswith(stay["id"]) and cause["meta"]["profile"]
    assert resources["Patient"][0]["deceasedDateTime"].startswith("2020-01-20")


def assert_valid_as_bundle_and_ndjson(folder: Path, patient) -> None:
    """Write one patient as a transaction bundle and as NDJSON into `folder`; both validate."""
    write_bundle(folder / "bundles" / "patient.json", patient)
    writer = NdjsonWriter(folder / "ndjson")
    writer.write(patient)
    writer.close()
    report = validate_directory(folder)
    assert report.ok, report.failures


def test_the_same_resources_serve_bundles_and_ndjson(tmp_path):
    patient = default_builder("test/1").build(patient_events())
    assert_valid_as_bundle_and_ndjson(tmp_path, patient)
    bundle = orjson.loads((tmp_path / "bundles" / "patient.json").read_bytes())
    assert bundle["type"] == "transaction"
    assert all(entry["fullUrl"].startswith("urn:uuid:") for entry in bundle["entry"])
    encounter = orjson.loads((tmp_path / "ndjson" / "Encounter.ndjson").read_bytes())
    assert encounter["subject"]["reference"].startswith("Patient/")


def test_bundle_and_collection_written_together_match_each_written_alone(tmp_path):
    patient = default_builder("test/1").build(patient_events())
    together = {"transaction": tmp_path / "together" / "bundle.json", "collection": tmp_path / "together" / "collection.json"}
    written = write_bundles(together, patient)
    for bundle_type, path in together.items():
        alone = tmp_path / "alone" / path.name
        write_bundle(alone, patient, bundle_type)
        assert path.read_bytes() == alone.read_bytes()
    assert written == sum(path.stat().st_size for path in together.values())


def write_one_bundle(tmp_path, change):
    bundle = patient_bundle(default_builder("test/1").build(patient_events()))
    change(bundle)
    (tmp_path / "patient.json").write_bytes(orjson.dumps(bundle))
    return validate_directory(tmp_path)


@pytest.mark.parametrize("change, field", [
    ({"birthDate": "last spring"}, "birthDate"),
    ({"favouriteColour": "blue"}, "favouriteColour"),
])
def test_the_validator_rejects_what_r4_does_not_allow(tmp_path, change, field):
    report = write_one_bundle(tmp_path, lambda b: b["entry"][0]["resource"].update(change))
    assert report.failure_count == 1
    assert field in report.failures[0] and "Patient/" in report.failures[0]


def test_the_validator_rejects_a_dangling_reference(tmp_path):
    def dangle(bundle):
        encounter = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
        encounter["subject"] = {"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"}

    report = write_one_bundle(tmp_path, dangle)
    assert any("does not resolve" in failure for failure in report.failures)


def test_corrupt_json_is_reported_with_file_and_line(tmp_path):
    (tmp_path / "Patient.ndjson").write_bytes(b'{"resourceType": "Patient", "id": "a"}\n{"resourceType": \n')
    report = validate_directory(tmp_path)
    assert report.failure_count == 1
    assert f"{tmp_path / 'Patient.ndjson'}: line 2" in report.failures[0]


@pytest.mark.parametrize("code", [HYPERTENSION, "LOINC/8480-6", AMOXICILLIN])
def test_display_names_come_from_the_vocabulary(code):
    concept = default_builder("test/1").concept(code)
    assert concept["coding"][0]["display"]
    assert concept["text"] == concept["coding"][0]["display"]


def lab(day: int, code: str, value: float, unit: str) -> Event:
    return event(day, code, 1, value, unit)


def test_a_transaction_puts_each_resource_at_its_own_id():
    bundle = patient_bundle(default_builder("test/1").build(patient_events()))
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}


def test_a_collection_bundle_has_no_requests():
    bundle = patient_bundle(default_builder("test/1").build(patient_events()), "collection")
    assert bundle["type"] == "collection"
    assert all("request" not in entry for entry in bundle["entry"])


def test_the_patient_carries_us_core_demographics():
    patient = resources_by_type(patient_events())["Patient"][0]
    extensions = {e["url"].rsplit("/", 1)[1]: e for e in patient["extension"]}
    assert {"us-core-race", "us-core-ethnicity", "us-core-birthsex"} <= extensions.keys()
    assert patient["address"][0]["state"] and patient["address"][0]["postalCode"]
    assert "555-01" in patient["telecom"][0]["value"]  # the range reserved for fiction
    assert patient["identifier"][0]["type"]["coding"][0]["code"] == "MR"
    assert patient["generalPractitioner"][0]["reference"].startswith("urn:uuid:")


def test_every_visit_has_a_place_a_provider_and_an_attending_practitioner():
    resources = resources_by_type(patient_events())
    encounter = resources["Encounter"][0]
    ids = {f"urn:uuid:{r['id']}" for kind in ("Organization", "Location", "Practitioner") for r in resources[kind]}
    assert encounter["serviceProvider"]["reference"] in ids
    assert encounter["location"][0]["location"]["reference"] in ids
    assert encounter["participant"][0]["individual"]["reference"] in ids


def npi_is_valid(value: str) -> bool:
    digits = [int(d) for d in "80840" + value]
    total = sum(d if i % 2 == 0 else (2 * d - 9 if 2 * d > 9 else 2 * d) for i, d in enumerate(reversed(digits)))
    return len(value) == 10 and total % 10 == 0


def test_practitioners_have_well_formed_npis_outside_the_issued_range():
    for practitioner in resources_by_type(patient_events())["Practitioner"]:
        value = practitioner["identifier"][0]["value"]
        assert npi_is_valid(value) and value[0] == "9"


def test_blood_pressure_is_one_panel_with_two_components():
    events = patient_events()
    events.insert(7, event(2, "LOINC/8462-4", 1, 88.0, "mm[Hg]"))
    panel = resources_by_type(events)["Observation"][0]
    assert panel["code"]["coding"][0]["code"] == "85354-9"
    assert [c["code"]["coding"][0]["code"] for c in panel["component"]] == ["8480-6", "8462-4"]
    assert "valueQuantity" not in panel


def test_labs_of_one_panel_form_one_report_with_flags():
    events = patient_events()[:7] + [lab(2, "LOINC/2339-0", 182.0, "mg/dL"), lab(2, "LOINC/2947-0", 139.0, "mmol/L"),
                                     lab(2, "LOINC/4548-4", 8.1, "%"), event(2, VISIT_END, 1)]
    resources = resources_by_type(events)
    reports = {r["code"]["coding"][0]["code"]: r for r in resources["DiagnosticReport"]}
    assert reports.keys() == {"51990-0", "4548-4"}
    assert len(reports["51990-0"]["result"]) == 2
    glucose = next(o for o in resources["Observation"] if o["code"]["coding"][0]["code"] == "2339-0")
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"
    assert glucose["referenceRange"][0]["high"]["value"] == 99
    sodium = next(o for o in resources["Observation"] if o["code"]["coding"][0]["code"] == "2947-0")
    assert sodium["interpretation"][0]["coding"][0]["code"] == "N"


def test_a_creatinine_beside_liver_tests_is_reported_in_the_comprehensive_panel_with_its_orders():
    """The order a result belongs to is the visit's panel that shares most results with it: one
    comprehensive metabolic panel, not a basic one beside loose liver tests; results outside a visit
    drawn at one instant share one order too."""
    events = patient_events()[:7] + [lab(2, "LOINC/38483-4", 0.9, "mg/dL"), lab(2, "LOINC/1742-6", 22.0, "U/L"),
                                     lab(2, "LOINC/2947-0", 140.0, "mmol/L"), event(2, VISIT_END, 1)]
    events += [Event(1, datetime(2020, 1, 5, 9), None, code, value, unit, None)
               for code, value, unit in (("LOINC/18262-6", 120.0, "mg/dL"), ("LOINC/2085-9", 50.0, "mg/dL"))]
    resources = resources_by_type(events)
    (report,) = resources["DiagnosticReport"]
    assert report["code"]["coding"][0]["code"] == "24323-8" and len(report["result"]) == 3
    orders = [r["code"]["coding"][0]["code"] for r in resources["ServiceRequest"]]
    assert orders == ["24323-8", "57698-3"]


def test_a_urine_test_strip_result_is_a_coded_finding_on_a_urine_specimen():
    events = patient_events()[:7] + [event(2, "LOINC/5799-2", 1, text="SNOMED/10828004"),
                                     event(2, "LOINC/5802-4", 1, text="SNOMED/260385009"), event(2, VISIT_END, 1)]
    resources = resources_by_type(events)
    esterase, nitrite = resources["Observation"][1:]
    assert esterase["valueCodeableConcept"]["coding"][0] == {"system": "http://snomed.info/sct", "code": "10828004",
                                                             "display": "Positive"}
    assert esterase["interpretation"][0]["coding"][0]["code"] == "A"
    assert nitrite["interpretation"][0]["coding"][0]["code"] == "N"
    (report,) = resources["DiagnosticReport"]
    assert report["code"]["coding"][0]["code"] == "24357-6"
    assert resources["Specimen"][0]["type"]["coding"][0]["display"] == "Urine specimen"


def test_a_childs_hemoglobin_is_judged_by_a_childs_interval():
    """Harriet Lane: 11.5-15.5 g/dL at 2-12 years; an adult woman's interval starts at 12.0."""
    born = [Event(1, datetime(2014, 5, 1), None, BIRTH, None, None, None), *patient_events()[1:7]]
    events = born + [lab(2, "LOINC/718-7", 11.8, "g/dL"), event(2, VISIT_END, 1)]
    hemoglobin = next(o for o in resources_by_type(events)["Observation"] if o["code"]["coding"][0]["code"] == "718-7")
    assert hemoglobin["interpretation"][0]["coding"][0]["code"] == "N"
    assert hemoglobin["referenceRange"][0]["low"]["value"] == 11.5
    adult = resources_by_type(patient_events()[:7] + [lab(2, "LOINC/718-7", 11.8, "g/dL"), event(2, VISIT_END, 1)])
    assert next(o for o in adult["Observation"] if o["code"]["coding"][0]["code"] == "718-7")[
        "interpretation"][0]["coding"][0]["code"] == "L"


def test_a_chronic_condition_gets_a_problem_list_entry_and_care_plan():
    resources = resources_by_type(patient_events(died=True))
    hypertension = next(c for c in resources["Condition"] if c["code"]["coding"][0]["code"] == "59621000")
    assert hypertension["category"][0]["coding"][0]["code"] == "problem-list-item"
    plan = resources["CarePlan"][0]
    assert plan["addresses"] == [{"reference": f"urn:uuid:{hypertension['id']}"}]
    assert plan["status"] == "completed" and plan["period"]["end"].startswith("2020-01-20")


def test_an_allergy_becomes_an_allergy_intolerance_the_notes_mention():
    events = patient_events()
    events.insert(2, Event(1, datetime(2019, 6, 1), None, "SNOMED/91936005", None, None, None))
    resources = resources_by_type(events)
    allergy = resources["AllergyIntolerance"][0]
    assert allergy["category"] == ["medication"] and allergy["criticality"] == "high"
    assert allergy["code"]["coding"][0]["display"] == "Allergy to penicillin"
    assert "Allergies: Allergy to penicillin" in note_text(resources["DocumentReference"][0])


def test_provenance_covers_every_patient_resource():
    resources = default_builder("test/1").build(patient_events()).resources
    provenance = resources[-1]
    assert provenance["resourceType"] == "Provenance"
    shared = {"Organization", "Location", "Practitioner", "Provenance"}
    assert len(provenance["target"]) == sum(r["resourceType"] not in shared for r in resources)


def test_each_provider_appears_once_in_ndjson(cohort_dir):
    for resource_type in ("Organization", "Location", "Practitioner"):
        lines = (cohort_dir / "fhir" / "ndjson" / f"{resource_type}.ndjson").read_bytes().splitlines()
        ids = [orjson.loads(line)["id"] for line in lines]
        assert len(ids) == len(set(ids)) > 0


def note_text(document: dict) -> str:
    return base64.b64decode(document["content"][0]["attachment"]["data"]).decode()


def test_every_visit_has_a_clinical_note_of_its_kind(cohort_dir):
    note_types = {"AMB": "11506-3", "EMER": "34111-5", "IMP": "18842-5"}
    for path in sorted((cohort_dir / "fhir" / "bundles").glob("*.json"))[:10]:
        resources = [e["resource"] for e in orjson.loads(path.read_bytes())["entry"]]
        encounters = {f"urn:uuid:{r['id']}": r for r in resources if r["resourceType"] == "Encounter"}
        notes = [r for r in resources if r["resourceType"] == "DocumentReference"]
        assert {n["context"]["encounter"][0]["reference"] for n in notes} == encounters.keys()
        for note in notes:
            encounter = encounters[note["context"]["encounter"][0]["reference"]]
            assert note["type"]["coding"][0]["code"] == note_types[encounter["class"]["code"]]


def test_notes_vary_in_wording(cohort_dir):
    openings = set()
    for path in sorted((cohort_dir / "fhir" / "ndjson").glob("DocumentReference.ndjson")):
        for line in path.read_bytes().splitlines():
            text = note_text(orjson.loads(line))
            openings.update(line for line in text.splitlines() if "-old " in line)
    first_words = {opening.split(" ")[0] for opening in openings}
    assert len(first_words) >= 3


def test_a_note_states_only_what_the_structured_record_holds(cohort_dir):
    vocabulary = load_vocabulary()
    names = {domain: {c.display.lower() for c in vocabulary if c.domain == domain} for domain in ("condition", "medication")}
    checked = 0
    for path in sorted((cohort_dir / "fhir" / "bundles").glob("*.json")):
        resources = [e["resource"] for e in orjson.loads(path.read_bytes())["entry"]]
        recorded = {
            "condition": {r["code"]["text"].lower() for r in resources if r["resourceType"] == "Condition"},
            "medication": {r["medicationCodeableConcept"]["text"].lower() for r in resources
                           if r["resourceType"] == "MedicationRequest"},
        }
        observations = {}
        for r in resources:
            if r["resourceType"] == "Observation" and not {"valueCodeableConcept", "hasMember"} & set(r):  # measured ones
                for part in r.get("component", [r]):
                    observations.setdefault(r["encounter"]["reference"], set()).add(
                        f"{part['code']['text']}: {format_value(part['valueQuantity']['value'], part['valueQuantity'].get('unit'))}")
        # a vaccine's name may hold a condition's ("COVID-19, mRNA, ..." names no COVID-19 the patient had)
        vaccines = {r["vaccineCode"]["text"].lower() for r in resources if r["resourceType"] == "Immunization"}
        for note in (r for r in resources if r["resourceType"] == "DocumentReference"):
            text = note_text(note)
            lowered = text.lower()
            for vaccine in vaccines:
                lowered = lowered.replace(vaccine, "")
            for domain, known in names.items():
                stated = {name for name in known if name in lowered}
                assert stated <= recorded[domain], (path.name, stated - recorded[domain])
            measured = {line[2:] for line in text.splitlines() if line.startswith("- ") and ": " in line}
            encounter = note["context"]["encounter"][0]["reference"]
            assert measured <= observations.get(encounter, set()), (path.name, measured - observations.get(encounter, set()))
            checked += 1
    assert checked > 100


# US Core 6.1 must-support elements (and required ones) the exporter promises for each profile it claims;
# MedicationRequest.dosageInstruction is left out because only drugs with a cited label have one.
US_CORE_MUST_SUPPORT = {
    "Patient": ("identifier", "name", "gender", "birthDate", "address", "telecom", "communication", "extension"),
    "Encounter": ("identifier", "status", "class", "type", "subject", "participant", "period", "location",
                  "serviceProvider"),
    "Condition": ("clinicalStatus", "verificationStatus", "category", "code", "subject", "onsetDateTime", "recordedDate"),
    "Observation": ("status", "category", "code", "subject", "effectiveDateTime"),
    "DiagnosticReport": ("status", "category", "code", "subject", "encounter", "effectiveDateTime", "issued",
                         "performer", "result"),
    "DocumentReference": ("status", "type", "category", "subject", "date", "author", "custodian", "content", "context"),
    "MedicationRequest": ("status", "intent", "reportedBoolean", "medicationCodeableConcept", "subject", "authoredOn",
                          "requester", "encounter"),  # every order is written at an encounter
    "Immunization": ("status", "vaccineCode", "patient", "occurrenceDateTime", "primarySource"),
    "Practitioner": ("identifier", "name"),
    "Organization": ("identifier", "active", "name", "telecom", "address"),
    "Location": ("status", "name", "telecom", "address", "managingOrganization"),
    "CarePlan": ("text", "status", "intent", "category", "subject"),
    "Provenance": ("target", "recorded", "agent"),
    "Procedure": ("status", "code", "subject", "performedDateTime"),
    "AllergyIntolerance": ("clinicalStatus", "verificationStatus", "code", "patient"),
    "Coverage": ("identifier", "status", "type", "subscriberId", "beneficiary", "relationship", "period", "payor",
                 "class"),
    "Specimen": ("identifier", "accessionIdentifier", "type", "subject"),
    "ServiceRequest": ("status", "intent", "category", "code", "subject", "encounter", "occurrenceDateTime",
                       "authoredOn", "requester"),
    "MedicationDispense": ("status", "medicationCodeableConcept", "subject", "performer", "authorizingPrescription",
                           "type", "whenHandedOver"),
    "CareTeam": ("status", "subject", "participant"),
    "Goal": ("lifecycleStatus", "description", "subject", "startDate", "target"),
    "RelatedPerson": ("active", "patient", "relationship", "name", "telecom", "address"),
    "Device": ("udiCarrier", "type", "patient"),
    # a radiology report: the study it reads, no results (the record holds no findings)
    "us-core-diagnosticreport-note": ("status", "category", "code", "subject", "encounter", "effectiveDateTime",
                                      "issued", "performer", "imagingStudy"),
}
# Financial resources, images and supply deliveries, which US Core has no profile for.
NOT_US_CORE = frozenset({"Claim", "ExplanationOfBenefit", "ImagingStudy", "SupplyDelivery"})


def test_every_resource_carries_its_us_core_must_support_elements(cohort_dir):
    seen = set()
    for path in sorted((cohort_dir / "fhir" / "ndjson").glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            resource = orjson.loads(line)
            kind = resource["resourceType"]
            if kind in NOT_US_CORE:
                continue
            assert resource["meta"]["profile"][0].startswith("http://hl7.org/fhir/us/core/StructureDefinition/")
            claimed = resource["meta"]["profile"][0].rsplit("/", 1)[1]
            missing = [name for name in US_CORE_MUST_SUPPORT.get(claimed, US_CORE_MUST_SUPPORT[kind]) if name not in resource]
            if kind == "Observation":
                valued = {"valueQuantity", "valueCodeableConcept", "component", "hasMember"} & set(resource)  # a panel: its members
                missing += [] if valued else ["value[x] or component"]
            assert not missing, (kind, resource["id"], missing)
            seen.add(kind)
    assert len(seen) >= 14
