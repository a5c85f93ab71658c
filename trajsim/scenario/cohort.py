"""A scenario is the user's whole request: who to simulate, over which period, and what to write.

Scenarios are TOML files validated by the pydantic models below. Any mistake becomes one
`ScenarioError` that names the file, the field and what is allowed, so the CLI can print a sentence
instead of a traceback.
"""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trajsim.scenario.trial import Trial

OutputFormat = Literal["bundle", "collection", "ndjson", "events"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgeGroup(_Strict):
    """Share of the cohort whose age (on the period's end date) lies in [min, max)."""

    min: int = Field(ge=0, le=120)
    max: int = Field(gt=0, le=121)
    weight: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> AgeGroup:
        if self.max <= self.min:
            raise ValueError(f"max ({self.max}) must be greater than min ({self.min})")
        return self


# US resident population by age, 2020 Census (DP1): under 18 22.1%, 65 and over 16.8%; the split of
# 18-64 and of 65+ follows the Census Bureau's 2020 single-year-of-age estimates.
US_2020_AGE_MIX = (
    AgeGroup(min=0, max=18, weight=0.221),
    AgeGroup(min=18, max=45, weight=0.357),
    AgeGroup(min=45, max=65, weight=0.254),
    AgeGroup(min=65, max=85, weight=0.146),
    AgeGroup(min=85, max=100, weight=0.022),
)


class Population(_Strict):
    size: int = Field(100, ge=1, le=100_000_000)
    female_fraction: float = Field(0.505, ge=0.0, le=1.0)  # 2020 Census: 50.5% female
    age_mix: tuple[AgeGroup, ...] = Field(US_2020_AGE_MIX, min_length=1)


class Period(_Strict):
    """Simulated calendar window. `start = "birth"` gives lifetime records from each birth."""

    start: date | Literal["birth"] = date(2015, 1, 1)
    end: date = date(2025, 1, 1)

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.start != "birth" and self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        return self


class Output(_Strict):
    dir: Path = Path("out")
    formats: tuple[OutputFormat, ...] = Field(("bundle", "ndjson", "events"), min_length=1)


class Scenario(_Strict):
    """The defaults describe the default scenario (scenarios/default.toml spells them out)."""

    name: str = Field("default", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    description: str = "US-like general population (2020 Census age and sex mix), records from 2015 to 2025"
    seed: int = Field(20261125, ge=0, lt=2**63)
    population: Population = Population()
    period: Period = Period()
    output: Output = Output()
    trial: Trial | None = None  # a control arm to build with `trajsim trial` (trajsim/scenario/trial.py)
    model: str = "default"  # trajectory source: see _known_model

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value in ("default", "reference") or (Path(value) / "model.pt").is_file():
            return value
        raise ValueError('must be "default" (the shipped model in models/default), "reference" (the rule-based '
                         "simulator) or the path of a model folder written by `trajsim train`")


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message is meant for the user as is."""


def _model_of(annotation: object) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _field_path(location: tuple[str | int, ...], root: type[BaseModel]) -> tuple[str | int, ...]:
    """The location without pydantic's union-member tags (e.g. `date`, `literal['birth']`)."""
    path: list[str | int] = []
    model: type[BaseModel] | None = root
    for part in location:
        if isinstance(part, int):
            path.append(part)
        elif model is not None and part in model.model_fields:
            path.append(part)
            model = _model_of(model.model_fields[part].annotation)
    return tuple(path)


def _field_name(path: tuple[str | int, ...]) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}[{part}]" if parts else f"[{part}]"
        else:
            parts.append(part)
    return ".".join(parts) or "(top level)"


def _allowed_fields(path: tuple[str | int, ...], root: type[BaseModel]) -> str:
    model: type[BaseModel] | None = root
    for part in path:
        if isinstance(part, str) and model is not None:
            model = _model_of(model.model_fields[part].annotation)
    return ", ".join(model.model_fields) if model is not None else ""


def describe_validation_error(error: ValidationError, source: str, root: type[BaseModel] | None = None) -> str:
    """One line per field at fault: `file: field: what is wrong (got value)`; the alternatives of a
    field that accepts several types are joined with "or". `root` is the model validated (default:
    Scenario), for other TOML files that share this error style."""
    root = root or Scenario
    problems = error.errors()
    by_field: dict[str, list[str]] = {}
    for problem in problems:
        location = problem["loc"]
        if problem["type"] == "too_short" and any(
            other["loc"][: len(location)] == location and len(other["loc"]) > len(location) for other in problems
        ):
            continue  # a list emptied only because its items failed; those items are reported
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = f"unknown field; allowed here: {_allowed_fields(_field_path(location[:-1], root), root)}"
            field = _field_name(_field_path(location[:-1], root) + (location[-1],))
        else:
            field = _field_name(_field_path(location, root))
            if problem["type"] == "missing":
                message = "required field is missing"
        by_field.setdefault(field, []).append(message)
        if problem["type"] not in ("missing", "extra_forbidden") and not isinstance(problem["input"], dict):
            by_field[field].append(f"(got {problem['input']!r})")
    lines = []
    for field, parts in by_field.items():
        got = next((p for p in parts if p.startswith("(got ")), "")
        messages = " or ".join(dict.fromkeys(p for p in parts if not p.startswith("(got ")))
        lines.append(f"{source}: {field}: {messages}{' ' + got if got else ''}")
    return "\n".join(lines)


def with_overrides(scenario: Scenario, source: str, **changes: object) -> Scenario:
    """The scenario with command-line overrides (dotted field names), validated like the file."""
    data = scenario.model_dump()
    for dotted, value in changes.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        target = data
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(describe_validation_error(exc, source)) from None


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario TOML file, or raise ScenarioError saying what to fix."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario file: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(describe_validation_error(exc, str(path))) from None
