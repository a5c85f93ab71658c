"""A wheel install is a working trajsim: built from this tree and installed into a fresh venv, it
generates the default scenario with the shipped model, away from the repository."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "trajsim", "fhir_export", "models")


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=environment | {"OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the build inputs, so no stale `build/` folder of the tree leaks in."""
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("trajsim-*.whl")
    return wheel


def _venv_with_wheel(tmp_path: Path, wheel: Path) -> Path:
    """A fresh venv holding only the wheel; a .pth file lends it this environment's dependencies
    (its .pth files, among them the editable install of trajsim, are not run from there)."""
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel)
    site_packages = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    (site_packages / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def test_wheel_install_generates_the_default_scenario_with_the_shipped_model(tmp_path):
    venv = _venv_with_wheel(tmp_path, _build_wheel(tmp_path))
    workdir = tmp_path / "elsewhere"  # not the repository, whose trajsim/ would shadow the wheel's
    workdir.mkdir()
    installed = _run(venv / "bin" / "python", "-c", "import trajsim; from trajsim.model import DEFAULT_MODEL; "
                     "print(trajsim.__file__); print(DEFAULT_MODEL)", cwd=workdir)
    for path in installed.split():
        assert Path(path).is_relative_to(venv), installed
    _run(venv / "bin" / "trajsim", "generate", "-n", "5", "--model", "default", "--out", workdir / "out", cwd=workdir)
    assert len(list((workdir / "out" / "fhir" / "bundles").glob("patient-*.json"))) == 5
