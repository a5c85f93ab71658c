"""Children's growth percentiles, as a pediatric chart reports them beside the measurement, from the
CDC 2000 growth charts' LMS parameters (`data/growth_lms.csv`): BMI-for-age (2-20 years),
weight-for-length (under 2 years) and head circumference-for-age (under 3 years).

A chart's L (skew), M (median) and S (coefficient of variation) at an age or length turn a
measurement X into its z-score, z = ((X / M)^L - 1) / (L S), and a z-score back into a measurement,
X = M (1 + L S z)^(1 / L) (Cole TJ, Green PJ, Stat Med 1992;11:1305-19; CDC's LMS method for the
2000 charts). Parameters between the tabulated rows are interpolated linearly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

from trajsim.knowledge.hazards import interpolate
from trajsim.knowledge.tables import DATA, read_table

BMI_FOR_AGE, WEIGHT_FOR_LENGTH, HEAD_FOR_AGE = "bmi_for_age", "weight_for_length", "head_circumference_for_age"
MONTHS_PER_YEAR = 12.0


@dataclass(frozen=True)
class LmsChart:
    """One chart for one sex: L, M and S at each tabulated age in months or length in cm (`x`)."""

    x: np.ndarray
    lms: np.ndarray  # rows of (L, M, S)

    def _at(self, x: float) -> tuple[float, float, float]:
        xs, columns = self._columns
        x = min(max(x, xs[0]), xs[-1])  # the chart's ends hold beyond them
        return tuple(interpolate(x, xs, column) for column in columns)

    @cached_property
    def _columns(self) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...]]:
        """`x` and the L, M and S columns as plain floats, for `interpolate`."""
        return tuple(self.x.tolist()), tuple(tuple(column) for column in self.lms.T.tolist())

    def z_score(self, x: float, value: float) -> float:
        """The z-score of `value` at age or length `x`."""
        lam, median, cv = self._at(x)
        return math.log(value / median) / cv if abs(lam) < 1e-9 else ((value / median) ** lam - 1) / (lam * cv)

    def value(self, x: float, z: float) -> float:
        """The measurement at age or length `x` that lies `z` standard deviations from the median."""
        lam, median, cv = self._at(x)
        return median * math.exp(cv * z) if abs(lam) < 1e-9 else median * (1 + lam * cv * z) ** (1 / lam)

    def percentile(self, x: float, value: float) -> float:
        """The percentile (0-100) of `value` at age or length `x`."""
        return 50.0 * (1.0 + math.erf(self.z_score(x, value) / math.sqrt(2.0)))


@cache
def growth_chart(chart: str, sex: str) -> LmsChart:
    """The CDC 2000 chart `chart` (BMI_FOR_AGE, WEIGHT_FOR_LENGTH, HEAD_FOR_AGE) for sex "F" or "M"."""
    rows = [r for r in read_table(DATA.joinpath("growth_lms.csv"), ("chart", "sex", "x", "L", "M", "S"))
            if r["chart"] == chart and r["sex"] == sex]
    if not rows:
        raise KeyError(f"growth_lms.csv has no chart {chart!r} for sex {sex!r}")
    rows.sort(key=lambda r: float(r["x"]))
    return LmsChart(np.array([float(r["x"]) for r in rows]),
                    np.array([[float(r["L"]), float(r["M"]), float(r["S"])] for r in rows]))
