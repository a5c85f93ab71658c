"""Who pays for a person's care over a life, as data: Medicare from 65 (with Medicaid too for the
poor) or from end-stage renal disease at any age, Medicaid/CHIP for most poor children and many poor
adults, private plans through an employer or bought directly, or none, drawn from the cited shares
by age and household income (`data/income.csv`, `data/insurance.csv`, `data/entitlements.csv`).

A person keeps one plan per life stage (childhood under 19, working age, 65 and over), each drawn
with a household income of its own; the draws are made for every stage in a fixed order, so the plan
of one stage does not depend on the calendar window a record happens to cover.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import date
from functools import cache

from trajsim.knowledge.tables import DATA, TableError, read_table

PLANS = ("medicare", "medicaid", "dual", "employer", "direct", "uninsured")
ANY_INCOME = "any"  # a stage whose plan shares do not depend on income
# A plan made of several programs, in the order they pay: a dual-eligible person's Medicare pays
# first and Medicaid the rest (CMS, Medicare-Medicaid coordination: Medicaid is the payer of last resort).
PROGRAMS = {"dual": ("medicare", "medicaid")}


@dataclass(frozen=True)
class Stage:
    """A life stage [age_min, age_max) with its income bands and, per band, the plans' shares."""

    age_min: int
    age_max: int
    incomes: tuple[tuple[str, float], ...]  # (band, share); empty when plans do not depend on income
    plans: dict[str, tuple[tuple[str, float], ...]]  # band (or "any") -> ((plan, share), ...)


@dataclass(frozen=True)
class CoverageSpan:
    """One plan over [start, end): `end` None means for the rest of life. `income` is the household
    income band (percent of the federal poverty level) the plan was drawn for, or "any"."""

    plan: str
    start: date
    end: date | None
    income: str


def _shares(rows: list[dict[str, str]], key: str, where: str) -> tuple[tuple[str, float], ...]:
    shares = tuple((row[key], float(row["share"])) for row in rows)
    if not math.isclose(sum(share for _, share in shares), 1.0, abs_tol=1e-6):
        raise TableError(f"{where}: shares sum to {sum(s for _, s in shares):.4f}, not 1")
    return shares


@cache
def insurance_stages() -> tuple[Stage, ...]:
    """The life stages of `insurance.csv` in age order, with the income bands of `income.csv`."""
    income_rows = read_table(DATA.joinpath("income.csv"), ("age_min", "age_max", "band", "share", "source"))
    plan_rows = read_table(DATA.joinpath("insurance.csv"), ("age_min", "age_max", "band", "plan", "share", "source"))
    unknown = sorted({row["plan"] for row in plan_rows} - set(PLANS))
    if unknown:
        raise TableError(f"insurance.csv: unknown plan(s) {', '.join(unknown)}; allowed: {', '.join(PLANS)}")
    stages = []
    for age_min, age_max in sorted({(int(r["age_min"]), int(r["age_max"])) for r in plan_rows}):
        in_stage = [r for r in plan_rows if (int(r["age_min"]), int(r["age_max"])) == (age_min, age_max)]
        bands = list(dict.fromkeys(r["band"] for r in in_stage))
        plans = {band: _shares([r for r in in_stage if r["band"] == band], "plan", f"insurance.csv ages {age_min}-{age_max} {band}")
                 for band in bands}
        income = [r for r in income_rows if (int(r["age_min"]), int(r["age_max"])) == (age_min, age_max)]
        incomes = _shares(income, "band", f"income.csv ages {age_min}-{age_max}") if bands != [ANY_INCOME] else ()
        missing = sorted({band for band, _ in incomes} - set(bands))
        if missing:
            raise TableError(f"insurance.csv ages {age_min}-{age_max}: no plan shares for income band(s) {', '.join(missing)}")
        stages.append(Stage(age_min, age_max, incomes, plans))
    return tuple(stages)


@cache
def entitling_conditions() -> dict[str, str]:
    """Condition code -> the plan it entitles a person to at any age (end-stage renal disease -> Medicare)."""
    return {row["code"]: row["plan"] for row in read_table(DATA.joinpath("entitlements.csv"), ("code", "plan", "source"))}


def birthday(birth: date, years: int) -> date:
    """The day a person born on `birth` turns `years` (1 March for a 29 February birth in other years)."""
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:
        return date(birth.year + years, 3, 1)


def _draw(rng: random.Random, shares: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([name for name, _ in shares], [share for _, share in shares])[0]


def coverage_history(rng: random.Random, birth: date, entitled: tuple[date, str] | None = None) -> list[CoverageSpan]:
    """The plans covering a person born on `birth`, from birth on, in time order and without gaps.
    `entitled` (the diagnosis date and plan of an entitling condition) switches to that plan from then
    on."""
    spans = []
    stages = insurance_stages()
    for index, stage in enumerate(stages):
        income = _draw(rng, stage.incomes) if stage.incomes else ANY_INCOME
        plan = _draw(rng, stage.plans[income])
        end = birthday(birth, stages[index + 1].age_min) if index + 1 < len(stages) else None
        spans.append(CoverageSpan(plan, birthday(birth, stage.age_min), end, income))
    if entitled is not None:
        spans = _entitle(spans, *entitled)
    return spans


def programs(plan: str) -> tuple[str, ...]:
    """The programs that pay under `plan`, first payer first (one, except for dual eligibility)."""
    return PROGRAMS.get(plan, (plan,))


def _entitle(spans: list[CoverageSpan], start: date, plan: str) -> list[CoverageSpan]:
    """The spans with `plan` from `start` on, where they do not include it already (Medicare for
    end-stage renal disease lasts for life here; its end 36 months after a kidney transplant is left out)."""
    out: list[CoverageSpan] = []
    for span in spans:
        if span.end is not None and span.end <= start or plan in programs(span.plan):
            out.append(span)
        elif span.start < start:
            out += [replace(span, end=start), replace(span, plan=plan, start=start)]
        else:
            out.append(replace(span, plan=plan))
    merged: list[CoverageSpan] = []
    for span in out:
        if merged and merged[-1].plan == span.plan == plan:
            merged[-1] = replace(merged[-1], end=span.end)
        else:
            merged.append(span)
    return merged


def span_at(spans: list[CoverageSpan], day: date) -> CoverageSpan:
    """The span in effect on `day` (the first one for a day before birth)."""
    for span in spans:
        if span.end is None or day < span.end:
            return span
    return spans[-1]

