"""Shared fixtures: a small generated cohort (built once per session), the reference data and a
FHIR server on loopback (started once per session, for every test that talks to a server)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fhir_server import sekmet_server
from trajsim.engine import PatientState, TrajectorySource, Visit
from trajsim.generate import generate
from trajsim.scenario import Scenario, with_overrides

REPO = Path(__file__).resolve().parents[1]
# TRAJSIM_REFDATA, else the nearest shared/refdata above the checkout (../shared/refdata, or above a worktree)
REFDATA = Path(os.environ.get("TRAJSIM_REFDATA") or next(
    (p / "shared" / "refdata" for p in REPO.parents if (p / "shared" / "refdata").is_dir()), REPO.parent / "shared" / "refdata"))


@pytest.fixture(scope="session")
def refdata() -> Path:
    if not REFDATA.is_dir():
        pytest.skip(f"reference data not found at {REFDATA} (it lives in ../shared/refdata beside the repo)")
    return REFDATA


def small_scenario(size: int = 40, seed: int = 7, **changes: object) -> Scenario:
    """A small default-scenario cohort, simulated by the rule-based reference source unless a test
    asks for a model (`model="default"`): most tests are about the engine and the writers."""
    return with_overrides(Scenario(), "test", **{"population.size": size, "seed": seed, "model": "reference", **changes})


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-patient default-scenario cohort in every format."""
    out = tmp_path_factory.mktemp("cohort")
    generate(small_scenario(), out)
    return out


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The FHIR base URL of a SEKMET server on loopback, shared by the session's tests."""
    with sekmet_server(tmp_path_factory.mktemp("sekmet")) as base_url:
        yield base_url


class ScriptedSource(TrajectorySource):
    """A source that proposes, as its n-th visit of a patient (from 1), what `script(patient, n)`
    returns (None: nothing more): the charts a test needs a source to write."""

    def __init__(self, script: Callable[[PatientState, int], Visit | None]) -> None:
        self.script = script
        self.proposed: dict[int, int] = {}

    def next_visits(self, patients):
        visits = []
        for p in patients:
            n = self.proposed[p.subject_id] = self.proposed.get(p.subject_id, 0) + 1
            visits.append(self.script(p, n))
        return visits
