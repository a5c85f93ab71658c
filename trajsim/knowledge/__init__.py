"""Clinical knowledge as data: what medicine is, separate from how the engine simulates it.

Each table in `data/` is a small CSV with a `source` column citing where its figures come from.
`tables` reads them into typed, read-only objects and checks every code against the vocabulary, so
adding a condition is a data edit plus a test, not new branches in code; `hazards` holds the maths
that turns the population figures into one person's hazards and values.
"""

from trajsim.knowledge.hazards import OPEN_BAND_END, Epidemiology
from trajsim.knowledge.tables import (
    AgeBand, Allergy, Condition, Dose, Knowledge, Measurement, Medication, Monitoring, Restriction, Screening,
    TableError, ValueDistribution, load_knowledge, read_table,
)

__all__ = [
    "OPEN_BAND_END", "AgeBand", "Allergy", "Condition", "Dose", "Epidemiology", "Knowledge", "Measurement",
    "Medication", "Monitoring", "Restriction", "Screening", "TableError", "ValueDistribution", "load_knowledge",
    "read_table",
]
