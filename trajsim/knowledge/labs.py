"""What a laboratory does with an order, as data: the panels it reports together
(`data/lab_panels.csv`), the tests it adds when a result is abnormal (`data/lab_reflexes.csv`), the
test-strip findings of a urinalysis (`data/urine_findings.csv`), the reference intervals by sex and
age it prints beside a value (`data/reference_intervals.csv`) and the panels a well visit orders
by age (`data/lab_screenings.csv`). The engine orders and measures with these, the exporter groups
results into reports and flags them with the same, so a chart's panels are what was ordered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from trajsim.knowledge.hazards import AgeSegments, band_segments
from trajsim.knowledge.tables import DATA, Screening, read_table

LAB_GRACE_DAYS = 14.0  # a lab due within two weeks is drawn at the visit rather than waiting for the next

NEGATIVE, POSITIVE = "SNOMED/260385009", "SNOMED/10828004"  # a test strip's qualitative answers


@cache
def lab_panels() -> dict[str, tuple[str, ...]]:
    """Panel code -> the codes of the results the laboratory reports for it."""
    found: dict[str, list[str]] = {}
    for row in read_table(DATA.joinpath("lab_panels.csv"), ("panel", "member")):
        found.setdefault(row["panel"], []).append(row["member"])
    return {panel: tuple(members) for panel, members in found.items()}


@cache
def panel_results() -> frozenset[str]:
    """Every code a laboratory reports as a result of some panel."""
    return frozenset(member for members in lab_panels().values() for member in members)


@cache
def _panels_of() -> dict[str, tuple[str, ...]]:
    """Result code -> the panels that report it, smallest first."""
    found: dict[str, list[str]] = {}
    for panel, members in sorted(lab_panels().items(), key=lambda item: (len(item[1]), item[0])):
        for member in members:
            found.setdefault(member, []).append(panel)
    return {code: tuple(panels) for code, panels in found.items()}


@cache
def reflexes() -> dict[str, str]:
    """Test code -> the test the laboratory adds on the same specimen when its result is abnormal."""
    return {r["test"]: r["reflex"] for r in read_table(DATA.joinpath("lab_reflexes.csv"), ("test", "reflex"))}


@cache
def _tests_of_reflexes() -> dict[str, str]:
    return {reflex: test for test, reflex in reflexes().items()}


def order_of(code: str, present: set[str] | frozenset[str]) -> str:
    """The order a result belongs to among the results `present` in one visit: the test a reflex
    was added to; else of the panels that report it, the one sharing most results with the visit
    (a creatinine beside an ALT is a comprehensive panel's, alone a basic one's; the smaller on a
    tie); else the test itself."""
    tests = _tests_of_reflexes()
    if code in tests:
        return tests[code]
    panels = _panels_of().get(code)
    if not panels:
        return code
    members = lab_panels()
    return max(panels, key=lambda panel: (len(present.intersection(members[panel])), -len(members[panel])))


def visit_orders(codes: Sequence[str], panels: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The order each of a visit's `codes` belongs to: a panel of `panels` (named, or one of its
    results by `order_of`), else the code itself."""
    present = set(codes) | {member for code in codes if code in panels for member in panels[code]}
    results = panel_results()
    return [code if code in panels or code not in results else order_of(code, present) for code in codes]


@cache
def screening_markers() -> dict[str, str]:
    """Result code -> the laboratory screening (`lab_screenings.csv`) whose order it shows: each
    result only that screening's panel reports (a total cholesterol, a lipid panel), and a
    screening that is a single test (HbA1c) itself."""
    panels, reported_by = lab_panels(), _panels_of()
    found: dict[str, str] = {}
    for code in dict.fromkeys(s.code for s in lab_screenings()):
        found.update({m: code for m in panels[code] if reported_by[m] == (code,)} if code in panels else {code: code})
    return found


@dataclass(frozen=True)
class UrineFinding:
    """When a test strip reads positive: with `chance` while `condition` is active (None: without
    any of the listed conditions), or when the visit's `marker` measurement is at or above `limit`."""

    code: str
    condition: str | None
    chance: float | None
    marker: str | None
    limit: float | None


@cache
def urine_findings() -> dict[str, tuple[UrineFinding, ...]]:
    """Test-strip result code -> its findings, a condition's before the baseline; a code without
    any reads negative."""
    found: dict[str, list[UrineFinding]] = {}
    columns = ("code", "condition", "chance", "marker", "marker_limit")
    for r in read_table(DATA.joinpath("urine_findings.csv"), columns):
        found.setdefault(r["code"], []).append(UrineFinding(
            r["code"], r["condition"] or None, float(r["chance"]) if r["chance"] else None, r["marker"] or None,
            float(r["marker_limit"]) if r["marker_limit"] else None))
    return {code: tuple(sorted(rows, key=lambda f: f.condition is None)) for code, rows in found.items()}


@dataclass(frozen=True)
class ReferenceInterval:
    """The interval a laboratory prints beside a value for one sex (None: both) and age band."""

    code: str
    sex: str | None
    age_min: float
    age_max: float
    low: float | None
    high: float | None


@cache
def reference_intervals() -> dict[str, tuple[ReferenceInterval, ...]]:
    """Code -> its reference intervals by sex and age band (`data/reference_intervals.csv`)."""
    found: dict[str, list[ReferenceInterval]] = {}
    columns = ("code", "sex", "age_min", "age_max", "low", "high")
    for r in read_table(DATA.joinpath("reference_intervals.csv"), columns):
        found.setdefault(r["code"], []).append(ReferenceInterval(
            r["code"], r["sex"] or None, float(r["age_min"]), float(r["age_max"]),
            float(r["low"]) if r["low"] else None, float(r["high"]) if r["high"] else None))
    return {code: tuple(rows) for code, rows in found.items()}


def reference_interval(code: str, sex: str, age: float) -> ReferenceInterval | None:
    """The reference interval of `code` for this sex and age (a sex's own before one for both),
    or None where the table has none."""
    segments = _interval_segments(code, sex)
    return segments.at(age) if segments is not None else None


@cache
def _interval_segments(code: str, sex: str) -> AgeSegments[ReferenceInterval | None] | None:
    """`reference_interval` of one code and sex at every age, worked out once per stretch between
    band edges (it is asked for every lab result exported); None for a code without intervals."""
    rows = [r for r in reference_intervals().get(code, ()) if r.sex in (sex, None)]
    if not rows:
        return None
    return band_segments(((r.age_min, r.age_max, r) for r in rows),
                         lambda matches: min(matches, key=lambda r: r.sex is None) if matches else None)


def abnormal(code: str, value: float, sex: str, age: float) -> bool:
    """Whether `value` lies outside the reference interval of `code` for this sex and age."""
    interval = reference_interval(code, sex, age)
    return interval is not None and (interval.low is not None and value < interval.low
                                     or interval.high is not None and value > interval.high)


@cache
def lab_screenings() -> tuple[Screening, ...]:
    """The laboratory screenings of well visits (`data/lab_screenings.csv`), in table order."""
    columns = ("code", "sex", "age_min", "age_max", "interval_years", "uptake", "condition")
    return tuple(Screening(r["code"], r["sex"] or None, float(r["age_min"]), float(r["age_max"]),
                              float(r["interval_years"]), float(r["uptake"]), r["condition"] or None)
                 for r in read_table(DATA.joinpath("lab_screenings.csv"), columns))
