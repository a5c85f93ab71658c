"""The output folder is the only place trajsim writes: links out of it are refused, leftovers of a
killed run are cleaned or resumed, a manifest means a complete run, and pool workers die with the
command that started them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import small_scenario
from tests.test_generate import file_hashes
from trajsim.cli import app
from trajsim.generate import generate
from trajsim.output import CohortOutput, OutputError

runner = CliRunner(env={"COLUMNS": "250"})


def scenario(size: int = 6):
    return small_scenario(size, seed=4)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("whole")
    generate(scenario(), out)
    return file_hashes(out)


@pytest.mark.parametrize("link", ["fhir/bundles", ".shards", "events"])
def test_a_symlink_inside_out_is_refused_and_its_target_untouched(tmp_path, link):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "patient-0000001.json").write_text("not yours")
    out = tmp_path / "out"
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    (out / link).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputError, match=f"{link}: is a symbolic link"):
        generate(scenario(), out)
    assert [p.name for p in elsewhere.iterdir()] == ["patient-0000001.json"]
    assert (elsewhere / "patient-0000001.json").read_text() == "not yours"


@pytest.mark.parametrize("below", ["", "out"])
def test_an_out_that_is_or_lies_under_a_file_is_one_line_exit_2(tmp_path, below):
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / below
    result = runner.invoke(app, ["generate", "-n", "2", "--out", str(out)])
    assert result.exit_code == 2
    assert "is a file" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("arguments, expected", [
    (["--shard-size", "0"], "positive multiple of 256"),
    (["--workers", "0"], "workers must be at least 1"),
    (["--backend", "foo"], "unknown backend 'foo'"),
])
def test_bad_run_settings_are_refused_before_anything_is_written(tmp_path, arguments, expected):
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", "-n", "2", "--out", str(out), *arguments])
    assert result.exit_code == 2 and expected in result.output
    assert not out.exists() or not any(out.rglob("*"))


def test_a_partial_file_left_by_a_kill_is_cleaned_on_resume(tmp_path, uninterrupted, monkeypatch):
    def killed_while_merging(self):
        (self.out_dir / "fhir" / "ndjson").mkdir(parents=True, exist_ok=True)
        (self.out_dir / "fhir" / "ndjson" / ".Condition.ndjson.4242.tmp").write_text("half a line")
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(CohortOutput, "_merge_ndjson", killed_while_merging)
        with pytest.raises(KeyboardInterrupt):
            generate(scenario(), tmp_path)
    generate(scenario(), tmp_path)
    assert file_hashes(tmp_path) == uninterrupted


def test_a_run_killed_before_its_manifest_does_not_look_complete(tmp_path, uninterrupted, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setattr(CohortOutput, "_write_manifest", lambda self, summary: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            generate(scenario(), tmp_path)
    assert not (tmp_path / "manifest.json").exists()
    generate(scenario(), tmp_path)
    assert file_hashes(tmp_path) == uninterrupted


def test_a_manifest_is_written_only_once_nothing_is_left_to_do(tmp_path, monkeypatch):
    write_manifest = CohortOutput._write_manifest

    def killed_right_after(self, summary):
        write_manifest(self, summary)
        raise KeyboardInterrupt

    monkeypatch.setattr(CohortOutput, "_write_manifest", killed_right_after)
    with pytest.raises(KeyboardInterrupt):
        generate(scenario(), tmp_path)
    assert (tmp_path / "manifest.json").exists()
    assert not (tmp_path / ".shards").exists()  # no bookkeeping of an unfinished run beside a manifest


def _children(pid: int) -> list[int]:
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            children.append(int(status.parent.name))
    return children


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to find worker processes")
def test_pool_workers_die_with_a_killed_parent(tmp_path):
    command = [sys.executable, "-m", "trajsim.cli", "generate", "-n", "2048", "--workers", "2", "--shard-size", "256",
               "--out", str(tmp_path / "out")]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        shards = tmp_path / "out" / ".shards"
        # kill once the workers simulate (a shard folder exists), not while they still import
        while (len(workers) < 2 or not any(shards.glob("shard-*"))) and parent.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = [pid for pid in _children(parent.pid) if b"spawn" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) >= 2 and any(shards.glob("shard-*")), "the pool never started"
        parent.send_signal(signal.SIGKILL)  # the parent alone, as a crash or the OOM killer would
        parent.wait()
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
                 and "Z" not in Path(f"/proc/{pid}/status").read_text().split("State:")[1][:4]]
        assert not alive, f"workers {alive} outlived their parent"
    finally:
        os.killpg(parent.pid, signal.SIGKILL) if parent.poll() is None else None
