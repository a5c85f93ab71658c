"""The real MIMIC-IV demo half as MEDS and as OMOP CDM 5.3: every row kept, the same 49 patients and
the same diagnoses and birth years from both, descriptions in the codes table, a MEDS round trip."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from fhir_export.resources import ResourceBuilder
from trajsim.events import Event, validate_events
from trajsim.ingest import IngestReport, ingest, read_events, write_meds
from trajsim.vocab import load_vocabulary
from trajsim.vocab.local import CODES_SCHEMA, codes_path, read_codes, system_and_code, with_codes

MEDS = "mimic_iv_demo_meds_half/mimic_iv_demo_meds_events.parquet"
OMOP = "omop_cdm53_mimic_iv_demo_half/csv"


@pytest.fixture(scope="module")
def meds(refdata: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[IngestReport, pl.DataFrame, pl.DataFrame]:
    out = tmp_path_factory.mktemp("meds") / "events.parquet"
    report = ingest("meds", refdata / MEDS, out)
    return report, validate_events(pl.read_parquet(out)), read_codes(codes_path(out))


@pytest.fixture(scope="module")
def omop(refdata: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[IngestReport, pl.DataFrame, pl.DataFrame]:
    out = tmp_path_factory.mktemp("omop") / "events.parquet"
    report = ingest("omop", refdata / OMOP, out)
    return report, validate_events(pl.read_parquet(out)), read_codes(codes_path(out))


def _mimic_ids(refdata: Path) -> pl.DataFrame:
    """OMOP person_id (as the event table's unsigned id) -> MIMIC subject id (person_source_value)."""
    person = pl.read_csv(refdata / OMOP / "person.csv", schema_overrides={"person_id": pl.Int64})
    return person.select(pl.col("person_id").reinterpret(signed=False).alias("subject_id"),
                         pl.col("person_source_value").cast(pl.UInt64).alias("mimic_id"))


def test_meds_keeps_every_row_with_icd_codes_normalised(meds) -> None:
    report, events, _ = meds
    assert report.rows_read == 414_183 and report.rows_kept == report.rows_read
    assert report.subjects == 49
    assert report.prefixes["ICD9CM"] + report.prefixes["ICD10CM"] == 2191  # every DIAGNOSIS//ICD row
    assert report.prefixes["LOCAL/MEDS-LAB"] == 350_249
    assert events.filter(pl.col("code") == "ICD9CM/401.9").height > 0


def test_meds_lab_codes_carry_their_unit(meds) -> None:
    _, events, codes = meds
    lab = events.filter(pl.col("code") == "LOCAL/MEDS-LAB/50912")  # creatinine
    assert lab.height > 0 and (lab["unit"] == "mg/dL").all() and lab["numeric_value"].is_not_null().all()
    assert codes.filter(pl.col("code") == "LOCAL/MEDS-LAB/50912")["source_codes"].item().to_list() == ["LAB//50912//mg/dL"]


def test_meds_admissions_and_ed_stays_become_visits(meds) -> None:
    _, events, _ = meds
    visits = dict(events.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).group_by("code").len().iter_rows())
    assert visits == {"TRAJSIM/visit/IMP": 143, "TRAJSIM/visit/EMER": 90}
    # one discharge of subject 10002930 (2197-04-15) follows no open visit of its class
    assert events.filter(pl.col("code") == "TRAJSIM/visit_end")["encounter_id"].null_count() <= 1
    diagnoses = events.filter(pl.col("code").str.starts_with("ICD"))
    assert diagnoses["encounter_id"].null_count() < diagnoses.height // 2


def test_omop_53_with_signed_ids_keeps_every_row(omop, refdata: Path) -> None:
    report, events, codes = omop
    assert report.rows_kept == report.rows_read == 29_645 and report.subjects == 49
    assert set(events["subject_id"].unique()) == set(_mimic_ids(refdata)["subject_id"])
    assert codes.filter(pl.col("code").str.starts_with("LOCAL/mimiciv_"))["description"].null_count() == 0


def test_meds_and_omop_of_the_same_people_agree(meds, omop, refdata: Path) -> None:
    ids = _mimic_ids(refdata)
    meds_events = meds[1].rename({"subject_id": "mimic_id"})
    omop_events = omop[1].join(ids, on="subject_id").drop("subject_id")
    births = [frame.filter(pl.col("code") == "TRAJSIM/birth").select("mimic_id", pl.col("time").dt.year())
              .sort("mimic_id") for frame in (meds_events, omop_events)]
    assert births[0].height == 49 and births[0].equals(births[1])
    # OMOP keeps MIMIC's ICD codes as condition source values, without dot or version
    meds_icd = meds_events.filter(pl.col("code").str.contains("^ICD(9|10)CM/")).select(
        "mimic_id", pl.col("code").str.replace(r"^ICD(9|10)CM/", "").str.replace(".", "", literal=True).alias("icd"))
    omop_icd = omop_events.filter(pl.col("code").str.starts_with("LOCAL/MIMICIV-condition_occurrence/")).select(
        "mimic_id", pl.col("code").str.replace("LOCAL/MIMICIV-condition_occurrence/", "", literal=True).alias("icd"))
    per_patient = [icd.group_by("mimic_id").agg(pl.col("icd").unique()) for icd in (meds_icd, omop_icd)]
    joined = per_patient[0].join(per_patient[1], on="mimic_id", suffix="_omop")
    overlap = joined.select(pl.col("icd").list.set_intersection("icd_omop").list.len().sum()).item()
    # OMOP holds 1,847 ICD condition rows to MEDS' 2,191: four in five of MEDS' codes per patient are there
    assert joined.height == 49 and overlap >= 0.8 * meds_icd.unique().height


def test_meds_dataset_round_trip(meds, tmp_path: Path) -> None:
    _, events, codes = meds
    write_meds(events, tmp_path / "dataset", codes=codes, name="MIMIC-IV demo")
    assert {p.name for p in (tmp_path / "dataset" / "metadata").iterdir()} == {
        "codes.parquet", "dataset.json", "subject_splits.parquet"}
    metadata = pl.read_parquet(tmp_path / "dataset" / "metadata" / "codes.parquet")
    assert metadata.schema["parent_codes"] == pl.List(pl.String) and "LOCAL/MEDS-LAB/50912" in metadata["code"]
    assert read_events("meds", tmp_path / "dataset").equals(events)


def test_omop_negative_ids_come_back_in_meds(omop, tmp_path: Path, refdata: Path) -> None:
    write_meds(omop[1], tmp_path / "omop.parquet")
    person = pl.read_csv(refdata / OMOP / "person.csv", schema_overrides={"person_id": pl.Int64})
    assert set(pl.read_parquet(tmp_path / "omop.parquet")["subject_id"]) == set(person["person_id"])


def test_exporter_writes_local_codes_with_source_system_and_display(omop) -> None:
    _, _, codes = omop
    vocabulary = with_codes(load_vocabulary(), codes)
    code = codes.filter(pl.col("code").str.starts_with("LOCAL/mimiciv_vis_admission_location/"))["code"][0]
    assert system_and_code(code)[0] == "urn:trajsim:local:mimiciv_vis_admission_location"
    assert vocabulary.display(code) == codes.filter(pl.col("code") == code)["description"].item()
    assert system_and_code("SNOMED/44054006") == ("http://snomed.info/sct", "44054006")


def test_exporter_writes_an_ingested_local_condition_with_its_display() -> None:
    codes = pl.DataFrame({"code": ["LOCAL/MEDS-DIAGNOSIS/X1"], "description": ["Local finding"],
                          "domain": ["condition"], "system_uri": [None], "source_codes": [["DIAGNOSIS//X1"]],
                          "events": [1]}, schema=CODES_SCHEMA)
    builder = ResourceBuilder("test", with_codes(load_vocabulary(), codes))
    born, seen = datetime(1980, 1, 1), datetime(2020, 1, 1)
    resources = builder.build([Event(1, born, None, "TRAJSIM/birth"), Event(1, seen, 5, "TRAJSIM/visit/IMP"),
                               Event(1, seen, 5, "LOCAL/MEDS-DIAGNOSIS/X1"),
                               Event(1, seen, 5, "TRAJSIM/visit_end")]).resources
    condition = next(r for r in resources if r["resourceType"] == "Condition")
    assert condition["code"] == {"coding": [{"system": "urn:trajsim:local:MEDS-DIAGNOSIS", "code": "X1",
                                             "display": "Local finding"}], "text": "Local finding"}


def test_omop_mimic_records_split_and_encode_for_training(omop) -> None:
    """MIMIC's OMOP ids read as unsigned pass 2^63 and its shifted dates run past 2200: the training
    split keeps every id exactly, and a record reaching past the years its tokenizer was fitted on
    (a validation patient) still encodes, its years held to the vocabulary's."""
    from trajsim.model.tokenizer import Tokenizer
    from trajsim.model.train import split_subjects

    events = omop[1]
    subjects = set(events["subject_id"].unique().to_list())
    assert max(subjects) >= 2**63
    train_ids, val_ids = split_subjects(list(subjects), 0.1, 0)
    assert train_ids | val_ids == subjects and not train_ids & val_ids and len(val_ids) == 5
    last = events.group_by("subject_id").agg(pl.col("time").max()).sort("time")
    latest = last["subject_id"][-1]
    tokenizer = Tokenizer.fit(events.filter(pl.col("subject_id") != latest))
    assert f"UNTIL/{last['time'][-1].year}" not in tokenizer.index
    [(subject, ids)] = tokenizer.encode(events.filter(pl.col("subject_id") == latest))
    assert subject == latest and tokenizer.vocab[ids[4]] == max(t for t in tokenizer.vocab if t.startswith("UNTIL/"))


def test_omop_admissions_are_stays_whatever_place_they_name(omop, meds) -> None:
    """The MIMIC-IV OMOP ETL names an admission by where it came from (Emergency Room - Hospital,
    Observation Room): those running for days are stays, as MEDS of the same people records them,
    and no outpatient or emergency visit runs longer than a model may write it."""
    events = omop[1]
    starts = events.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).select("encounter_id", "code", start="time")
    ends = events.filter(pl.col("code") == "TRAJSIM/visit_end").select("encounter_id", end="time")
    visits = starts.join(ends, on="encounter_id").with_columns(days=(pl.col("end").dt.date() - pl.col("start").dt.date()).dt.total_days())
    longest = dict(visits.group_by("code").agg(pl.col("days").max()).iter_rows())
    assert longest["TRAJSIM/visit/AMB"] <= 1 and longest["TRAJSIM/visit/EMER"] <= 3
    stays = visits.filter(pl.col("code") == "TRAJSIM/visit/IMP").height
    meds_stays = meds[1].filter(pl.col("code") == "TRAJSIM/visit/IMP").height
    assert stays == 105 and 0.7 * meds_stays <= stays <= meds_stays
