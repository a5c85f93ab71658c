"""`trajsim ingest` on the command line: a summary on success; on bad input one sentence naming the
file (and line), exit code 2, no traceback and no output file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from trajsim.cli import app

CSV = "synthea_csv_dbt27/csv"


def _run(*args: str | Path):
    return CliRunner().invoke(app, ["ingest", *map(str, args)])


def _assert_user_error(result, *fragments: str) -> None:
    message = " ".join(result.output.split())  # rich may wrap long lines
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for fragment in fragments:
        assert fragment in message, result.output


@pytest.fixture
def synthea_copy(refdata: Path, tmp_path: Path) -> Path:
    """The two required tables of the Synthea CSV set, copied so a test can damage them."""
    folder = tmp_path / "synthea"
    folder.mkdir()
    for name in ("patients.csv", "encounters.csv"):
        (folder / name).write_bytes((refdata / CSV / name).read_bytes())
    return folder


def test_ingest_prints_a_summary_and_writes_events(refdata: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.parquet"
    result = _run(refdata / CSV, "--out", out)
    assert result.exit_code == 0, result.output
    assert "27 patients" in result.output and "conditions" in result.output
    assert pl.read_parquet(out)["subject_id"].n_unique() == 27


def test_missing_column_names_the_file(synthea_copy: Path, tmp_path: Path) -> None:
    patients = synthea_copy / "patients.csv"
    pl.read_csv(patients, infer_schema=False).drop("BIRTHDATE").write_csv(patients)
    result = _run(synthea_copy, "--out", tmp_path / "out.parquet")
    _assert_user_error(result, "patients.csv: missing column(s) BIRTHDATE")
    assert not (tmp_path / "out.parquet").exists()


def test_missing_table_names_the_table(synthea_copy: Path, tmp_path: Path) -> None:
    (synthea_copy / "encounters.csv").unlink()
    result = _run(synthea_copy, "--format", "synthea-csv", "--out", tmp_path / "out.parquet")
    _assert_user_error(result, "missing table(s) encounters.csv")
    assert not (tmp_path / "out.parquet").exists()


def test_unparseable_date_names_file_and_line(synthea_copy: Path, tmp_path: Path) -> None:
    encounters = synthea_copy / "encounters.csv"
    lines = encounters.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[2].split(",")
    row[header.index("START")] = "27/01/2023"
    encounters.write_text("\n".join([*lines[:2], ",".join(row), *lines[3:]]) + "\n")
    result = _run(synthea_copy, "--out", tmp_path / "out.parquet")
    _assert_user_error(result, "encounters.csv line 3: START '27/01/2023' is not a date")
    assert not (tmp_path / "out.parquet").exists()


def test_truncated_gzip_names_the_file(refdata: Path, tmp_path: Path) -> None:
    whole = (refdata / "synthea_fhir_r4_bulk_ndjson_10" / "Encounter.000.ndjson.gz").read_bytes()
    folder = tmp_path / "bulk"
    folder.mkdir()
    (folder / "Encounter.000.ndjson.gz").write_bytes(whole[: len(whole) // 3])
    result = _run(folder, "--out", tmp_path / "out.parquet")
    _assert_user_error(result, "Encounter.000.ndjson.gz: truncated or corrupt gzip")
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".ingest-*"))


def test_truncated_zip_names_the_file(refdata: Path, tmp_path: Path) -> None:
    whole = (refdata / "omop_cdm54_eunomia_synthea27nj" / "Synthea27Nj_5.4.zip").read_bytes()
    broken = tmp_path / "cdm.zip"
    broken.write_bytes(whole[: len(whole) // 2])
    result = _run(broken, "--format", "omop", "--out", tmp_path / "out.parquet")
    _assert_user_error(result, "cdm.zip: truncated or corrupt zip file")
    assert not (tmp_path / "out.parquet").exists()


def test_unknown_format_lists_the_formats(tmp_path: Path) -> None:
    _assert_user_error(_run(tmp_path, "--format", "hl7v2"), "unknown format 'hl7v2'", "synthea-csv")
