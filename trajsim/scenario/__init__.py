"""Scenarios: the TOML files a user writes to ask for a cohort (`trajsim generate`), a control arm
built from one (`trajsim trial`) or a live hospital (`trajsim stream`). Each section's models live in
their own module (`cohort`, `trial`, `stream`) on one strict base (`base`); a cohort scenario file is
composed here, so the cohort sections need not know the features that extend them.
"""

from pathlib import Path
from typing import Literal

from pydantic import StrictStr, model_validator

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
    model: SourceName = "reference"  # the more coherent source by benchmarks/bench_clinical.py (scenarios/default.toml)
    # Whose care fills the charts: "engine" adds the engine's own (well visits, emergencies and acute
    # events at published rates, renewals) beside what the source proposes; "source" keeps to the
    # source's proposals, but for the schedules a source leaves to the engine (`TrajectorySource.defers`:
    # the shipped model's well visits and vaccines). Both are vetted by every rule, and both get a terminal encounter before the
    # engine's day of death. Unset: "engine" for the rule-based reference simulator, "source" for any
    # model, the shipped one included: it learned the reference's charts with the engine's care in
    # them, so the engine adding its own again would double emergencies, admissions and renewals.
    care: Literal["engine", "source"] | None = None

    @property
    def engine_adds_care(self) -> bool:
        """Whether the engine adds its own care beside the source's (see `care`)."""
        return (self.care or ("engine" if self.model == "reference" else "source")) == "engine"

    @model_validator(mode="after")
    def _population_source(self) -> "Scenario":
        if self.population.drawn_from == "model" and not has_population_summary(self.model):
            raise ValueError(f'population.drawn_from = "model" needs a model folder trained with a population '
                             f"summary (population.json); model {self.model!r} has none: use \"age_mix\"")
        return self


def has_population_summary(model: str) -> bool:
    """Whether the trajectory source `model` names was trained with a population summary."""
    from trajsim.model import model_folder
    from trajsim.model.population import POPULATION

    folder = model_folder(model)
    return folder is not None and (folder / POPULATION).is_file()


def load_scenario(path: Path) -> Scenario:
    """Read and validate a cohort scenario TOML file, or raise ScenarioError saying what to fix."""
    return load_toml(path, Scenario)


__all__ = [
    "DIURNAL_ARRIVALS", "US_2020_AGE_MIX", "WEEKDAY_ARRIVALS", "AgeGroup", "AgeRange", "Arrivals", "Capacity",
    "CodeList", "Criterion", "Endpoint", "IndexEvent", "Output", "OutputFormat", "Period", "Population",
    "PowerTarget", "Presentation", "Scenario", "ScenarioError", "StreamScenario", "Surge", "Trial", "Window",
    "has_population_summary", "load_scenario", "load_stream_scenario", "presentations", "with_overrides",
]
