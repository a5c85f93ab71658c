"""`generate` writes one run's cohort in every format, identically for the same seed, and never
leaves half-written files behind."""

import hashlib
from pathlib import Path

import orjson
import polars as pl
import pytest

from fhir_export.validate import validate_directory
from tests.conftest import small_scenario
from trajsim.engine import ReferenceSource
from trajsim.events import validate_events
from trajsim.generate import generate


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_one_bundle_per_patient_and_one_ndjson_file_per_resource_type(cohort_dir):
    bundles = sorted((cohort_dir / "fhir" / "bundles").glob("patient-*.json"))
    assert len(bundles) == 40
    ndjson = {p.stem for p in (cohort_dir / "fhir" / "ndjson").glob("*.ndjson")}
    assert {"Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "Immunization"} <= ndjson
    patients = (cohort_dir / "fhir" / "ndjson" / "Patient.ndjson").read_bytes().splitlines()
    assert len(patients) == 40


def test_every_resource_is_valid_r4_and_matches_the_manifest(cohort_dir):
    report = validate_directory(cohort_dir / "fhir")
    assert report.ok, report.failures
    manifest = orjson.loads((cohort_dir / "manifest.json").read_bytes())
    assert manifest["patients"] == 40
    shared = {"Organization", "Location", "Practitioner"}  # in every bundle, but once in NDJSON
    for resource_type, count in manifest["resources"].items():
        if resource_type not in shared:
            in_bundles_and_ndjson = 2 * count
            assert report.resources[resource_type] == in_bundles_and_ndjson, resource_type
    assert shared <= manifest["resources"].keys()



def test_shared_providers_are_counted_once_however_many_bundles_carry_them(cohort_dir):
    manifest = orjson.loads((cohort_dir / "manifest.json").read_bytes())
    bundles = [orjson.loads(p.read_bytes()) for p in (cohort_dir / "fhir" / "bundles").glob("patient-*.json")]
    for resource_type in ("Organization", "Location", "Practitioner"):
        lines = (cohort_dir / "fhir" / "ndjson" / f"{resource_type}.ndjson").read_bytes().splitlines()
        in_bundles = sum(e["resource"]["resourceType"] == resource_type for b in bundles for e in b["entry"])
        assert manifest["resources"][resource_type] == len(lines) < in_bundles, resource_type


def test_events_parquet_holds_the_canonical_table(cohort_dir):
    events = pl.read_parquet(cohort_dir / "events" / "*.parquet")
    validate_events(events)
    assert events["subject_id"].n_unique() == 40
    manifest = orjson.loads((cohort_dir / "manifest.json").read_bytes())
    assert events.height == manifest["events"]


def test_same_seed_same_bytes(tmp_path):
    scenario = small_scenario(15, seed=11)
    generate(scenario, tmp_path / "a")
    generate(scenario, tmp_path / "b")
    assert file_hashes(tmp_path / "a") == file_hashes(tmp_path / "b")


def test_different_seeds_give_different_cohorts(tmp_path):
    generate(small_scenario(15, seed=11), tmp_path / "a")
    generate(small_scenario(15, seed=12), tmp_path / "b")
    a, b = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    assert a.keys() >= {"fhir/bundles/patient-0000001.json"}
    assert a["fhir/bundles/patient-0000001.json"] != b["fhir/bundles/patient-0000001.json"]


def test_a_rerun_replaces_the_earlier_run(tmp_path):
    generate(small_scenario(20), tmp_path)
    generate(small_scenario(5), tmp_path)
    assert len(list((tmp_path / "fhir" / "bundles").glob("*.json"))) == 5
    assert pl.read_parquet(tmp_path / "events" / "*.parquet")["subject_id"].n_unique() == 5


def test_collection_bundles_hold_the_same_resources_as_transactions(tmp_path):
    generate(small_scenario(3, **{"output.formats": ["bundle", "collection"]}), tmp_path)
    for transaction in (tmp_path / "fhir" / "bundles").glob("*.json"):
        collection = orjson.loads((tmp_path / "fhir" / "collections" / transaction.name).read_bytes())
        assert collection["type"] == "collection"
        entries = orjson.loads(transaction.read_bytes())["entry"]
        assert [e["resource"] for e in collection["entry"]] == [e["resource"] for e in entries]


def test_only_the_requested_formats_are_written(tmp_path):
    generate(small_scenario(5, **{"output.formats": ["ndjson"]}), tmp_path)
    assert not (tmp_path / "fhir" / "bundles").exists()
    assert not (tmp_path / "events").exists()
    assert (tmp_path / "fhir" / "ndjson" / "Patient.ndjson").exists()


def test_an_event_table_alone_is_the_same_table_without_fhir(tmp_path):
    """Asking only for the event table skips building FHIR resources, and the table does not change."""
    generate(small_scenario(5, seed=9, **{"output.formats": ["events"]}), tmp_path / "events_only")
    summary = generate(small_scenario(5, seed=9, **{"output.formats": ["events", "ndjson"]}), tmp_path / "both")
    assert not (tmp_path / "events_only" / "fhir").exists()
    manifest = orjson.loads((tmp_path / "events_only" / "manifest.json").read_bytes())
    assert manifest["resources"] == {} and manifest["events"] == summary.events
    assert file_hashes(tmp_path / "events_only" / "events") == file_hashes(tmp_path / "both" / "events")


class Crashing(ReferenceSource):
    """Fails part-way through the cohort, like a killed run."""

    def __init__(self, after: int):
        super().__init__()
        self.calls, self.after = 0, after

    def next_visits(self, patients):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("simulated crash")
        return super().next_visits(patients)


def test_an_interrupted_run_leaves_no_partial_files(tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate(small_scenario(30), tmp_path, source=Crashing(after=200))
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in leftovers if ".tmp" in p.name or p.suffix == ".ndjson"], leftovers
    for bundle in (tmp_path / "fhir" / "bundles").glob("*.json"):
        orjson.loads(bundle.read_bytes())  # every bundle on disk is complete
    assert not (tmp_path / "manifest.json").exists()
