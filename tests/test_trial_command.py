"""`trajsim trial` end to end: a synthetic arm beside the same arm built from the Synthea reference
data, bounded failure for impossible criteria, and scenario mistakes named by field."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fhir_export.validate import validate_directory
from tests.browser import CHROMIUM, NO_BROWSER, drawn_widths
from trajsim.cli import app
from trajsim.scenario import ScenarioError, load_scenario
from trajsim.trial.synthetic import conditioned, synthetic_arm

REPO = Path(__file__).resolve().parents[1]

# A hypertension arm: both the engine and the Synthea reference data record hypertension and
# systolic pressure, so the two arms can be compared.
HYPERTENSION_SCENARIO = """
name = "hypertension_arm"
seed = 11
[population]
age_mix = [{ min = 40, max = 85, weight = 1.0 }]
[period]
start = 2014-01-01
end = 2024-02-01
[output]
formats = ["ndjson"]
[trial]
target_size = 12
batch_size = 40
max_patients = 400
age = { min = 40, max = 80 }
baseline = ["hypertension"]
follow_up_days = 730
code_sets = { hypertension = ["SNOMED/59621000"], death = ["TRAJSIM/death"] }
index = { codes = ["TRAJSIM/visit/AMB"], window = { start = 2016-01-01, end = 2023-01-01 } }
require = [{ codes = ["hypertension"] }]
endpoints = [
  { name = "death", codes = ["death"] },
  { name = "sbp", label = "Systolic pressure", kind = "lab_change", codes = ["LOINC/8480-6"], at_days = 365, window_days = 120 },
]
power = { endpoint = "death", hazard_ratio = 0.7 }
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def _run(*args: str | Path):
    return CliRunner().invoke(app, ["trial", *map(str, args)])


def test_report_sets_the_synthetic_arm_beside_the_reference_arm(tmp_path, refdata):
    out = tmp_path / "out"
    result = _run("--scenario", _write(tmp_path, HYPERTENSION_SCENARIO), "--out", out,
                  "--real", refdata / "synthea_csv_dbt27" / "csv", "--real-format", "synthea-csv")
    assert result.exit_code == 0, result.output
    synthetic, real = pl.read_parquet(out / "arm.parquet"), pl.read_parquet(out / "real_arm.parquet")
    assert synthetic.height == 12 and real.height > 0
    assert synthetic["history_hypertension"].all() and real["history_hypertension"].all()
    table_one = pl.read_csv(out / "table1.csv")
    assert table_one.columns == ["characteristic", "synthetic", "real", "SMD"]
    assert table_one.row(0) == ("Patients, n", "12", str(real.height), None)
    assert table_one.filter(pl.col("characteristic").str.starts_with("Age"))["SMD"].is_not_null().all()
    km = pl.read_csv(out / "km.csv")
    assert set(km["arm"]) == {"synthetic", "real"}
    assert (km.group_by("arm").agg(pl.col("survival").diff().max())["survival"] <= 0).all()  # never rises
    assert (km["lower"] <= km["survival"]).all() and (km["survival"] <= km["upper"]).all()
    html = (out / "report.html").read_text()
    assert "Baseline characteristics" in html and "<th>real</th>" in html and "Kaplan-Meier" in html
    assert html.count("data:image/png;base64,") == 2  # KM curves and lab change, embedded
    assert "Eligibility and attrition" in html and "Number at risk" in html
    assert "only 12 patients" in html  # a 12-patient arm is flagged as too small to read
    assert json.loads((out / "power.json").read_text())["synthetic"]["endpoint"] == "death"
    patients = (out / "fhir" / "ndjson" / "Patient.ndjson").read_text().splitlines()
    assert len(patients) == 12
    fhir = validate_directory(out / "fhir")
    assert fhir.failure_count == 0 and fhir.resources["Patient"] == 12
    manifest = json.loads((out / "manifest.json").read_text())  # written as generate writes one
    assert manifest["patients"] == 12 and manifest["violations"] == {}


def test_attrition_counts_every_step_down_to_the_arm(tmp_path):
    scenario = load_scenario(_write(tmp_path, HYPERTENSION_SCENARIO))
    arm = synthetic_arm(scenario)
    flow = list(arm.attrition.items())
    assert flow[0] == ("patients with a record", arm.screened)
    counts = [n for _, n in flow]
    assert counts == sorted(counts, reverse=True)  # each step keeps a subset of the one before
    assert flow[-1][1] == arm.table.height == 12
    assert any(step.startswith("with hypertension") for step, _ in flow)
    assert any(step.startswith("aged 40 to under 80") for step, _ in flow)


def test_same_seed_same_arm_in_one_process_or_two(tmp_path):
    scenario = load_scenario(_write(tmp_path, HYPERTENSION_SCENARIO))
    first, second = synthetic_arm(scenario), synthetic_arm(scenario, workers=2)
    assert first.table.equals(second.table) and first.events.equals(second.events)


def test_ray_builds_the_same_arm(tmp_path):
    pytest.importorskip("ray", reason="the ray backend needs `pip install trajsim[ray]`")
    scenario = load_scenario(_write(tmp_path, HYPERTENSION_SCENARIO))
    here, on_ray = synthetic_arm(scenario), synthetic_arm(scenario, backend="ray", workers=2)
    assert here.table.equals(on_ray.table) and here.events.equals(on_ray.events)


def test_an_unknown_backend_is_refused_before_simulating(tmp_path):
    result = _run("--scenario", _write(tmp_path, HYPERTENSION_SCENARIO), "--backend", "slurm", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "unknown backend 'slurm'; choose one of: local, ray" in result.output and "Traceback" not in result.output


def test_scenario_is_narrowed_to_patients_who_can_be_eligible():
    scenario = load_scenario(REPO / "scenarios" / "t2d_control_arm.toml")
    narrowed = conditioned(scenario.model_copy(update={"period": scenario.period.model_copy(
        update={"start": date(2019, 1, 1)})}))
    # Aged 40-75 at an index date in 2018-2021 means 43-82 on 2025-01-01 (age_mix is age at period end).
    ages = [(g.min, g.max) for g in narrowed.population.age_mix]
    assert ages == [(43, 45), (45, 65), (65, 83)]
    assert narrowed.period.start == date(2017, 7, 3)  # the 182-day metformin look-back before 2018-01-01
    assert narrowed.population.size == narrowed.trial.max_patients


def test_impossible_criteria_end_with_a_clear_message_and_exit_code_2(tmp_path):
    impossible = HYPERTENSION_SCENARIO.replace('codes = ["TRAJSIM/visit/AMB"]',
                                               'codes = ["LOINC/8480-6"], min_value = 400').replace(
        "target_size = 12", "target_size = 1000").replace("max_patients = 400", "max_patients = 20000")
    result = _run("--scenario", _write(tmp_path, impossible), "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "only 0 of 80 simulated patients (0%) met the trial criteria" in result.output
    assert "trial.max_patients = 20000, so generation stopped" in result.output
    assert "Traceback" not in result.output


def test_ages_no_scenario_patient_can_reach_end_before_simulating(tmp_path):
    result = _run("--scenario", _write(tmp_path, HYPERTENSION_SCENARIO.replace("age = { min = 40, max = 80 }",
                                                                               "age = { min = 95, max = 99 }")))
    assert result.exit_code == 2
    assert "no group of population.age_mix reaches ages 95-99" in result.output


@pytest.mark.parametrize(("change", "message"), [
    (("min_value = 400", "min_value = \"high\""), "trial.index.min_value: Input should be a valid number"),
    (('codes = ["hypertension"]', 'codes = ["hypertensoin"]'),
     "trial: require[0].codes: 'hypertensoin' is neither a SYSTEM/CODE code nor a name in code_sets (hypertension, death); shipped sets are written @name"),
    (('kind = "lab_change"', 'kind = "lab"'), "trial.endpoints[1].kind"),
    (('hazard_ratio = 0.7', 'hazard_ratio = 1.0'), "trial.power.hazard_ratio: must differ from 1"),
    (("follow_up_days = 730", "follow_up_dayz = 730"), "trial.follow_up_dayz: unknown field"),
    (("target_size = 12", 'target_size = "12"'), "trial.target_size: Input should be a valid integer (got '12')"),
])
def test_bad_trial_section_names_the_field(tmp_path, change, message):
    text = HYPERTENSION_SCENARIO.replace('codes = ["TRAJSIM/visit/AMB"]', 'codes = ["LOINC/8480-6"], min_value = 400')
    path = _write(tmp_path, text.replace(*change))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert f"{path}: {message}" in str(caught.value)
    assert _run("--scenario", path).exit_code == 2


def test_scenario_without_trial_section_is_refused(tmp_path):
    result = _run("--scenario", REPO / "scenarios" / "default.toml")
    assert result.exit_code == 2 and "has no trial section" in result.output


def test_shipped_control_arm_scenario_loads():
    trial = load_scenario(REPO / "scenarios" / "t2d_control_arm.toml").trial
    assert trial is not None and trial.target_size == 1000
    mace = trial.resolve(("mace",))
    assert {"SNOMED/22298006", "SNOMED/230690007", "ICD10CM/I21.9", "ICD10CM/I63.9", "TRAJSIM/death"} <= set(mace)


@pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)
def test_the_report_renders_in_a_browser(tmp_path):
    out = tmp_path / "out"
    assert _run("--scenario", _write(tmp_path, HYPERTENSION_SCENARIO), "--out", out).exit_code == 0
    widths = drawn_widths(out / "report.html", tmp_path)
    assert len(widths) == 2 and all(width > 300 for width in widths), widths  # KM curves and lab change


def test_adjusting_against_the_real_arm_writes_balance_and_hazard_ratios(tmp_path, refdata):
    out = tmp_path / "out"
    result = _run("--scenario", _write(tmp_path, HYPERTENSION_SCENARIO), "--out", out, "--adjust", "match",
                  "--real", refdata / "synthea_csv_dbt27" / "csv", "--real-format", "synthea-csv")
    assert result.exit_code == 0, result.output
    balance = pl.read_csv(out / "balance.csv")
    assert balance.columns == ["characteristic", "SMD before", "SMD after"]
    assert balance["characteristic"].to_list()[:2] == ["Age at index, years, mean (SD)", "Female, n (%)"]
    scores = pl.read_csv(out / "propensity.csv")
    assert scores.height == 12 + pl.read_parquet(out / "real_arm.parquet").height
    assert ((scores["propensity"] > 0) & (scores["propensity"] < 1)).all()
    ratios = pl.read_csv(out / "hazard_ratios.csv")
    assert ratios["sample"].to_list() == ["as built", "matched"]
    assert "Propensity-score matching" in (out / "report.html").read_text()
    assert "hazard ratio real vs synthetic, death, matched" in " ".join(result.output.split())


def test_an_unknown_adjustment_on_the_command_line_lists_the_allowed_values(tmp_path):
    result = _run("--scenario", _write(tmp_path, HYPERTENSION_SCENARIO), "--adjust", "mach")
    assert result.exit_code == 2
    assert "trial.adjustment: Input should be 'none', 'match' or 'weight'" in " ".join(result.output.split())
