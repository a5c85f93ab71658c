"""Children's blood pressure by age, sex and height percentile (AAP 2017, `data/child_blood_pressure.csv`),
read by the body (a child's readings centre on the table's median at the child's own height
percentile) and by the values rules (a reading at stage 2 hypertension without the diagnosis).

A child's reading is judged against the row of the age in completed years, 1 to 17, as the tables
are read in clinic; AAP 2017 defines stage 2 hypertension as at least the 95th percentile + 12 mm Hg,
and from age 13 at least 140/90 mm Hg if that is lower.
"""

from __future__ import annotations

from functools import cache

from trajsim.knowledge.hazards import interpolate
from trajsim.knowledge.physiology import DIASTOLIC, SYSTOLIC
from trajsim.knowledge.tables import DATA, read_table

MEASURES = {SYSTOLIC: "systolic", DIASTOLIC: "diastolic"}  # the LOINC code of each measure of the tables
HEIGHT_PERCENTILES = (5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0)
AGE_MIN, AGE_MAX = 1.0, 18.0  # the tables' ages: 1 to 17 completed years
STAGE2_ABOVE_95TH = 12.0  # mm Hg
ADOLESCENT_AGE, ADOLESCENT_STAGE2 = 13.0, {"systolic": 140.0, "diastolic": 90.0}
_Z_95 = 1.6449  # the normal quantile of the 95th percentile


@cache
def _levels() -> dict[tuple[str, str, int, int], tuple[float, ...]]:
    """(sex, measure, age, BP percentile) -> the levels at the table's height percentiles."""
    columns = [f"h{int(p)}" for p in HEIGHT_PERCENTILES]
    rows = read_table(DATA.joinpath("child_blood_pressure.csv"), ("sex", "age", "measure", "percentile", *columns))
    return {(r["sex"], r["measure"], int(r["age"]), int(r["percentile"])): tuple(float(r[c]) for c in columns)
            for r in rows}


def covers(age: float) -> bool:
    """Whether the tables give a child's BP at `age` (years)."""
    return AGE_MIN <= age < AGE_MAX


def level(sex: str, measure: str, age: float, height_percentile: float, percentile: int) -> float:
    """The `percentile` (50 or 95) BP level in mm Hg of a child of `sex` ("F"/"M") and `age`, at
    `height_percentile` (interpolated between the table's columns, clipped to 5-95)."""
    row = _levels()[sex, measure, int(min(max(age, AGE_MIN), AGE_MAX - 1)), percentile]
    return interpolate(height_percentile, HEIGHT_PERCENTILES, row)


def distribution(sex: str, measure: str, age: float, height_percentile: float) -> tuple[float, float]:
    """Mean and SD of a child's BP: the table's median, and the SD that puts its 95th percentile
    where the table does."""
    median = level(sex, measure, age, height_percentile, 50)
    return median, (level(sex, measure, age, height_percentile, 95) - median) / _Z_95


def stage2_threshold(sex: str, measure: str, age: float, height_percentile: float) -> float:
    """The lowest reading that is stage 2 hypertension for this child."""
    threshold = level(sex, measure, age, height_percentile, 95) + STAGE2_ABOVE_95TH
    return min(threshold, ADOLESCENT_STAGE2[measure]) if age >= ADOLESCENT_AGE else threshold
