"""The cohort sections of a scenario: who to simulate (`population`), over which calendar window
(`period`), what to write (`output`) and which trajectory source proposes the visits (`model`).

Nothing here knows the features built on a cohort; `trajsim.scenario` composes these sections with
the optional `[trial]` table into the `Scenario` a file describes.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictFloat, StrictInt, StrictStr, model_validator

from fhir_export.claims import Insurance
from trajsim.scenario.base import StrictModel

OutputFormat = Literal["bundle", "collection", "ndjson", "events"]


class AgeGroup(StrictModel):
    """Share of the cohort whose age (on the period's end date) lies in [min, max)."""

    min: StrictInt = Field(ge=0, le=120)
    max: StrictInt = Field(gt=0, le=121)
    weight: StrictFloat = Field(gt=0)

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


class Population(StrictModel):
    """Who the cohort is. `drawn_from = "model"` draws each patient's sex, age and record span from
    the population summary saved with a trained model (`model`), instead of `female_fraction`,
    `age_mix` and `[period]`, so the cohort looks like the model's source."""

    size: StrictInt = Field(100, ge=1, le=100_000_000)
    female_fraction: StrictFloat = Field(0.505, ge=0.0, le=1.0)  # 2020 Census: 50.5% female
    age_mix: tuple[AgeGroup, ...] = Field(US_2020_AGE_MIX, min_length=1)
    drawn_from: Literal["age_mix", "model"] = "age_mix"
    state: StrictStr | None = None  # two-letter code: patients live in that state's cities
    city: StrictStr | None = None  # a city of at least 15,000 people (in `state`, when given)

    @model_validator(mode="after")
    def _known_home(self) -> Population:
        from fhir_export.demographics import unknown_home  # the exporter's place table is the one truth

        if problem := unknown_home(self.state, self.city):
            raise ValueError(problem)
        return self


class Period(StrictModel):
    """Simulated calendar window. `start = "birth"` gives lifetime records from each birth."""

    start: date | Literal["birth"] = date(2015, 1, 1)
    end: date = date(2025, 1, 1)

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.start != "birth" and self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        return self


class Output(StrictModel):
    """Where and what to write. `insurance`: "claims" adds each patient's Coverage and payers and a
    Claim and ExplanationOfBenefit per encounter, "coverage" only the Coverage and payers, "none" neither."""

    dir: Path = Path("out")
    formats: tuple[OutputFormat, ...] = Field(("bundle", "ndjson", "events"), min_length=1)
    insurance: Insurance = "claims"


def _known_source(value: str) -> str:
    if value in ("default", "reference") or (Path(value) / "model.pt").is_file():
        return value
    raise ValueError('must be "default" (the shipped model in models/default), "reference" (the rule-based '
                     "simulator) or the path of a model folder written by `trajsim train`")


# The `model` field: which trajectory source proposes the visits.
SourceName = Annotated[StrictStr, AfterValidator(_known_source)]
