"""Scenarios: the TOML files a user writes to ask for a cohort (`trajsim generate`), a control arm
built from one (`trajsim trial`) or a live hospital (`trajsim stream`). Each section's models live in
their own module (`cohort`, `trial`, `stream`) on one strict base (`base`); a cohort scenario file is
composed here, so the cohort sections need not know the features that extend them.
"""

from pathlib import Path

from pydantic import StrictStr

from trajsim.scenario.base import ScenarioError, ScenarioName, Seed, StrictModel, load_toml, with_overrides
from trajsim.scenario.cohort import US_2020_AGE_MIX, AgeGroup, Output, OutputFormat, Period, Population, SourceName
from trajsim.scenario.stream import (
    DIURNAL_ARRIVALS, WEEKDAY_ARRIVALS, Arrivals, Capacity, Presentation, StreamScenario, Surge,
    load_stream_scenario, presentations,
)
from trajsim.scenario.trial import AgeRange, CodeList, Criterion, Endpoint, IndexEvent, PowerTarget, Trial, Window


class Scenario(StrictModel):
    """A cohort scenario file. The defaults describe the default scenario (scenarios/default.toml
    spells them out)."""

    name: ScenarioName = "default"
    description: StrictStr = "US-like general population (2020 Census age and sex mix), records from 2015 to 2025"
    seed: Seed = 20261125
    population: Population = Population()
    period: Period = Period()
    output: Output = Output()
    trial: Trial | None = None  # a control arm to build with `trajsim trial`
    model: SourceName = "default"


def load_scenario(path: Path) -> Scenario:
    """Read and validate a cohort scenario TOML file, or raise ScenarioError saying what to fix."""
    return load_toml(path, Scenario)


__all__ = [
    "DIURNAL_ARRIVALS", "US_2020_AGE_MIX", "WEEKDAY_ARRIVALS", "AgeGroup", "AgeRange", "Arrivals", "Capacity",
    "CodeList", "Criterion", "Endpoint", "IndexEvent", "Output", "OutputFormat", "Period", "Population",
    "PowerTarget", "Presentation", "Scenario", "ScenarioError", "StreamScenario", "Surge", "Trial", "Window",
    "load_scenario", "load_stream_scenario", "presentations", "with_overrides",
]
