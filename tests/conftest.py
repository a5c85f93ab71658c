"""Shared fixtures: a small generated cohort (built once per session) and the reference data."""

from __future__ import annotations

from pathlib import Path

import pytest

from trajsim.generate import generate
from trajsim.scenario import Scenario, with_overrides

REPO = Path(__file__).resolve().parents[1]
REFDATA = REPO.parent / "shared" / "refdata"


@pytest.fixture(scope="session")
def refdata() -> Path:
    if not REFDATA.is_dir():
        pytest.skip(f"reference data not found at {REFDATA} (it lives in ../shared/refdata beside the repo)")
    return REFDATA


def small_scenario(size: int = 40, seed: int = 7, **changes: object) -> Scenario:
    return with_overrides(Scenario(), "test", **{"population.size": size, "seed": seed, **changes})


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-patient default-scenario cohort in every format."""
    out = tmp_path_factory.mktemp("cohort")
    generate(small_scenario(), out)
    return out
