"""Clinical validity rules, used two ways:

- `find_violations` lists every violation in an event table, simulated or ingested from real records;
- `RuleMask` tells a sampler which codes a patient may receive next, so a learned model cannot
  propose what the checker would reject.

Each rule family is one module with a `RULES` dict (name -> what it catches) and a `check(facts,
knowledge)` returning lazy frames of violations; `FAMILIES` lists them, and `RULES` here is their union.
"""

from __future__ import annotations

import polars as pl

from trajsim.knowledge import Knowledge, load_knowledge
from trajsim.rules import acute, encounters, episodes, immunization, prescribing, preventive, record, values
from trajsim.rules.base import VIOLATION_SCHEMA
from trajsim.rules.mask import MASK_RULES, RuleMask

FAMILIES = (record, episodes, immunization, prescribing, values, acute, encounters, preventive)
RULES: dict[str, str] = {name: text for family in FAMILIES for name, text in family.RULES.items()}

__all__ = ["FAMILIES", "MASK_RULES", "RULES", "RuleMask", "VIOLATION_SCHEMA", "find_violations", "violation_counts"]


def find_violations(events: pl.DataFrame, knowledge: Knowledge | None = None) -> pl.DataFrame:
    """Every rule violation in a canonical event table: one row per offending fact, with columns
    `rule, subject_id, time, code, detail`, sorted; empty when the table is clinically valid."""
    knowledge = knowledge or load_knowledge()
    facts = events.lazy().select("subject_id", "time", "encounter_id", "code", "numeric_value", "unit", "text")
    checks = [check for family in FAMILIES for check in family.check(facts, knowledge)]
    found = pl.concat([check.select(list(VIOLATION_SCHEMA)).cast(VIOLATION_SCHEMA) for check in checks])
    return found.sort("rule", "subject_id", "time", "code", "detail").collect()


def violation_counts(violations: pl.DataFrame) -> dict[str, int]:
    """Violations per rule, in the order of `RULES`, leaving out rules with none."""
    counts = dict(violations.group_by("rule").len().iter_rows())
    return {rule: counts[rule] for rule in RULES if rule in counts}
