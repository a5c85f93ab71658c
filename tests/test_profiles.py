"""`trajsim validate --profile us-core-6.1|us-core-7.0` checks every resource against the US Core
profile it claims (cardinalities, fixed and pattern values, required bindings), names the profile,
element and resource of each problem, and tallies how often each must-support element is filled."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from fhir_export.profiles import RELEASES, ProfileSet, ProfileTally
from fhir_export.validate import validate_directory
from tests.conftest import small_scenario
from trajsim.cli import app
from trajsim.generate import generate

runner = CliRunner(env={"COLUMNS": "250"})


@pytest.fixture(scope="module")
def model_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small cohort proposed by the shipped model (the other source beside the reference one)."""
    out = tmp_path_factory.mktemp("model-cohort")
    generate(small_scenario(size=12, model="default", **{"output.formats": ["ndjson"]}), out)
    return out


def _profile_check(folder: Path, release: str) -> tuple[list[str], ProfileTally]:
    """The profile problems (as `Type/id: problem`) and must-support tally of every NDJSON resource."""
    profiles, tally, problems = ProfileSet.load(release), ProfileTally(), []
    for path in sorted(folder.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            resource = orjson.loads(line)
            problems += [f"{resource['resourceType']}/{resource['id']}: {p}" for p in profiles.check(resource, tally)]
    return problems, tally


@pytest.fixture(scope="module")
def reference_tally(cohort_dir: Path) -> ProfileTally:
    return _profile_check(cohort_dir / "fhir" / "ndjson", "us-core-7.0")[1]


@pytest.mark.parametrize("release", sorted(RELEASES))
@pytest.mark.parametrize("source", ["reference", "model"])
def test_generated_cohorts_conform_to_us_core(release, source, cohort_dir, model_cohort):
    folder = (cohort_dir if source == "reference" else model_cohort) / "fhir" / "ndjson"
    problems, tally = _profile_check(folder, release)
    assert problems == []
    assert sum(tally.possible.values()) > 1000


@pytest.mark.parametrize("profile, element", [
    ("us-core-medicationrequest", "MedicationRequest.category:us-core"),
    ("us-core-condition-encounter-diagnosis", "Condition.extension:assertedDate"),
    ("us-core-documentreference", "DocumentReference.identifier"),
    ("us-core-documentreference", "DocumentReference.content.format"),
    ("us-core-encounter", "Encounter.participant.period"),
    ("us-core-practitioner", "Practitioner.telecom"),
    ("us-core-practitioner", "Practitioner.address"),
    ("us-core-location", "Location.identifier"),
    ("us-core-immunization", "Immunization.location"),
    ("us-core-encounter", "Encounter.meta.lastUpdated"),
    ("us-core-observation-lab", "Observation.specimen"),
    ("us-core-specimen", "Specimen.accessionIdentifier"),
    ("us-core-servicerequest", "ServiceRequest.encounter"),
    ("us-core-servicerequest", "ServiceRequest.requester"),
    ("us-core-medicationdispense", "MedicationDispense.authorizingPrescription"),
    ("us-core-medicationdispense", "MedicationDispense.performer.actor"),
    ("us-core-careteam", "CareTeam.participant.role"),
    ("us-core-goal", "Goal.target"),
    ("us-core-relatedperson", "RelatedPerson.relationship"),
])
def test_must_support_elements_that_follow_from_the_record_are_always_filled(reference_tally, profile, element):
    tally = reference_tally
    assert tally.possible[profile, element] > 0
    assert tally.present[profile, element] == tally.possible[profile, element]


def test_every_encounter_with_a_diagnosis_gives_it_as_a_reason(cohort_dir):
    lines = (cohort_dir / "fhir" / "ndjson" / "Condition.ndjson").read_bytes().splitlines()
    diagnosed_at = {orjson.loads(line).get("encounter", {}).get("reference") for line in lines} - {None}
    encounters = [orjson.loads(line) for line in (cohort_dir / "fhir" / "ndjson" / "Encounter.ndjson").read_bytes().splitlines()]
    with_reason = {f"Encounter/{e['id']}" for e in encounters if e.get("reasonReference") and e.get("reasonCode")}
    assert diagnosed_at and diagnosed_at <= with_reason


def _broken(cohort_dir: Path, tmp_path: Path, resource_type: str, change) -> tuple[Path, int, dict]:
    """The cohort's first patient bundle with its first resource of a type changed by `change`."""
    bundle = orjson.loads(min((cohort_dir / "fhir" / "bundles").glob("*.json")).read_bytes())
    index = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == resource_type)
    change(bundle["entry"][index]["resource"])
    (tmp_path / "patient.json").write_bytes(orjson.dumps(bundle))
    return tmp_path / "patient.json", index, bundle["entry"][index]["resource"]


def _race_coded(patient: dict, code: str) -> None:
    race = next(e for e in patient["extension"] if e["url"].endswith("us-core-race"))
    race["extension"] = [{"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": code}},
                         {"url": "text", "valueString": "Someone"}]


@pytest.mark.parametrize("resource_type, change, problem", [
    ("Patient", lambda r: r.pop("identifier"), "us-core-patient Patient.identifier: required (min 1), found 0"),
    ("Condition", lambda r: r.pop("category"), "Condition.category:us-core: required (min 1), found 0"),
    ("Condition", lambda r: r["clinicalStatus"]["coding"][0].update(code="maybe"),
     "Condition.clinicalStatus: http://terminology.hl7.org/CodeSystem/condition-clinical|maybe is not in the "
     "required value set http://hl7.org/fhir/ValueSet/condition-clinical"),
    ("Encounter", lambda r: r.pop("type"), "us-core-encounter Encounter.type: required (min 1), found 0"),
    ("Patient", lambda r: _race_coded(r, "2131-1"),  # "Other Race" is a CDC code, not an OMB category
     "us-core-race Extension.extension:ombCategory.value[x]: urn:oid:2.16.840.1.113883.6.238|2131-1 is not in the "
     "required value set http://hl7.org/fhir/us/core/ValueSet/omb-race-category"),
])
def test_a_resource_breaking_its_profile_is_named_with_profile_element_and_id(cohort_dir, tmp_path, resource_type,
                                                                               change, problem):
    path, index, resource = _broken(cohort_dir, tmp_path, resource_type, change)
    report = validate_directory(tmp_path, profiles=ProfileSet.load("us-core-6.1"))
    assert report.failure_count == 1, report.failures
    assert report.failures[0].startswith(f"{path}: entry {index}: {resource_type}/{resource['id']}: US Core 6.1.0: ")
    assert problem in report.failures[0]


def test_a_body_weight_coded_as_something_else_breaks_its_pattern():
    profiles = ProfileSet.load("us-core-7.0")
    weight = {"resourceType": "Observation", "id": "w", "meta": {"profile": [
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-body-weight"]}, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}, "subject": {"reference": "Patient/p"},
        "effectiveDateTime": "2020-01-01T00:00:00Z",
        "valueQuantity": {"value": 70, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}}
    assert profiles.check(weight, ProfileTally()) == []
    weight["code"]["coding"][0]["code"] = "8302-2"  # body height
    weight["valueQuantity"]["code"] = "[lb_av]x"
    problems = profiles.check(weight, ProfileTally())
    assert any("us-core-body-weight Observation.code: does not match" in p for p in problems)
    assert any("Observation.valueQuantity.code: |[lb_av]x is not in the required value set" in p
               for p in problems)


def test_the_command_prints_must_support_coverage_and_refuses_an_unknown_release(cohort_dir, tmp_path):
    path, _, _ = _broken(cohort_dir, tmp_path, "Patient", lambda resource: None)
    result = runner.invoke(app, ["validate", str(tmp_path), "--profile", "us-core-6.1"])
    assert result.exit_code == 0, result.output
    assert "US Core 6.1.0 must-support elements" in result.output
    assert "US Core 6.1.0: 0 resource(s) with problems" in result.output
    refused = runner.invoke(app, ["validate", str(tmp_path), "--profile", "us-core-5"])
    assert refused.exit_code == 2
    assert "--profile 'us-core-5': choose one of us-core-6.1, us-core-7.0" in refused.output


def test_a_long_term_tablet_order_dispenses_what_one_supply_takes(cohort_dir):
    orders = [orjson.loads(line) for line in
              (cohort_dir / "fhir" / "ndjson" / "MedicationRequest.ndjson").read_bytes().splitlines()]
    counted = [o for o in orders if "quantity" in o.get("dispenseRequest", {})]
    assert counted
    for order in counted:
        dosage, dispense = order["dosageInstruction"][0], order["dispenseRequest"]
        repeat, dose = dosage["timing"]["repeat"], dosage["doseAndRate"][0]["doseQuantity"]
        assert repeat["periodUnit"] == "d" and not dosage["asNeededBoolean"]
        per_day = dose["value"] * repeat["frequency"] / repeat["period"]
        assert dispense["quantity"]["value"] == math.ceil(per_day * dispense["expectedSupplyDuration"]["value"])
        assert dispense["quantity"]["code"] == dose["code"]
