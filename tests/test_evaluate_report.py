"""Specifications of `trajsim evaluate` as a user meets it: the command, its files and the page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from tests.browser import CHROMIUM, NO_BROWSER, drawn_widths
from tests.conftest import small_scenario
from trajsim.cli import app
from trajsim.engine import ReferenceSource, simulate
from trajsim.events import events_frame

runner = CliRunner()


def write_cohort(path: Path, size: int, seed: int) -> Path:
    records = simulate(small_scenario(size, seed), ReferenceSource())
    path.parent.mkdir(parents=True, exist_ok=True)
    events_frame(event for record in records for event in record.events).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tables")
    return {name: write_cohort(folder / name / "part-00000.parquet", 150, seed)
            for name, seed in (("real", 1), ("synthetic", 2), ("train", 3))}


@pytest.fixture(scope="module")
def report(tables: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = runner.invoke(app, ["evaluate", "--real", str(tables["real"]), "--synthetic", str(tables["synthetic"].parent),
                                 "--train", str(tables["train"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_cli_writes_every_metric_family_to_metrics_json(report: Path) -> None:
    metrics = json.loads((report / "metrics.json").read_text())
    assert list(metrics) == ["inputs", "headlines", "comparability", "fidelity", "privacy", "utility", "validity"]
    assert metrics["inputs"]["real"]["patients"] == metrics["inputs"]["synthetic"]["patients"] == 150
    assert 0.9 < metrics["fidelity"]["code_prevalence_r2"] <= 1
    assert 0 <= metrics["privacy"]["membership_inference_auc"] <= 1
    assert set(metrics["utility"]["tasks"]) == {"diabetes_next_year", "death_next_year"}
    assert set(metrics["validity"]["by_rule"]["after_death"]) >= {"real", "synthetic", "description"}


def test_report_leads_with_headline_numbers_and_embeds_its_plots(report: Path) -> None:
    html = (report / "report.html").read_text()
    assert html.index("Headline numbers") < html.index('<section id="fidelity">')
    assert "Code prevalence R" in html and "Membership-inference AUC" in html
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) >= 8
    assert not re.search(r'(src|href)="(https?:|file:|/)', html), "the page must not load anything from outside"


def test_same_inputs_give_byte_identical_outputs(tables: dict[str, Path], report: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--real", str(tables["real"]), "--synthetic", str(tables["synthetic"].parent),
                                 "--train", str(tables["train"]), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("metrics.json", "report.html"):
        assert (tmp_path / name).read_bytes() == (report / name).read_bytes()


@pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)
def test_report_plots_render_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    widths = drawn_widths(report / "report.html", tmp_path)
    assert len(widths) == len(re.findall(r"<img ", (report / "report.html").read_text())) >= 8
    assert all(width > 300 for width in widths), widths


def test_missing_input_is_one_sentence_and_exit_2(tables: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.parquet"
    result = runner.invoke(app, ["evaluate", "--real", str(tables["real"]), "--synthetic", str(missing),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "nowhere.parquet" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_wrong_schema_is_one_sentence_and_exit_2(tables: dict[str, Path], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.parquet"
    pl.DataFrame({"patient": [1, 2], "when": ["2020-01-01", "2020-02-01"]}).write_parquet(wrong)
    result = runner.invoke(app, ["evaluate", "--real", str(wrong), "--synthetic", str(tables["synthetic"]),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "wrong.parquet" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 3


def test_output_folder_that_is_a_file_is_one_sentence_and_exit_2(tables: dict[str, Path], tmp_path: Path) -> None:
    taken = tmp_path / "report.txt"
    taken.write_text("not a folder")
    result = runner.invoke(app, ["evaluate", "--real", str(tables["real"]), "--synthetic", str(tables["synthetic"]),
                                 "--out", str(taken)])
    assert result.exit_code == 2
    assert "report.txt" in result.output and "Traceback" not in result.output
