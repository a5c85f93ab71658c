"""OMOP CDM, Synthea CSV and MEDS readers, format detection, and the ingest report."""

from __future__ import annotations

import zipfile
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from trajsim.events import validate_events
from trajsim.ingest import IngestError, detect_format, ingest, load_events, read_events, write_meds
from trajsim.ingest.common import sort_events

CSV = "synthea_csv_dbt27/csv"
OMOP = "omop_cdm54_eunomia_synthea27nj/Synthea27Nj_5.4.zip"


@pytest.fixture(scope="module")
def omop_folder(refdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Eunomia zip unpacked, with lower-case table names as many CDM exports use."""
    folder = tmp_path_factory.mktemp("omop")
    with zipfile.ZipFile(refdata / OMOP) as archive:
        for member in archive.namelist():
            if not member.startswith("__MACOSX") and member.endswith(".csv"):
                (folder / member.lower()).write_bytes(archive.read(member))
    return folder


def test_omop_zip_ingests_every_table_with_visit_classes(refdata: Path, tmp_path: Path) -> None:
    report = ingest("omop", refdata / OMOP, tmp_path / "events.parquet")
    events = validate_events(pl.read_parquet(tmp_path / "events.parquet"))
    assert {name: counts.read for name, counts in report.tables.items()} == {
        "person": 28, "death": 3, "visit_occurrence": 1791, "condition_occurrence": 470, "drug_exposure": 883,
        "procedure_occurrence": 1649, "measurement": 10040, "observation": 8099,
        "device_exposure": 1, "visit_detail": 1791, "note": 0}
    visits = events.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).group_by("code").len()
    # visit_concept_id 9202 outpatient, 9203 emergency room, 9201 inpatient; an outpatient and an
    # emergency visit that run for days (of the 4, 7 and 96 days the stays last) are stays
    assert dict(visits.iter_rows()) == {"TRAJSIM/visit/AMB": 1721, "TRAJSIM/visit/EMER": 55, "TRAJSIM/visit/IMP": 15}
    assert events.filter(pl.col("code") == "TRAJSIM/death").height == 3


def test_omop_measurements_keep_values_and_ucum_units(refdata: Path) -> None:
    events = read_events("omop", refdata / OMOP)
    weights = events.filter(pl.col("code") == "LOINC/29463-7")  # body weight, newborns included
    assert weights.height > 0 and (weights["unit"] == "kg").all() and weights["numeric_value"].is_between(0.5, 300).all()


def test_omop_folder_with_lower_case_names_reads_like_the_zip(refdata: Path, omop_folder: Path) -> None:
    assert detect_format(omop_folder) == "omop" and detect_format(refdata / OMOP) == "omop"
    assert read_events("omop", omop_folder).equals(read_events("omop", refdata / OMOP))


def test_omop_concept_missing_from_vocabulary_keeps_its_source_value(omop_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cdm"
    folder.mkdir()
    for name in ("person.csv", "concept.csv"):
        (folder / name).write_bytes((omop_folder / name).read_bytes())
    conditions = pl.read_csv(omop_folder / "condition_occurrence.csv", infer_schema=False).head(3)
    conditions = conditions.with_columns(pl.when(pl.int_range(3) == 0).then(pl.lit("999999999"))
                                         .otherwise(pl.col(c)).alias(c)
                                         for c in ("condition_concept_id", "condition_source_concept_id"))
    conditions.write_csv(folder / "condition_occurrence.csv")
    report = ingest("omop", folder, tmp_path / "out.parquet")
    assert report.tables["condition_occurrence"].read == 3 == report.tables["condition_occurrence"].kept
    events = pl.read_parquet(tmp_path / "out.parquet")
    source_value = conditions["condition_source_value"][0]
    assert events.filter(pl.col("code") == f"LOCAL/OMOP-condition_occurrence/{source_value}").height == 1


def test_synthea_csv_ingests_with_encounter_classes_and_indications(refdata: Path, tmp_path: Path) -> None:
    report = ingest("synthea-csv", refdata / CSV, tmp_path / "events.parquet")
    events = validate_events(pl.read_parquet(tmp_path / "events.parquet"))
    assert report.subjects == 27 and report.rows_kept == report.rows_read
    visits = dict(events.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).group_by("code").len().iter_rows())
    # wellness 348 + ambulatory 174 + outpatient 52 + urgentcare 2 are ambulatory care
    assert visits == {"TRAJSIM/visit/AMB": 576, "TRAJSIM/visit/EMER": 17, "TRAJSIM/visit/IMP": 11}
    medications = pl.read_csv(refdata / CSV / "medications.csv", infer_schema=False)
    treated = events.filter(pl.col("code").str.starts_with("RXNORM/") & pl.col("text").str.starts_with("SNOMED/"))
    assert treated.height == medications["REASONCODE"].is_not_null().sum() > 0
    observations = events.filter(pl.col("code").str.starts_with("LOINC/"))
    assert observations.height == 988  # of 990 LOINC rows, the two causes of death are the deaths' texts
    deaths = events.filter(pl.col("code") == "TRAJSIM/death")
    assert deaths["text"].to_list() == ["Myocardial Infarction"] * 2  # Synthea CSV states the cause in words
    assert observations.filter(pl.col("numeric_value").is_null())["text"].is_not_null().all()


def test_meds_round_trip_is_lossless(cohort_dir: Path, tmp_path: Path) -> None:
    events = load_events(cohort_dir / "events")
    write_meds(events, tmp_path / "data" / "shard-0.parquet")
    meds = pl.read_parquet(tmp_path / "data" / "shard-0.parquet")
    assert meds.schema["subject_id"] == pl.Int64 and "MEDS_BIRTH" in meds["code"].to_list()
    assert read_events("meds", tmp_path).equals(sort_events(events.lazy()).collect())


def test_meds_variants_value_column_system_spelling_and_static_rows(tmp_path: Path) -> None:
    pl.DataFrame({
        "subject_id": [7, 7, 7, 7, 7, 8],
        "time": [datetime(1990, 1, 1), datetime(2020, 5, 1), datetime(2020, 5, 1), datetime(2020, 5, 1), None, None],
        "code": ["MEDS_BIRTH", "LOINC/4548-4", "RxNorm/860975", "Blood Pressure", "GENDER//F", "GENDER//M"],
        "value": ["", "7.1", None, None, None, None],
    }).write_parquet(tmp_path / "meds.parquet")
    report = ingest("meds", tmp_path / "meds.parquet", tmp_path / "events.parquet")
    events = pl.read_parquet(tmp_path / "events.parquet")
    # a static row (no time) is dated at the subject's birth; subject 8 has none
    assert events["code"].to_list() == ["TRAJSIM/birth", "TRAJSIM/sex/F", "LOINC/4548-4", "RXNORM/860975",
                                        "LOCAL/MEDS/Blood Pressure"]
    assert events["numeric_value"].to_list() == [None, None, 7.1, None, None] and events["text"].null_count() == 5
    assert report.tables["meds.parquet"].dropped == {"missing time": 1}


def test_same_input_gives_identical_bytes(refdata: Path, tmp_path: Path) -> None:
    ingest("synthea-csv", refdata / CSV, tmp_path / "a.parquet")
    ingest("synthea-csv", refdata / CSV, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_unknown_input_shape_asks_for_a_format(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(IngestError, match="pass --format"):
        detect_format(tmp_path)


def test_large_inputs_are_sorted_patient_by_patient(refdata: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above EVENTS_PER_BUCKET events, patients are sorted in buckets: the same rows, each patient's
    events contiguous and in time order, indications still resolved."""
    whole = read_events("fhir", refdata / "synthea_fhir_r4_bulk_ndjson_10")
    monkeypatch.setattr("trajsim.ingest.EVENTS_PER_BUCKET", 1000)
    ingest("fhir", refdata / "synthea_fhir_r4_bulk_ndjson_10", tmp_path / "events.parquet")
    bucketed = pl.read_parquet(tmp_path / "events.parquet")
    assert bucketed.sort(bucketed.columns, nulls_last=True).equals(whole.sort(whole.columns, nulls_last=True))
    runs = bucketed.select((pl.col("subject_id") != pl.col("subject_id").shift()).fill_null(True).sum()).item()
    assert runs == bucketed["subject_id"].n_unique() == 13
    for _, patient in bucketed.group_by("subject_id"):
        assert patient["time"].is_sorted()
    assert bucketed.filter(pl.col("code").str.starts_with("RXNORM/") & pl.col("text").is_not_null()).height == \
        whole.filter(pl.col("code").str.starts_with("RXNORM/") & pl.col("text").is_not_null()).height


def test_rows_without_a_patient_are_dropped_and_counted(refdata: Path, tmp_path: Path) -> None:
    folder = tmp_path / "synthea"
    folder.mkdir()
    for name in ("patients.csv", "encounters.csv"):
        (folder / name).write_bytes((refdata / CSV / name).read_bytes())
    conditions = pl.read_csv(refdata / CSV / "conditions.csv", infer_schema=False).head(5)
    conditions.with_columns(pl.when(pl.int_range(5) < 2).then(None).otherwise(pl.col("PATIENT")).alias("PATIENT")
                            ).write_csv(folder / "conditions.csv")
    report = ingest("synthea-csv", folder, tmp_path / "out.parquet")
    assert report.tables["conditions"].dropped == {"missing patient id": 2}
    assert validate_events(pl.read_parquet(tmp_path / "out.parquet"))["subject_id"].is_not_null().all()
