"""Sharded generation: the same scenario and seed give the same bytes whatever the backend, worker
count or shard size, and an interrupted run resumes without duplicates or gaps."""

import os
import signal
import subprocess
import sys
import time
from datetime import date

import pytest
from typer.testing import CliRunner

from tests.conftest import small_scenario
from tests.test_generate import file_hashes
from trajsim.cli import app
from trajsim.engine import ReferenceSource
from trajsim.generate import generate
from trajsim.runner import plan_shards
from trajsim.scenario import load_scenario, with_overrides

PATIENTS = 300  # two shards of 256 (the second partly filled)


def scenario():
    return small_scenario(PATIENTS, seed=5, **{"period.start": date(2022, 1, 1), "model": "reference"})  # CountingSource is a ReferenceSource


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    generate(scenario(), out, shard_size=PATIENTS + 256 - PATIENTS % 256)  # a single shard
    return file_hashes(out)


def test_shards_cover_every_patient_once():
    shards = plan_shards(1000, 256)
    assert [(s.first, s.count) for s in shards] == [(0, 256), (256, 256), (512, 256), (768, 232)]


def test_a_shard_size_off_the_chunk_grid_is_refused():
    with pytest.raises(ValueError, match="multiple of 256"):
        plan_shards(1000, 300)


def test_smaller_shards_give_the_same_bytes(tmp_path, one_process):
    generate(scenario(), tmp_path, shard_size=256)
    assert file_hashes(tmp_path) == one_process


def test_a_process_pool_gives_the_same_bytes(tmp_path, one_process):
    generate(scenario(), tmp_path, workers=2, shard_size=256)
    assert file_hashes(tmp_path) == one_process


def test_ray_gives_the_same_bytes(tmp_path, one_process):
    pytest.importorskip("ray", reason="the ray backend needs `pip install trajsim[ray]`")
    generate(scenario(), tmp_path, backend="ray", workers=2, shard_size=256)
    assert file_hashes(tmp_path) == one_process


class CountingSource(ReferenceSource):
    """Counts admitted patients and can fail once a given number have been admitted."""

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.admitted, self.fail_after = 0, fail_after

    def admit(self, patient):
        self.admitted += 1
        if self.fail_after is not None and self.admitted > self.fail_after:
            raise RuntimeError("worker lost")
        return super().admit(patient)


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, one_process):
    with pytest.raises(RuntimeError, match="worker lost"):
        generate(scenario(), tmp_path, source=CountingSource(fail_after=280), shard_size=256)
    resumed = CountingSource()
    summary = generate(scenario(), tmp_path, source=resumed, shard_size=256)
    assert resumed.admitted == PATIENTS - 256  # the first shard had finished and was kept
    assert summary.patients == PATIENTS
    assert file_hashes(tmp_path) == one_process


def test_a_different_scenario_does_not_resume_an_old_run(tmp_path):
    with pytest.raises(RuntimeError):
        generate(scenario(), tmp_path, source=CountingSource(fail_after=280), shard_size=256)
    fresh = CountingSource()
    generate(small_scenario(20, seed=6), tmp_path, source=fresh, shard_size=256)
    assert fresh.admitted == 20
    assert len(list((tmp_path / "fhir" / "bundles").glob("*.json"))) == 20


def test_the_cli_rejects_a_bad_shard_size(tmp_path):
    result = CliRunner().invoke(app, ["generate", "-n", "5", "--shard-size", "100", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "multiple of 256" in result.output and "Traceback" not in result.output


def test_a_killed_run_completes_when_run_again(tmp_path):
    """SIGKILL the whole `trajsim generate` process group once its first shard is done; the same
    command again finishes the rest, and the result equals an uninterrupted run."""
    scenario_file = tmp_path / "three-shards.toml"
    scenario_file.write_text('model = "reference"\nseed = 5\n[population]\nsize = 600\n[period]\nstart = 2022-01-01\n')
    command = [sys.executable, "-m", "trajsim.cli", "generate", "--scenario", str(scenario_file), "--shard-size", "256",
               "--out", str(tmp_path / "killed")]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first_done = tmp_path / "killed" / ".shards" / "shard-00000" / "summary.json"
    deadline = time.monotonic() + 120
    while not first_done.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert not (tmp_path / "killed" / "manifest.json").exists()  # killed part-way, not finished
    assert subprocess.run(command, capture_output=True).returncode == 0
    as_run = with_overrides(load_scenario(scenario_file), "test", **{"output.dir": tmp_path / "killed"})  # as in the manifest
    generate(as_run, tmp_path / "whole", shard_size=256)
    assert file_hashes(tmp_path / "killed") == file_hashes(tmp_path / "whole")
