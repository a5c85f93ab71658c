"""Where the benchmarks read the shared reference data: `TRAJSIM_REFDATA`, else the nearest
`shared/refdata` above this checkout (../shared/refdata, or above a worktree of it)."""

from __future__ import annotations

import os
from pathlib import Path

_ABOVE = Path(__file__).resolve().parents[1].parents
REFDATA = Path(os.environ.get("TRAJSIM_REFDATA") or next(
    (p / "shared" / "refdata" for p in _ABOVE if (p / "shared" / "refdata").is_dir()), _ABOVE[0] / "shared" / "refdata"))
SYNTHEA_BUNDLES = REFDATA / "synthea_fhir_r4_smart615" / "bundles"
