"""Random choices a patient makes many times, drawn without numpy's per-call cost.

`Generator.choice` with probabilities costs several microseconds of argument checking for lists of
a handful of options, asked at every visit and every acute-care decision. `pick` reads the same one
uniform draw from the generator and maps it through the same cumulative sums, so a patient's
record is the same as with `choice`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

import numpy as np


def pick(rng: np.random.Generator, probabilities: Iterable[float]) -> int:
    """The index `rng.choice(len(p), p=p)` draws for these probabilities (summing to 1), from the
    same draw: numpy accumulates the probabilities in order, rescales by their sum and bisects."""
    total, cumulative = 0.0, []
    for probability in probabilities:
        total += probability
        cumulative.append(total)
    return bisect_right([c / total for c in cumulative], rng.random())
