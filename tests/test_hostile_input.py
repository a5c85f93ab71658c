"""Corrupt and hostile input: every reader and the scenario loader answer with one error naming the
file and the entry, row or line, never a traceback, and stay within their memory and disk bounds.
The fuzz tests mutate valid inputs with a seeded mutator, so a failure names a reproducible case."""

from __future__ import annotations

import gzip
import json
import random
import shutil
import tomllib
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from tests.conftest import REPO
from trajsim.cli import app
from trajsim.events import EventTableError
from trajsim.ingest import IngestError, read_events
from trajsim.ingest.fhir import MAX_LINE_BYTES
from trajsim.scenario import ScenarioError, load_scenario

ODD_VALUES: list[Any] = [None, 0, -1.5, True, "", "abc", "2020-13-45", [], [1, "x"], {}, {"a": 1}]
FUZZ_CASES = 120


def _bundle(cohort_dir: Path) -> dict[str, Any]:
    return json.loads(next((cohort_dir / "fhir" / "bundles").glob("*.json")).read_bytes())


def _write_bundle(folder: Path, document: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bundle.json").write_text(json.dumps(document))
    return folder


def _resource(document: dict[str, Any], kind: str, having: str | None = None) -> dict[str, Any]:
    return next(entry["resource"] for entry in document["entry"]
                if entry["resource"]["resourceType"] == kind and (having is None or having in entry["resource"]))


MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "entry is a number": (lambda d: d.update(entry=5), "Bundle.entry must be a list"),
    "entries are strings": (lambda d: d.update(entry=["a", "b"]), "entry 1: expected an entry object"),
    "Observation value is text": (lambda d: _resource(d, "Observation", "valueQuantity")["valueQuantity"]
                                  .update(value="abc"), "valueQuantity.value 'abc' is not a number"),
    "coding of non-objects": (lambda d: _resource(d, "Condition")["code"].update(coding=[1, "x"]),
                              "coding item 1 must be an object"),
    "resourceType is a list": (lambda d: d["entry"][1]["resource"].update(resourceType=["Condition"]),
                               "entry 2: resourceType must be a string"),
    "gender is a list": (lambda d: _resource(d, "Patient").update(gender=["female"]), "gender must be a string"),
    "components are an object": (lambda d: _resource(d, "Observation", "component").update(component={"a": 1}),
                                 "component must be a list of objects"),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_malformed_fhir_names_the_file_and_entry(cohort_dir: Path, tmp_path: Path, case: str) -> None:
    document = _bundle(cohort_dir)
    mutate, message = MUTATIONS[case]
    mutate(document)
    folder = _write_bundle(tmp_path / "fhir", document)
    with pytest.raises(IngestError, match="bundle.json") as error:
        read_events("fhir", folder)
    assert message in str(error.value)


def test_fuzzed_fhir_bundles_fail_only_with_a_named_error(cohort_dir: Path, tmp_path: Path) -> None:
    original = _bundle(cohort_dir)
    for case in range(FUZZ_CASES):
        rng = random.Random(case)
        document = json.loads(json.dumps(original))
        for _ in range(rng.randint(1, 3)):
            _mutate_one(document, rng)
        folder = _write_bundle(tmp_path / f"case-{case}", document)
        try:
            read_events("fhir", folder)
        except (IngestError, EventTableError) as exc:
            assert str(folder) in str(exc), f"case {case}: error does not name the file: {exc}"


def _mutate_one(document: Any, rng: random.Random) -> None:
    """Replace one value found by a random walk from the root with an odd value of another type."""
    node, chosen = document, None
    for _ in range(rng.randint(1, 6)):
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        children = [(k, v) for k, v in children if isinstance(v, dict | list) or rng.random() < 0.5]
        if not children:
            break
        key, child = rng.choice(children)
        chosen = (node, key)
        if not isinstance(child, dict | list) or not child or rng.random() < 0.3:
            break
        node = child
    if chosen is not None:
        parent, key = chosen
        parent[key] = rng.choice(ODD_VALUES)


def test_fuzzed_parquet_bytes_fail_only_with_a_named_error(cohort_dir: Path, tmp_path: Path) -> None:
    source = sorted((cohort_dir / "events").glob("*.parquet"))[0].read_bytes()
    for case in range(30):
        rng = random.Random(case)
        data = bytearray(source[: rng.randint(1, len(source))] if case % 3 == 0 else source)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        folder = tmp_path / f"case-{case}"
        folder.mkdir()
        (folder / "events.parquet").write_bytes(bytes(data))
        try:
            read_events("meds", folder)
        except (IngestError, EventTableError) as exc:
            assert "events.parquet" in str(exc) or str(folder) in str(exc), f"case {case}: {exc}"


def test_meds_without_any_patient_is_refused(tmp_path: Path) -> None:
    pl.DataFrame({"subject_id": pl.Series([None, None], dtype=pl.Int64), "time": [None, None],
                  "code": ["MEDS_BIRTH", "LOINC/4548-4"], "numeric_value": [None, 6.1]},
                 schema_overrides={"time": pl.Datetime}).write_parquet(tmp_path / "x.parquet")
    with pytest.raises(IngestError, match="no event kept of 2 rows read .*missing patient id"):
        read_events("meds", tmp_path)


@pytest.fixture
def synthea_csv(refdata: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "csv"
    shutil.copytree(refdata / "synthea_csv_dbt27" / "csv", folder)
    return folder


def test_ragged_csv_row_names_the_line(synthea_csv: Path) -> None:
    table = synthea_csv / "conditions.csv"
    lines = table.read_text().splitlines()
    lines[3] += ",extra,fields"
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(IngestError, match=r"conditions.csv line 4: 8 fields where the header has 6"):
        read_events("synthea-csv", synthea_csv)


def test_fuzzed_synthea_csv_fails_only_with_a_named_error(synthea_csv: Path) -> None:
    tables = sorted(synthea_csv.glob("*.csv"))
    originals = {path: path.read_text().splitlines() for path in tables}
    for case in range(15):
        rng = random.Random(case)
        path = rng.choice(tables)
        lines = list(originals[path])
        row = rng.randrange(len(lines))
        lines[row] = rng.choice(['"', lines[row] + ",", ",".join(lines[row].split(",")[:-1]), "\x00\xff",
                                 lines[row].replace("-", "/"), lines[row].replace(",", ",2020-99-99,", 1)])
        path.write_text("\n".join(lines) + "\n")
        try:
            read_events("synthea-csv", synthea_csv)
        except (IngestError, EventTableError) as exc:
            assert str(synthea_csv) in str(exc), f"case {case}: {exc}"
        finally:
            path.write_text("\n".join(originals[path]) + "\n")


@pytest.fixture
def omop_zip(refdata: Path) -> Path:
    return refdata / "omop_cdm54_eunomia_synthea27nj" / "Synthea27Nj_5.4.zip"


def test_omop_zip_with_two_person_tables_is_refused(omop_zip: Path, tmp_path: Path) -> None:
    doubled = tmp_path / "omop.zip"
    with zipfile.ZipFile(omop_zip) as source, zipfile.ZipFile(doubled, "w") as target:
        for name in source.namelist():
            target.writestr(name, source.read(name))
        person = next(name for name in source.namelist() if name.lower().endswith("person.csv"))
        target.writestr("copy/PERSON.csv", source.read(person))
    with pytest.raises(IngestError, match="holds two person tables"):
        read_events("omop", doubled)


def test_omop_zip_member_with_a_bad_crc_names_the_member(omop_zip: Path, tmp_path: Path) -> None:
    data = bytearray(omop_zip.read_bytes())
    with zipfile.ZipFile(omop_zip) as archive:
        info = next(i for i in archive.infolist() if i.filename.lower().endswith("person.csv"))
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + 10] ^= 0xFF
    damaged = tmp_path / "omop.zip"
    damaged.write_bytes(bytes(data))
    with pytest.raises(IngestError, match=r"omop.zip/.*PERSON.csv: truncated or corrupt zip member"):
        read_events("omop", damaged)


def test_zip_bomb_is_refused_before_filling_the_disk(tmp_path: Path) -> None:
    bomb = tmp_path / "omop.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive, \
            archive.open("PERSON.csv", "w") as member:
        member.write(b"person_id,gender_concept_id,year_of_birth\n")
        for _ in range(300):
            member.write(b"0" * 2**20)
    assert bomb.stat().st_size < 2 * 2**20
    with pytest.raises(IngestError, match="expands to more than"):
        read_events("omop", bomb)


def test_gzip_line_bomb_is_refused_within_a_memory_bound(tmp_path: Path) -> None:
    folder = tmp_path / "ndjson"
    folder.mkdir()
    with gzip.open(folder / "Patient.ndjson.gz", "wb", compresslevel=1) as handle:
        handle.write(b'{"resourceType": "Patient", "id": "')
        for _ in range(MAX_LINE_BYTES // 2**20 + 8):
            handle.write(b"a" * 2**20)
        handle.write(b'"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(IngestError, match="line 1: longer than 64 MB"):
            read_events("fhir", folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * MAX_LINE_BYTES


def test_fuzzed_scenarios_load_or_name_the_field(tmp_path: Path) -> None:
    original = tomllib.loads((REPO / "scenarios" / "default.toml").read_text())
    path = tmp_path / "scenario.toml"
    for case in range(FUZZ_CASES):
        rng = random.Random(case)
        document = json.loads(json.dumps(original, default=str))
        _mutate_one(document, rng)
        path.write_text(_toml(document))
        try:
            load_scenario(path)
        except ScenarioError as exc:
            assert str(exc).startswith(f"{path}: "), f"case {case}: {exc}"


def _toml(document: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for fuzzed scenarios (tables, arrays of inline values; None is left out)."""
    lines, tables = [], []
    for key, value in document.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{json.dumps(str(key))} = {_inline(value)}")
    text = "\n".join(lines) + "\n"
    for key, value in tables:
        name = f"{prefix}{json.dumps(str(key))}"
        text += f"\n[{name}]\n" + _toml(value, name + ".")
    return text


def _inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_inline(v)}" for k, v in value.items() if v is not None) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value if v is not None) + "]"
    return json.dumps(value)


@pytest.mark.parametrize("command", ["ingest", "train", "evaluate", "generate"])
@pytest.mark.parametrize("under_file", [False, True])
def test_out_that_is_a_file_is_refused_before_any_work(cohort_dir: Path, tmp_path: Path, command: str,
                                                       under_file: bool) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    out = blocker / "inside" if under_file else blocker
    events = cohort_dir / "events"
    arguments = {"ingest": [str(cohort_dir / "fhir" / "bundles"), "--format", "fhir"],
                 "train": ["--events", str(events), "--max-steps", "2"],
                 "evaluate": ["--real", str(events), "--synthetic", str(events)],
                 "generate": ["-n", "2"]}[command]
    if command == "ingest" and not under_file:  # ingest writes a file: a folder is what it refuses
        out = tmp_path
    result = CliRunner().invoke(app, [command, *arguments, "--out", str(out)])
    message = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert f"{out}:" in message
    assert blocker.read_text() == "not a folder"
