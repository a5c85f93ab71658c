"""Counter-based uniform draws for the sampler: a row's draw at a step is a hash of (row seed, step).

A patient's sampled record must not depend on which other patients share its batch, so every row
needs its own random stream; one numpy generator a row costs a Python call per row per step. Hashing
the row's seed with the step number (the splitmix64 finaliser, vectorised over rows) gives the same
independence in a few array operations, whatever the batch.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment: 2^64 over the golden ratio
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SCALE = 2.0 ** -53


def row_seeds(rngs: list[np.random.Generator]) -> np.ndarray:
    """One 64-bit seed a row, drawn from each row's own generator (uint64 array)."""
    return np.array([rng.integers(2 ** 64, dtype=np.uint64) for rng in rngs], dtype=np.uint64)


def uniforms(seeds: np.ndarray, step: int) -> np.ndarray:
    """Each row's uniform draw in the open interval (0, 1) at this step (float64, one per seed)."""
    z = seeds + np.uint64((step + 1) * _GOLDEN % 2 ** 64)  # the step's offset, wrapped as uint64 arithmetic does
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z ^= z >> np.uint64(31)
    # 53 bits, centred in their interval: never exactly 0, so a draw never lands on a zero-weight token
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * _SCALE
