"""FHIR R4 ingest: Synthea bundles and bulk NDJSON from refdata, and trajsim's own FHIR output."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from fhir_export.resources import VISIT_WITHOUT_TYPE
from trajsim.events import MEDICATION_END, validate_events
from trajsim.ingest import IngestError, detect_format, ingest, load_events, read_events
from trajsim.knowledge import load_knowledge

BUNDLES = "synthea_fhir_r4_smart615/bundles"
NDJSON = "synthea_fhir_r4_bulk_ndjson_10"


def _lines(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _count(events: pl.DataFrame, system: str) -> int:
    return events.filter(pl.col("code").str.starts_with(system + "/")).height


@pytest.fixture(scope="module")
def bundle_sample(refdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Thirty patient bundles (of 410) linked into one folder: a full read takes longer than tests should."""
    folder = tmp_path_factory.mktemp("bundles")
    patients = sorted(p for p in (refdata / BUNDLES).glob("*.json.gz") if "Information" not in p.name)
    for path in patients[::14][:30]:
        (folder / path.name).symlink_to(path)
    return folder


def test_bulk_ndjson_keeps_every_condition_medication_and_immunization(refdata: Path) -> None:
    folder = refdata / NDJSON
    events = validate_events(read_events("fhir", folder))
    conditions = _lines(folder / "Condition.000.ndjson.gz")
    assert events.filter(pl.col("code").str.starts_with("SNOMED/") & pl.col("text").is_null()).height >= len(conditions)
    assert _count(events, "RXNORM") == len(_lines(folder / "MedicationRequest.000.ndjson.gz"))
    assert _count(events, "CVX") == len(_lines(folder / "Immunization.000.ndjson.gz"))
    assert events.filter(pl.col("code") == "TRAJSIM/birth").height == len(_lines(folder / "Patient.000.ndjson.gz"))


def test_bulk_ndjson_medication_text_is_the_treated_condition(refdata: Path) -> None:
    events = read_events("fhir", refdata / NDJSON)
    requests = _lines(refdata / NDJSON / "MedicationRequest.000.ndjson.gz")
    with_reason = sum(bool(r.get("reasonReference")) for r in requests)
    medications = events.filter(pl.col("code").str.starts_with("RXNORM/"))
    assert with_reason > 0
    assert medications.filter(pl.col("text").str.starts_with("SNOMED/")).height == with_reason


def test_bulk_ndjson_notes_are_decoded_text(refdata: Path) -> None:
    notes = read_events("fhir", refdata / NDJSON).filter(pl.col("code").is_in(["LOINC/34117-2", "LOINC/34111-5"]))
    assert notes.height == len(_lines(refdata / NDJSON / "DocumentReference.000.ndjson.gz"))
    assert notes["text"].str.contains("Chief Complaint").all()


def test_bundles_ingest_with_a_report_per_resource_type(bundle_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.parquet"
    report = ingest("fhir", bundle_sample, out)
    events = validate_events(pl.read_parquet(out))
    assert report.subjects == 30 and events["subject_id"].n_unique() == 30
    assert report.tables["Claim"].kept == 0 and report.tables["Claim"].dropped["resource type not ingested"] > 0
    assert report.tables["Condition"].kept == report.tables["Condition"].read > 0
    assert events.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).height == report.tables["Encounter"].kept
    labs = events.filter(pl.col("code") == "LOINC/8302-2")  # body height
    assert labs.height > 0 and (labs["unit"] == "cm").all() and labs["numeric_value"].is_not_null().all()


def test_blood_pressure_components_become_systolic_and_diastolic_events(bundle_sample: Path) -> None:
    events = read_events("fhir", bundle_sample)
    pressures = events.filter(pl.col("unit") == "mm[Hg]")
    systolic, diastolic = (pressures.filter(pl.col("code") == code).height for code in ("LOINC/8480-6", "LOINC/8462-4"))
    assert systolic == diastolic > 0
    assert events.filter(pl.col("code") == "LOINC/55284-4").height == 0  # the panel itself has no value


def _fact_counts(events: pl.DataFrame) -> pl.DataFrame:
    facts = ["time", "code", "numeric_value", "unit", "text"]
    return events.group_by(facts).agg(pl.len().alias("count"))


def test_own_fhir_output_reads_back_to_the_generated_events(cohort_dir: Path) -> None:
    """events -> FHIR (bundles and NDJSON) -> events keeps every fact except medication ends, which the
    exporter records only as a MedicationRequest status, with no date to read back, and allergies:
    AllergyIntolerance is not ingested, since its substance codes would read as drugs or conditions in
    an event table without a kind column. What FHIR adds are the exporter's clinical notes
    (DocumentReference: a LOINC note type with the note as text) and the generic encounter type it
    gives a visit whose record names none (US Core requires one)."""
    allergies = [a.code for a in load_knowledge().allergies]
    generated = _fact_counts(load_events(cohort_dir / "events")
                             .filter((pl.col("code") != MEDICATION_END) & ~pl.col("code").is_in(allergies)))
    for folder in ("fhir/bundles", "fhir/ndjson"):
        ingested = _fact_counts(load_events(cohort_dir / folder))
        joined = generated.join(ingested, on=["time", "code", "numeric_value", "unit", "text"], how="full",
                                nulls_equal=True, suffix="_read")
        lost = joined.filter(pl.col("count").is_not_null() & pl.col("count").ne_missing(pl.col("count_read")))
        added = joined.filter(pl.col("count").is_null())
        assert lost.height == 0, (folder, lost)
        note = added["code_read"].str.starts_with("LOINC/") & added["text_read"].is_not_null()
        assert ((note & added["numeric_value_read"].is_null()) | (added["code_read"] == VISIT_WITHOUT_TYPE)).all(), (
            folder, added)


def test_load_events_reads_generated_parquet_parts(cohort_dir: Path) -> None:
    assert detect_format(cohort_dir / "events") == "events"
    events = load_events(cohort_dir / "events")
    assert events.height > 0 and events.schema == validate_events(events).schema


def test_load_events_detects_fhir(cohort_dir: Path) -> None:
    assert detect_format(cohort_dir / "fhir" / "bundles") == "fhir"
    assert detect_format(cohort_dir / "fhir" / "ndjson" / "Patient.ndjson") == "fhir"


def test_truncated_gzip_names_the_file(refdata: Path, tmp_path: Path) -> None:
    whole = (refdata / NDJSON / "Condition.000.ndjson.gz").read_bytes()
    broken = tmp_path / "Condition.000.ndjson.gz"
    broken.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(IngestError, match="Condition.000.ndjson.gz: truncated or corrupt gzip"):
        ingest("fhir", broken, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_bad_date_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "Patient.ndjson"
    lines = [{"resourceType": "Patient", "id": "a", "birthDate": "1970-01-01"},
             {"resourceType": "Patient", "id": "b", "birthDate": "31/12/1970"}]
    path.write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(IngestError, match=r"Patient.ndjson line 2: time '31/12/1970' is not a date"):
        read_events("fhir", path)


def test_unknown_code_system_is_kept_as_a_local_code(tmp_path: Path) -> None:
    path = tmp_path / "Condition.ndjson"
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/a"}, "onsetDateTime": "2020-01-01",
                 "code": {"coding": [{"system": "http://example.org/local", "code": "X1"}]}}
    undated = {**condition, "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
               "onsetDateTime": None}
    path.write_text(json.dumps(condition) + "\n" + json.dumps(undated) + "\n")
    report = ingest("fhir", path, tmp_path / "out.parquet")
    assert report.tables["Condition"].dropped == {"missing time": 1}
    assert pl.read_parquet(tmp_path / "out.parquet")["code"].to_list() == ["LOCAL/local/X1"]
    assert report.prefixes == {"LOCAL/local": 1}


def test_large_ndjson_is_read_in_pieces_with_the_same_result(refdata: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = read_events("fhir", refdata / NDJSON)
    monkeypatch.setattr("trajsim.ingest.fhir.FLUSH_EVENTS", 500)  # ~20 frames instead of one
    assert read_events("fhir", refdata / NDJSON).equals(whole)
