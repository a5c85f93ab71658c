"""A cohort of test patients looks like a population, not a cast of thirty: names and home towns are
drawn by their national frequencies, so duplicate-detection tests fire only where real data would,
and a user can place the cohort in one state or city."""

from __future__ import annotations

from collections import Counter

import orjson
from typer.testing import CliRunner

from fhir_export.demographics import patient_details
from trajsim.cli import app

runner = CliRunner(env={"COLUMNS": "250"})


def people(count: int, **home: str) -> list[dict]:
    return [patient_details(f"identity/{n}", "FM"[n % 2], home.get("state"), home.get("city"))[0] for n in range(count)]


def test_five_hundred_patients_have_many_names_and_places():
    cohort = people(500)
    full_names = Counter((p["name"][0]["given"][0], p["name"][0]["family"]) for p in cohort)
    families = {p["name"][0]["family"] for p in cohort}
    cities = Counter((p["address"][0]["city"], p["address"][0]["state"]) for p in cohort)
    assert len(families) > 300 and len(cities) > 150
    assert sum(n - 1 for n in full_names.values()) <= 5  # a shared full name is rare, as in real records
    assert cities.most_common(1)[0][1] < 40  # New York holds about 5% of the people in US cities
    assert len({state for _, state in cities}) > 30


def test_common_names_are_common():
    families = Counter(p["name"][0]["family"] for p in people(2000))
    assert families["Smith"] > families["Zimmerman"]
    assert families.most_common(1)[0][0] in {"Smith", "Johnson", "Williams", "Jones", "Brown"}


def test_a_cohort_can_live_in_one_state_or_city():
    assert {p["address"][0]["state"] for p in people(100, state="OH")} == {"OH"}
    assert {(p["address"][0]["city"], p["address"][0]["state"]) for p in people(20, state="MO", city="St. Louis")} \
        == {("St. Louis", "MO")}


def test_generate_places_patients_where_asked(tmp_path):
    result = runner.invoke(app, ["generate", "-p", "3", "--state", "VT", "--model", "reference", "-f", "ndjson",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    patients = [orjson.loads(line) for line in (tmp_path / "fhir/ndjson/Patient.ndjson").read_bytes().splitlines()]
    assert len(patients) == 3 and {p["address"][0]["state"] for p in patients} == {"VT"}


def test_an_unknown_state_or_city_is_refused_with_what_is_allowed(tmp_path):
    result = runner.invoke(app, ["generate", "-p", "3", "--state", "XX", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "state 'XX' is not a two-letter US state code" in result.output
    assert "allowed: AK, AL" in result.output
    result = runner.invoke(app, ["generate", "-p", "3", "--state", "MO", "--city", "Chicago", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "city 'Chicago'" in result.output
