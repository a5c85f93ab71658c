"""Views of an event table that several metric families share: patients, visits and code matrices.

Evaluation compares tables from different sources (the engine, Synthea via ingest), so every view is
derived from the canonical columns alone: structural `TRAJSIM/` codes give births, deaths, sex and
visit starts; every other code is a clinical fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import sparse

from trajsim.clock import DAYS_PER_YEAR
from trajsim.events import BIRTH, DEATH, SEX_FEMALE, SEX_MALE, VISIT_START_PREFIX

AGE_BANDS = (0, 18, 45, 65)  # paediatric, young adult, middle age, older adult
AGE_BAND_LABELS = ("0-17", "18-44", "45-64", "65+")
IS_CLINICAL = ~pl.col("code").str.starts_with("TRAJSIM/")


def clinical_facts(events: pl.DataFrame) -> pl.DataFrame:
    """The rows that record a clinical fact (diagnosis, lab, drug, vaccine), not the record's shape."""
    return events.filter(IS_CLINICAL)


def patients(events: pl.DataFrame) -> pl.DataFrame:
    """One row per subject (sorted): birth, sex ("F"/"M"/null), death (null while alive), the end of
    the record (death or last fact), age at that end in years, and its age band."""
    code = pl.col("code")
    return (
        events.lazy()
        .group_by("subject_id")
        .agg(
            birth=pl.col("time").filter(code == BIRTH).min(),
            sex=code.filter(code.is_in([SEX_FEMALE, SEX_MALE])).first().str.slice(-1),
            death=pl.col("time").filter(code == DEATH).min(),
            last_fact=pl.col("time").max(),
        )
        .with_columns(record_end=pl.coalesce("death", "last_fact"))
        .with_columns(age_at_end=years_between("birth", "record_end"))
        .with_columns(age_band=age_band(pl.col("age_at_end")))
        .drop("last_fact")
        .sort("subject_id")
        .collect()
    )


def years_between(start: str, end: str) -> pl.Expr:
    return (pl.col(end) - pl.col(start)).dt.total_seconds() / (86_400 * DAYS_PER_YEAR)


def age_band(age: pl.Expr) -> pl.Expr:
    """The subgroup age band of an age in years (null age stays null)."""
    band = pl.lit(None, dtype=pl.String)
    for lower, label in zip(AGE_BANDS, AGE_BAND_LABELS):
        band = pl.when(age >= lower).then(pl.lit(label)).otherwise(band)
    return band


def visits(events: pl.DataFrame) -> pl.DataFrame:
    """One row per visit, in each patient's order: subject, encounter, start time and class."""
    return (
        events.filter(pl.col("code").str.starts_with(VISIT_START_PREFIX))
        .select("subject_id", "encounter_id", start="time",
                encounter_class=pl.col("code").str.strip_prefix(VISIT_START_PREFIX))
        .unique("encounter_id", keep="first")
        .sort("subject_id", "start", "encounter_id")
    )


def vocabulary(*code_columns: pl.Series, limit: int | None = None) -> list[str]:
    """The codes of all columns, most frequent first (ties by code), at most `limit` of them."""
    counts = (pl.concat([column.rename("code") for column in code_columns]).value_counts(name="n")
              .sort(["n", "code"], descending=[True, False]))
    return counts.get_column("code").head(limit).to_list() if limit else counts.get_column("code").to_list()


def code_matrix(rows: pl.Series, codes: pl.Series, n_rows: int, vocab: Sequence[str],
                binary: bool = True) -> sparse.csr_matrix:
    """Rows x vocabulary matrix: entry (r, j) counts the k with `rows[k]` = r and `codes[k]` =
    `vocab[j]` (1 for any number of them when `binary`). Codes outside the vocabulary are dropped."""
    index = pl.DataFrame({"code": list(vocab), "column": np.arange(len(vocab), dtype=np.int64)})
    pairs = pl.DataFrame({"row": rows.cast(pl.Int64), "code": codes}).join(index, on="code", how="inner")
    if binary:
        pairs = pairs.unique(["row", "column"])
    data = np.ones(pairs.height, dtype=np.float32)
    return sparse.csr_matrix((data, (pairs["row"].to_numpy(), pairs["column"].to_numpy())),
                             shape=(n_rows, len(vocab)))


def row_index(keys: pl.Series, of: pl.Series) -> pl.Series:
    """Position of each value of `of` within `keys` (keys are unique), as the row of a matrix."""
    lookup = pl.DataFrame({"key": keys, "row": np.arange(len(keys), dtype=np.int64)})
    return pl.DataFrame({"key": of}).join(lookup, on="key", how="left", maintain_order="left")["row"]


@dataclass(frozen=True)
class Views:
    """An event table with the views derived from it once and shared by every metric family."""

    events: pl.DataFrame
    patients: pl.DataFrame
    visits: pl.DataFrame
    facts: pl.DataFrame

    @classmethod
    def of(cls, events: pl.DataFrame) -> Views:
        return cls(events, patients(events), visits(events), clinical_facts(events))

    def subset(self, subject_ids: np.ndarray, keep: bool) -> Views:
        """The views restricted to `subject_ids` (keep) or to everyone else (not keep)."""
        chosen = pl.col("subject_id").is_in(pl.Series(subject_ids, dtype=pl.UInt64).implode())
        pick = chosen if keep else ~chosen
        return Views(*(frame.filter(pick) for frame in (self.events, self.patients, self.visits, self.facts)))
