"""Comparability: before any metric, can the two tables be compared at all?

Every rate below is computed over the codes and the years each table holds. When the tables share
few codes, or their records cover different calendar years or spans (a lifetime history against a
ten-year window), a low R² says more about that mismatch than about the generator, so the report
says so first."""

from __future__ import annotations

import polars as pl

from trajsim.evaluate.section import Headline, Section, rounded
from trajsim.evaluate.trajectories import Views, years_between

FEW_SHARED = 0.5  # warn when the tables share less than half of either's codes
SPAN_RATIO = 2.0  # warn when median record spans differ by more than this factor
YEAR_OVERLAP = 0.5  # warn when the calendar years shared are less than half of the real table's


def record_window(views: Views) -> dict[str, float | int | None]:
    """The calendar years a table's visits cover and the median length of a patient's record."""
    starts = views.visits["start"]
    first_visits = views.visits.group_by("subject_id").agg(first=pl.col("start").min())
    spans = (views.patients.join(first_visits, on="subject_id")
             .select(years=years_between("first", "record_end"))["years"].drop_nulls())
    return {"first_year": starts.min().year if starts.len() else None,
            "last_year": starts.max().year if starts.len() else None,
            "median_record_years": rounded(spans.median(), 2) if spans.len() else None}


def comparability(real: Views, synthetic: Views) -> Section:
    """How much vocabulary and time the tables share, with a warning for each mismatch."""
    real_codes, synthetic_codes = set(real.facts["code"].unique()), set(synthetic.facts["code"].unique())
    shared = real_codes & synthetic_codes
    windows = {"real": record_window(real), "synthetic": record_window(synthetic)}
    metrics = {"codes": {"real": len(real_codes), "synthetic": len(synthetic_codes), "shared": len(shared)},
               "record_windows": windows}
    section = Section("comparability", __doc__, metrics, [
        Headline("Real codes the synthetic table also has", rounded(len(shared) / max(len(real_codes), 1)),
                 "1 = same vocabulary"),
    ])
    if len(shared) < FEW_SHARED * min(len(real_codes), len(synthetic_codes)) or not shared:
        section.notes.append(
            f"The tables share only {len(shared):,} codes ({len(real_codes):,} real, {len(synthetic_codes):,} "
            "synthetic): codes one table lacks count as rate 0 in it, so the fidelity R² mostly compares "
            "different vocabularies. Train on (or ingest) records coded the same way.")
    section.notes += _window_warnings(windows["real"], windows["synthetic"])
    return section


def _window_warnings(real: dict, synthetic: dict) -> list[str]:
    warnings = []
    if None not in (real["first_year"], synthetic["first_year"]):
        overlap = min(real["last_year"], synthetic["last_year"]) - max(real["first_year"], synthetic["first_year"]) + 1
        if overlap < YEAR_OVERLAP * (real["last_year"] - real["first_year"] + 1):
            warnings.append(f"The records cover different years: real visits {real['first_year']}-{real['last_year']}, "
                            f"synthetic {synthetic['first_year']}-{synthetic['last_year']}; codes tied to a calendar "
                            "period (vaccines, COVID-19, new drugs) will differ for that reason alone.")
    spans = real["median_record_years"], synthetic["median_record_years"]
    if None not in spans and max(spans) > SPAN_RATIO * max(min(spans), 1 / 12):
        warnings.append(f"Records differ in length: a median of {spans[0]} years per real patient against "
                        f"{spans[1]} per synthetic one, so per-patient rates (prevalence, visits) are not like for "
                        "like; generate records over the same span (e.g. the scenario's period).")
    return warnings
