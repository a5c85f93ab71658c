"""Tobacco smoking status over a life, from cited survey prevalence (`data/smoking.csv`).

A survey gives, by age, the share of people who have ever smoked (current / (1 - quit ratio)) and
the share of those who have quit (the quit ratio); both rise with age. Each patient carries two
fixed draws: they have smoked by an age once the first is below the ever-smoked share there, and
have quit once the second is below the quit ratio. As both shares only rise, a patient's status only
moves forward (never -> smoker -> ex-smoker) while the cohort matches the survey at every age.
Shares are read at the middle of each band and interpolated between; the sex gap is the survey's
ratio of each sex's ever-smoked share to all adults', applied at every age (so it cannot undo a status).
Current smoking raises the rate of first myocardial infarctions and strokes (`data/smoking_risks.csv`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources


from trajsim.knowledge.hazards import interpolate
from trajsim.knowledge.tables import read_table

NEVER, FORMER, CURRENT = "SNOMED/266919005", "SNOMED/8517006", "SNOMED/77176002"
RECORDED_FROM_AGE = 13.0  # US Core asks for a smoking status from age 13


@dataclass(frozen=True)
class SmokingCurve:
    """Ever-smoked share and quit ratio at band midpoints (`ages`), and each sex's factor on the first."""

    ages: tuple[float, ...]
    ever: tuple[float, ...]
    quit: tuple[float, ...]
    sex_factor: dict[str, float]

    def current_share(self, sex: str, age: float) -> float:
        """The share of people of this sex and age who smoke now."""
        ever = min(1.0, interpolate(age, self.ages, self.ever) * self.sex_factor[sex])
        return ever * (1.0 - interpolate(age, self.ages, self.quit))

    def status(self, sex: str, age: float, draws: tuple[float, float]) -> str:
        """The SNOMED CT code of the status at `age` of a patient with these two fixed draws."""
        ever = min(1.0, interpolate(age, self.ages, self.ever) * self.sex_factor[sex])
        if draws[0] >= ever:
            return NEVER
        return FORMER if draws[1] < interpolate(age, self.ages, self.quit) else CURRENT


def _ever(row: dict[str, str]) -> float:
    return float(row["current_pct"]) / 100 / (1 - float(row["quit_ratio_pct"]) / 100)


@cache
def smoking_curve() -> SmokingCurve:
    rows = read_table(resources.files(__package__).joinpath("data/smoking.csv"),
                      ("group", "age_min", "age_max", "current_pct", "quit_ratio_pct"))
    bands = sorted((r for r in rows if r["group"] == "age"), key=lambda r: float(r["age_min"]))
    middle = [(float(r["age_min"]) + min(float(r["age_max"]), 85.0)) / 2 for r in bands]
    everyone = _ever(next(r for r in rows if r["group"] == "all"))
    sexes = {r["group"].removeprefix("sex "): _ever(r) / everyone for r in rows if r["group"].startswith("sex ")}
    return SmokingCurve(tuple(middle), tuple(_ever(r) for r in bands),
                        tuple(float(r["quit_ratio_pct"]) / 100 for r in bands), sexes)


@cache
def smoking_risks() -> dict[str, float]:
    """Event (a sudden-onset condition key) -> the relative risk of a current smoker (`data/smoking_risks.csv`)."""
    rows = read_table(resources.files(__package__).joinpath("data/smoking_risks.csv"), ("event", "relative_risk"))
    return {r["event"]: float(r["relative_risk"]) for r in rows}
