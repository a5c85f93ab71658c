"""The exporter turns a patient's events into FHIR R4 a server accepts, and the validator catches
what a server would reject."""

from datetime import datetime

import orjson
import pytest

from fhir_export import NdjsonWriter, transaction_bundle, write_bundle
from fhir_export.validate import validate_directory
from trajsim.events import BIRTH, CONDITION_END, DEATH, SEX_FEMALE, VISIT_END, Event, visit_start_code
from trajsim.generate import default_builder
from trajsim.scenario import Scenario

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
    built = default_builder(Scenario()).build(events)
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
    observation = resources_by_type(patient_events())["Observation"][0]
    assert observation["code"]["coding"][0]["system"] == "http://loinc.org"
    assert observation["valueQuantity"] == {"value": 142.0, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                                            "code": "mm[Hg]"}
    assert observation["category"][0]["coding"][0]["code"] == "vital-signs"


def test_death_is_recorded_and_open_orders_are_stopped():
    resources = resources_by_type(patient_events(died=True))
    assert resources["Patient"][0]["deceasedDateTime"].startswith("2020-01-20")
    assert resources["MedicationRequest"][0]["status"] == "stopped"


def test_the_same_resources_serve_bundles_and_ndjson(tmp_path):
    patient = default_builder(Scenario()).build(patient_events())
    write_bundle(tmp_path / "bundles" / "patient.json", patient)
    writer = NdjsonWriter(tmp_path / "ndjson")
    writer.write(patient)
    writer.close()
    report = validate_directory(tmp_path)
    assert report.ok, report.failures
    bundle = orjson.loads((tmp_path / "bundles" / "patient.json").read_bytes())
    assert bundle["type"] == "transaction"
    assert all(entry["fullUrl"].startswith("urn:uuid:") for entry in bundle["entry"])
    encounter = orjson.loads((tmp_path / "ndjson" / "Encounter.ndjson").read_bytes())
    assert encounter["subject"]["reference"].startswith("Patient/")


def write_one_bundle(tmp_path, change):
    bundle = transaction_bundle(default_builder(Scenario()).build(patient_events()))
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
        bundle["entry"][1]["resource"]["subject"] = {"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"}

    report = write_one_bundle(tmp_path, dangle)
    assert any("does not resolve" in failure for failure in report.failures)


def test_corrupt_json_is_reported_with_file_and_line(tmp_path):
    (tmp_path / "Patient.ndjson").write_bytes(b'{"resourceType": "Patient", "id": "a"}\n{"resourceType": \n')
    report = validate_directory(tmp_path)
    assert report.failure_count == 1
    assert f"{tmp_path / 'Patient.ndjson'}: line 2" in report.failures[0]


@pytest.mark.parametrize("code", [HYPERTENSION, "LOINC/8480-6", AMOXICILLIN])
def test_display_names_come_from_the_vocabulary(code):
    concept = default_builder(Scenario()).concept(code)
    assert concept["coding"][0]["display"]
    assert concept["text"] == concept["coding"][0]["display"]
