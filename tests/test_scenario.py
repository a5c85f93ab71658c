"""Scenarios: the default file matches the built-in defaults, and every mistake names file and field."""

import os
from pathlib import Path

import pytest

from trajsim.scenario import Scenario, ScenarioError, load_scenario, with_overrides

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def test_default_scenario_file_matches_builtin_defaults():
    assert load_scenario(REPO / "scenarios" / "default.toml") == Scenario()


def test_every_shipped_scenario_is_valid():
    for path in sorted((REPO / "scenarios").glob("*.toml")):
        load_scenario(path)


def test_wrong_type_names_file_field_and_value(tmp_path):
    path = write(tmp_path, '[population]\nsize = "many"\n')
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert f"{path}: population.size:" in str(error.value)
    assert "'many'" in str(error.value)


@pytest.mark.parametrize("toml, message", [
    ('[output]\nformats = ["bundle", "csv"]\n',
     r"output.formats\[1\]: Input should be 'bundle', 'collection', 'ndjson' or 'events' \(got 'csv'\)"),
    ('care = "nurse"\n', r"care: Input should be 'engine' or 'source' \(got 'nurse'\)"),
    ("[population]\ncolour = 3\n", r"population.colour: unknown field; allowed here: size, female_fraction, age_mix"),
    ("[period]\nstart = 2020-01-01\nend = 2019-01-01\n", r"period: start \(2020-01-01\) must be before end \(2019-01-01\)"),
])
def test_a_wrong_value_says_what_is_allowed(tmp_path, toml, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(write(tmp_path, toml))


def test_age_group_bounds_must_be_ordered(tmp_path):
    path = write(tmp_path, "[population]\nage_mix = [{min = 10, max = 5, weight = 1}]\n")
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert str(error.value) == f"{path}: population.age_mix[0]: max (5) must be greater than min (10)"


@pytest.mark.parametrize("toml, field_error", [
    ('[population]\nsize = "100"\n', "population.size: Input should be a valid integer (got '100')"),
    ("[population]\nsize = true\n", "population.size: Input should be a valid integer (got True)"),
    ('[population]\nfemale_fraction = "0.5"\n', "population.female_fraction: Input should be a valid number (got '0.5')"),
])
def test_a_quoted_number_or_a_boolean_is_refused_not_coerced(tmp_path, toml, field_error):
    path = write(tmp_path, toml)
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert str(error.value) == f"{path}: {field_error}"


def test_an_integer_is_a_valid_fraction(tmp_path):
    fraction = load_scenario(write(tmp_path, "[population]\nfemale_fraction = 1\n")).population.female_fraction
    assert fraction == 1.0 and isinstance(fraction, float)


def test_a_scenario_survives_the_json_trip_to_a_worker_process():
    scenario = load_scenario(REPO / "scenarios" / "t2d_control_arm.toml")
    assert Scenario.model_validate_json(scenario.model_dump_json()) == scenario


def test_corrupt_toml_names_the_line(tmp_path):
    path = write(tmp_path, 'name = "default"\nseed = = 3\n')
    with pytest.raises(ScenarioError, match=r"not valid TOML: .*line 2"):
        load_scenario(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "absent.toml")


def test_command_line_overrides_are_validated_too():
    with pytest.raises(ScenarioError, match=r"command line: population.size: Input should be greater than or equal to 1"):
        with_overrides(Scenario(), "command line", **{"population.size": 0})


def test_start_is_a_date_or_birth(tmp_path):
    assert load_scenario(write(tmp_path, '[period]\nstart = "birth"\n')).period.start == "birth"
    with pytest.raises(ScenarioError, match=r"period.start: .*got 'yesterday'"):
        load_scenario(write(tmp_path, '[period]\nstart = "yesterday"\n'))


def test_a_pipe_is_refused_instead_of_read_forever(tmp_path):
    fifo = tmp_path / "scenario.toml"
    os.mkfifo(fifo)
    with pytest.raises(ScenarioError, match="not a regular file"):
        load_scenario(fifo)


def test_a_huge_file_is_refused(tmp_path):
    path = write(tmp_path, "# " + "x" * 2_000_000 + "\n")
    with pytest.raises(ScenarioError, match="a scenario is a small TOML file"):
        load_scenario(path)


def test_a_number_given_as_the_scenario_hints_at_the_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScenarioError, match=r"42: no such scenario file \(for a random seed use --seed\)"):
        load_scenario(Path("42"))
