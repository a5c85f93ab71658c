"""The same patients read from different formats give the same conditions and medications.

Which refdata sets hold the same patients? None do (`test_refdata_synthea_sets_share_no_patients`):
the Synthea CSV set is 27 Massachusetts patients (OHDSI dbt-synthea seeds), the Eunomia OMOP set 28
New Jersey patients, the bulk NDJSON set 13 Kansas patients and the bundle set 410 other
Massachusetts patients; their Synthea UUIDs are disjoint. So each refdata set is checked patient by
patient against its own source rows, and the cross-format comparison of *the same* patients uses
trajsim's own cohort, written as events, FHIR bundles, bulk NDJSON and MEDS, and one Synthea patient
written both as Synthea CSV and as FHIR NDJSON.
"""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import polars as pl

from fhir_export.resources import VISIT_WITHOUT_TYPE
from trajsim.events import MEDICATION_END
from trajsim.ingest import load_events, read_events, write_meds
from trajsim.ingest.common import stable_id
from trajsim.knowledge import load_knowledge

CSV = "synthea_csv_dbt27/csv"
OMOP = "omop_cdm54_eunomia_synthea27nj/Synthea27Nj_5.4.zip"
NDJSON = "synthea_fhir_r4_bulk_ndjson_10"
BUNDLES = "synthea_fhir_r4_smart615/bundles"


def _csv(refdata: Path, table: str) -> pl.DataFrame:
    return pl.read_csv(refdata / CSV / f"{table}.csv", infer_schema=False)


def _omop(refdata: Path, table: str) -> pl.DataFrame:
    with zipfile.ZipFile(refdata / OMOP) as archive:
        return pl.read_csv(archive.read(f"{table}.csv"), infer_schema=False)


def _ndjson(refdata: Path, kind: str) -> list[dict]:
    with gzip.open(refdata / NDJSON / f"{kind}.000.ndjson.gz", "rt") as handle:
        return [json.loads(line) for line in handle]


def _per_patient(events: pl.DataFrame, codes: set[str]) -> dict[int, int]:
    counted = events.filter(pl.col("code").is_in(sorted(codes))).group_by("subject_id").len()
    return dict(counted.iter_rows())


def _source_counts(rows: pl.DataFrame, patient: str, code: str, codes: set[str], to_subject) -> dict[int, int]:
    counted = rows.filter(pl.col(code).is_in(sorted(codes))).group_by(patient).len()
    return {to_subject(key): n for key, n in counted.iter_rows()}


def test_refdata_synthea_sets_share_no_patients(refdata: Path) -> None:
    sets = {
        "synthea csv": set(_csv(refdata, "patients")["Id"]),
        "omop": set(_omop(refdata, "PERSON")["person_source_value"]),
        "bulk ndjson": {p["id"] for p in _ndjson(refdata, "Patient")},
        "bundles": {p.name.removesuffix(".json.gz").rsplit("_", 1)[-1] for p in (refdata / BUNDLES).glob("*_*.json.gz")},
    }
    assert [len(s) for s in sets.values()] == [27, 28, 13, 410]
    names = list(sets)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert not sets[first] & sets[second], (first, second)


def test_synthea_csv_conditions_and_medications_match_per_patient(refdata: Path) -> None:
    events = read_events("synthea-csv", refdata / CSV)
    conditions, medications = _csv(refdata, "conditions"), _csv(refdata, "medications")
    # Synthea reuses two condition codes (myocardial infarction, cardiac arrest) as emergency encounter
    # types, so those codes cannot tell a condition from a visit in the event table; leave them out.
    condition_codes = set(conditions["CODE"]) - set(_csv(refdata, "encounters")["CODE"])
    expected = _source_counts(conditions, "PATIENT", "CODE", condition_codes, stable_id)
    assert _per_patient(events, {f"SNOMED/{c}" for c in condition_codes}) == expected
    assert sum(expected.values()) >= 400
    medication_codes = set(medications["CODE"])
    assert _per_patient(events, {f"RXNORM/{c}" for c in medication_codes}) == _source_counts(
        medications, "PATIENT", "CODE", medication_codes, stable_id)


def test_omop_conditions_and_drugs_match_per_person(refdata: Path) -> None:
    events = read_events("omop", refdata / OMOP)
    concept = _omop(refdata, "CONCEPT").select(
        "concept_id", (pl.col("vocabulary_id").str.to_uppercase() + "/" + pl.col("concept_code")).alias("code"))
    for table, column in (("CONDITION_OCCURRENCE", "condition_concept_id"), ("DRUG_EXPOSURE", "drug_concept_id")):
        rows = _omop(refdata, table).join(concept, left_on=column, right_on="concept_id")
        codes = set(rows["code"])
        assert _per_patient(events, codes) == _source_counts(rows, "person_id", "code", codes, int), table


def test_bulk_ndjson_conditions_and_medications_match_per_patient(refdata: Path) -> None:
    events = read_events("fhir", refdata / NDJSON)
    for kind, concept in (("Condition", "code"), ("MedicationRequest", "medicationCodeableConcept")):
        resources = _ndjson(refdata, kind)
        rows = pl.DataFrame({"patient": [r["subject"]["reference"].rsplit("/", 1)[-1] for r in resources],
                             "code": [r[concept]["coding"][0]["code"] for r in resources]})
        prefix = "SNOMED/" if kind == "Condition" else "RXNORM/"
        codes = set(rows["code"])
        # Procedures share no SNOMED codes with conditions in this set, so a code names one kind of fact.
        assert _per_patient(events, {prefix + c for c in codes}) == _source_counts(rows, "patient", "code", codes,
                                                                                   stable_id), kind


def test_generated_cohort_reads_the_same_from_every_format(cohort_dir: Path, tmp_path: Path) -> None:
    """events, FHIR bundles, bulk NDJSON and MEDS of one cohort: the same conditions and medications per
    patient (FHIR has no medication end dates, so those are compared only between events and MEDS;
    allergies are left out, as FHIR ingest does not read AllergyIntolerance, and so is the generic type
    the exporter gives a visit whose record names none)."""
    left_out = [a.code for a in load_knowledge().allergies] + [VISIT_WITHOUT_TYPE]
    events = load_events(cohort_dir / "events")
    write_meds(events, tmp_path / "meds.parquet")
    readings = {"events": events, "meds": read_events("meds", tmp_path / "meds.parquet"),
                "bundles": load_events(cohort_dir / "fhir" / "bundles"),
                "ndjson": load_events(cohort_dir / "fhir" / "ndjson")}

    def profile(frame: pl.DataFrame) -> list[tuple]:
        """Per patient (birth time, sorted condition+medication codes): ids differ across formats."""
        births = frame.filter(pl.col("code") == "TRAJSIM/birth").select("subject_id", "time")
        facts = frame.filter(pl.col("code").str.contains(r"^(SNOMED|ICD10CM|RXNORM)/") & (pl.col("code") != MEDICATION_END)
                             & ~pl.col("code").is_in(left_out))
        grouped = facts.group_by("subject_id").agg(pl.col("code").sort())
        return sorted(births.join(grouped, on="subject_id").drop("subject_id").iter_rows())

    expected = profile(events)
    assert len(expected) == events["subject_id"].n_unique()
    for name, frame in readings.items():
        assert profile(frame) == expected, name


def test_one_synthea_patient_is_the_same_from_csv_and_fhir(tmp_path: Path) -> None:
    """A Synthea patient exported both ways gets one subject_id and the same facts; the CSV also has a
    medication stop date, which FHIR MedicationRequest does not carry."""
    patient, encounter = "3edac2e3-d223-6fae-d515-daf96ef6bc76", "57f2562b-445c-f11c-ba40-edc55af3c84f"
    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "patients.csv").write_text(f"Id,BIRTHDATE,DEATHDATE,GENDER\n{patient},2014-10-06,,M\n")
    (csv / "encounters.csv").write_text(
        "Id,START,STOP,PATIENT,ENCOUNTERCLASS,CODE\n"
        f"{encounter},2023-01-27T16:17:47Z,2023-01-27T16:32:47Z,{patient},ambulatory,185345009\n")
    (csv / "conditions.csv").write_text(
        f"START,STOP,PATIENT,ENCOUNTER,CODE\n2023-01-27,2023-02-09,{patient},{encounter},195662009\n")
    (csv / "medications.csv").write_text(
        "START,STOP,PATIENT,ENCOUNTER,CODE,REASONCODE\n"
        f"2023-01-27T16:17:47Z,2023-02-03T16:17:47Z,{patient},{encounter},834060,195662009\n")
    subject, visit = {"reference": f"Patient/{patient}"}, {"reference": f"Encounter/{encounter}"}
    resources = [
        {"resourceType": "Patient", "id": patient, "birthDate": "2014-10-06", "gender": "male"},
        {"resourceType": "Encounter", "id": encounter, "class": {"code": "AMB"}, "subject": subject,
         "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185345009"}]}],
         "period": {"start": "2023-01-27T16:17:47Z", "end": "2023-01-27T16:32:47Z"}},
        {"resourceType": "Condition", "id": "c1", "subject": subject, "encounter": visit,
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195662009"}]},
         "onsetDateTime": "2023-01-27", "abatementDateTime": "2023-02-09"},
        {"resourceType": "MedicationRequest", "id": "m1", "subject": subject, "encounter": visit,
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                   "code": "834060"}]},
         "authoredOn": "2023-01-27T16:17:47Z", "reasonReference": [{"reference": "Condition/c1"}]},
    ]
    ndjson = tmp_path / "fhir.ndjson"
    ndjson.write_text("\n".join(json.dumps(r) for r in resources))
    from_csv = read_events("synthea-csv", csv)
    from_fhir = read_events("fhir", ndjson)
    assert from_csv.filter(pl.col("code") != MEDICATION_END).equals(from_fhir)
    assert from_csv.filter(pl.col("code") == MEDICATION_END)["text"].to_list() == ["RXNORM/834060"]
