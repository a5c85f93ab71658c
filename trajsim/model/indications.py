"""What each drug of a model's training records was ordered for, learned at `trajsim train` and saved
in the tokenizer as aggregates, so the engine judges a learned drug by its source's indications and
not only by trajsim's knowledge tables.

The knowledge lists first-line drugs by guideline (penicillin V for strep throat); a source may treat
otherwise (Synthea orders amoxicillin-clavulanate for sinusitis and ibuprofen for sprains). Held to
the tables alone, the engine dropped a learned drug it could not indicate and added the table's
instead: penicillin V made 46% of a Synthea model's antibiotic orders against 4% in its source.
"""

from __future__ import annotations

import polars as pl

from trajsim.model.population import MIN_CELL
from trajsim.vocab import in_domain

# A condition counts as a drug's indication when it is the reason of MIN_SHARE of the drug's orders in
# at least MIN_CELL patients: a diagnosis that merely coincides with a drug in a few records is not
# its indication, and no single record can be read back from the pairs.
MIN_SHARE = 0.1


# A learned drug is held to its indications, as a drug the knowledge lists is, when at least this
# share of its orders had one of them: Synthea names strep throat for every penicillin V, while
# acetaminophen or a statin is ordered at visits that diagnose nothing.
ALWAYS_SHARE = 0.95


def order_reasons(events: pl.DataFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """The drug orders (order, subject_id, drug) and their reasons (order, subject_id, drug,
    condition). An order's reason is the condition it names (`text`, as FHIR's reasonReference is
    ingested) or, for an order naming none, each condition first diagnosed at the order's visit:
    co-occurrence with every diagnosis active then would make a Synthea check-up's "encounter for
    check up" and a long-standing hypertension the indications of an antibiotic."""
    facts = events.lazy()
    conditions = facts.filter(in_domain(pl.col("code"), "condition"))
    diagnosed = (conditions.sort("time").group_by("subject_id", "code").first()
                 .filter(pl.col("encounter_id").is_not_null())
                 .select("subject_id", "encounter_id", condition="code"))
    orders = (facts.filter(in_domain(pl.col("code"), "medication")).with_row_index("order")
              .select("order", "subject_id", "encounter_id", drug="code", named="text"))
    named = orders.join(conditions.select(pl.col("code").unique()), left_on="named", right_on="code", how="semi")
    unnamed = (orders.join(named.select("order"), on="order", how="anti")
               .join(diagnosed, on=["subject_id", "encounter_id"])
               .select("order", "subject_id", "drug", "condition"))
    pairs = pl.concat([named.select("order", "subject_id", "drug", condition="named"), unnamed])
    return orders.select("order", "subject_id", "drug"), pairs


def learned_indications(events: pl.DataFrame) -> dict[str, list[str]]:
    """Drug code -> the condition codes it was ordered for (`order_reasons`), the most frequent first."""
    orders, pairs = order_reasons(events)
    totals = orders.group_by("drug").agg(pl.len().alias("orders"))
    kept = (pairs.group_by("drug", "condition")
            .agg(pl.col("order").n_unique().alias("count"), pl.col("subject_id").n_unique().alias("patients"))
            .join(totals, on="drug")
            .filter((pl.col("patients") >= MIN_CELL) & (pl.col("count") >= MIN_SHARE * pl.col("orders")))
            .sort("drug", "count", "condition", descending=[False, True, False])
            .group_by("drug", maintain_order=True).agg("condition")
            .collect())
    return dict(zip(kept["drug"].to_list(), kept["condition"].to_list()))


def always_indicated(events: pl.DataFrame, indications: dict[str, list[str]]) -> list[str]:
    """The drugs of `indications` that `ALWAYS_SHARE` of their orders had one of them for: a model may
    order them for nothing else (a model of Synthea wrote penicillin V for viral pharyngitis)."""
    orders, pairs = order_reasons(events)
    listed = pl.LazyFrame([(drug, c) for drug, codes in indications.items() for c in codes],
                          schema={"drug": pl.String, "condition": pl.String}, orient="row")
    covered = pairs.join(listed, on=["drug", "condition"], how="semi").select("order").unique()
    shares = (orders.join(listed.select("drug").unique(), on="drug", how="semi")
              .join(covered.with_columns(covered=pl.lit(True)), on="order", how="left")
              .group_by("drug").agg(pl.col("covered").fill_null(False).mean().alias("share"))
              .filter(pl.col("share") >= ALWAYS_SHARE).sort("drug").collect())
    return shares["drug"].to_list()
