"""Scenarios: the TOML files a user writes to ask for a cohort (`cohort`), a control arm (`trial`) or
a live hospital (`stream`), validated by pydantic models whose mistakes name the file and the field."""

from trajsim.scenario.cohort import (
    US_2020_AGE_MIX,
    AgeGroup,
    Output,
    OutputFormat,
    Period,
    Population,
    Scenario,
    ScenarioError,
    describe_validation_error,
    load_scenario,
    with_overrides,
)
from trajsim.scenario.stream import (
    DIURNAL_ARRIVALS,
    WEEKDAY_ARRIVALS,
    Arrivals,
    Capacity,
    Presentation,
    StreamScenario,
    Surge,
    load_stream_scenario,
    presentations,
    stream_scenario_with,
)
from trajsim.scenario.trial import (
    AgeRange,
    CodeList,
    Criterion,
    Endpoint,
    IndexEvent,
    PowerTarget,
    Trial,
    Window,
)

__all__ = [
    "DIURNAL_ARRIVALS", "US_2020_AGE_MIX", "WEEKDAY_ARRIVALS", "AgeGroup", "AgeRange", "Arrivals", "Capacity",
    "CodeList", "Criterion", "Endpoint", "IndexEvent", "Output", "OutputFormat", "Period", "Population",
    "PowerTarget", "Presentation", "Scenario", "ScenarioError", "StreamScenario", "Surge", "Trial", "Window",
    "describe_validation_error", "load_scenario", "load_stream_scenario", "presentations", "stream_scenario_with",
    "with_overrides",
]
