"""The command line as a user meets it: it works without arguments beyond an output folder,
and a mistake ends with one clear sentence and exit code 2, never a traceback."""

import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO
from trajsim.cli import app

runner = CliRunner(env={"COLUMNS": "250"})  # long paths stay on one line


def test_generate_writes_the_requested_cohort(tmp_path):
    result = runner.invoke(app, ["generate", "-n", "5", "--seed", "3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "fhir" / "bundles").glob("*.json"))) == 5
    assert "5 patients" in result.output


def test_the_shipped_scenarios_load(tmp_path):
    for scenario in sorted((REPO / "scenarios").glob("*.toml")):
        result = runner.invoke(app, ["generate", "--scenario", str(scenario), "-n", "2", "--out", str(tmp_path / scenario.stem)])
        assert result.exit_code == 0, (scenario, result.output)


@pytest.mark.parametrize("toml, expected", [
    ('[population]\nsize = "many"\n', "population.size"),
    ('[population]\nsize = "100"\n', "population.size: Input should be a valid integer (got '100')"),
    ("[population]\nsize = true\n", "population.size: Input should be a valid integer (got True)"),
    ('[population]\nfemale_fraction = "0.5"\n', "population.female_fraction: Input should be a valid number (got '0.5')"),
    ('[output]\nformats = ["pdf"]\n', "'bundle', 'collection', 'ndjson' or 'events'"),
    ('[populaton]\nsize = 3\n', "allowed here: name, description, seed, population, period, output"),
    ('seed = 1\nseed = 2\n', "line 2"),
])
def test_a_bad_scenario_names_the_file_and_the_field(tmp_path, toml, expected):
    scenario = tmp_path / "bad.toml"
    scenario.write_text(toml)
    result = runner.invoke(app, ["generate", "--scenario", str(scenario), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert str(scenario) in result.output and expected in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_missing_scenario_file_is_a_user_error(tmp_path):
    result = runner.invoke(app, ["generate", "--scenario", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "nope.toml" in result.output and "Traceback" not in result.output


def test_validate_passes_generated_output(cohort_dir):
    result = runner.invoke(app, ["validate", str(cohort_dir / "fhir")])
    assert result.exit_code == 0, result.output
    assert "every reference resolves" in result.output


def test_validate_fails_on_a_corrupt_file(tmp_path, cohort_dir):
    shutil.copytree(cohort_dir / "fhir", tmp_path / "fhir")
    bundle = next((tmp_path / "fhir" / "bundles").glob("*.json"))
    bundle.write_bytes(bundle.read_bytes()[:-40])
    result = runner.invoke(app, ["validate", str(tmp_path / "fhir")])
    assert result.exit_code == 1
    assert bundle.name in result.output


def test_validate_a_missing_folder_is_a_user_error(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "absent")])
    assert result.exit_code == 2
    assert "no such folder" in result.output


@pytest.mark.skipif(not (REPO / ".venv" / ".installed").exists(), reason="`make run` needs the project's .venv (run `make test` once)")
def test_make_run_generates_and_validates_the_default_cohort(tmp_path):
    result = subprocess.run(["make", "run", f"OUT={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "120"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every reference resolves" in result.stdout
    assert len(list((tmp_path / "fhir" / "bundles").glob("*.json"))) == 100


def test_in_a_log_generate_prints_progress_lines_on_stderr(tmp_path):
    result = runner.invoke(app, ["-v", "generate", "-n", "3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Simulating")]
    assert lines and lines[-1].startswith("Simulating default: 3/3 (100%)")


def test_quiet_prints_nothing_on_success(tmp_path):
    result = runner.invoke(app, ["-q", "generate", "-n", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0 and result.output == ""
    assert len(list((tmp_path / "fhir" / "bundles").glob("*.json"))) == 2


def test_version_names_the_release():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("trajsim ")


def test_the_command_line_starts_without_the_other_commands_libraries():
    """`trajsim generate` does not wait for torch or the evaluation, ingest, push and stream
    libraries to load; `trajsim train` loads torch when it runs."""
    probe = ("import sys, trajsim.cli; print(sorted({'torch', 'trajsim.evaluate', 'trajsim.ingest', 'fhir_export.push', "
             "'trajsim.stream'} & set(sys.modules)))")
    started = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "[]"
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "--max-steps" in result.output


def test_brackets_in_names_and_paths_are_shown_as_text(tmp_path):
    scenario = tmp_path / "odd.toml"
    scenario.write_text('name = "ward [/] 7"\n')
    refused = runner.invoke(app, ["generate", "--scenario", str(scenario), "--out", str(tmp_path / "out")])
    assert refused.exit_code == 2 and "(got 'ward [/] 7')" in refused.output
    out = tmp_path / "out [/]"
    result = runner.invoke(app, ["generate", "-n", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list((out / "fhir" / "bundles").glob("*.json"))) == 2
    missing = runner.invoke(app, ["validate", str(tmp_path / "no [red]such")])
    assert missing.exit_code == 2 and "no [red]such: no such folder" in missing.output


def test_synthea_style_options_choose_size_seed_ages_and_gender(tmp_path):
    import polars as pl

    result = runner.invoke(app, ["generate", "-p", "12", "-s", "7", "-a", "30-40", "-g", "F", "--model", "reference",
                                 "-f", "events", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    events = pl.read_parquet(tmp_path / "events" / "*.parquet")
    assert events["subject_id"].n_unique() == 12
    assert set(events.filter(pl.col("code").str.starts_with("TRAJSIM/sex/"))["code"]) == {"TRAJSIM/sex/F"}
    births = events.filter(pl.col("code") == "TRAJSIM/birth")["time"].dt.year()
    assert 2024 - 40 - 1 <= births.min() and births.max() <= 2025 - 30  # aged 30-40 at the period's end (2025)


@pytest.mark.parametrize("option, value, expected", [
    ("-a", "40-30", "--age: expected MIN-MAX"), ("-a", "old", "--age: expected MIN-MAX"),
    ("-g", "X", "--gender: expected F or M"),
])
def test_a_bad_synthea_style_option_names_itself(tmp_path, option, value, expected):
    result = runner.invoke(app, ["generate", option, value, "--out", str(tmp_path)])
    assert result.exit_code == 2 and expected in result.output
