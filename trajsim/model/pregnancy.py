"""What a model's training records hold only while a pregnancy runs, learned at `trajsim train` and
saved in the tokenizer, so the engine keeps those codes inside pregnancies as it keeps its own
prenatal care there.

A model learns a prenatal visit's contents (Synthea's: fetal heart tones, fundal height, the
prenatal blood tests) as a bundle it may write at any visit. The engine turns a prenatal visit
outside a pregnancy into the office visit it can be; without knowing which of its contents only a
pregnancy explains, it kept them: a model trained on 205 Synthea patients auscultated the fetal
heart of 49 men.
"""

from __future__ import annotations

import polars as pl

from trajsim.events import CONDITION_END
from trajsim.model.population import MIN_CELL

# A pregnancy recorded with no end (a record that stops during it) is taken to run this long: about
# the longest a pregnancy lasts, so that what follows an unrecorded delivery is not counted in it.
OPEN_PREGNANCY_DAYS = 300
# Care on the day after a pregnancy's end (a delivery's stay, its discharge) is of the pregnancy.
AFTER_END = pl.duration(days=1)


def pregnancy_spells(events: pl.DataFrame, pregnancy_codes: tuple[str, ...]) -> pl.LazyFrame:
    """(subject_id, start, end) of each recorded pregnancy: from its code to the first end of it
    recorded after, else `OPEN_PREGNANCY_DAYS` later."""
    facts = events.lazy()
    starts = (facts.filter(pl.col("code").is_in(pregnancy_codes)).select("subject_id", start=pl.col("time"))
              .unique().sort("start"))
    ends = (facts.filter((pl.col("code") == CONDITION_END) & pl.col("text").is_in(pregnancy_codes))
            .select("subject_id", end=pl.col("time")).unique().sort("end"))
    return (starts.join_asof(ends, left_on="start", right_on="end", by="subject_id", strategy="forward",
                             check_sortedness=False)  # both sorted by time above
            .with_columns(end=pl.coalesce("end", pl.col("start") + pl.duration(days=OPEN_PREGNANCY_DAYS))))


def pregnancy_only_codes(events: pl.DataFrame, pregnancy_codes: tuple[str, ...]) -> list[str]:
    """The clinical codes that the records hold in at least `MIN_CELL` patients, every time within
    a recorded pregnancy (or on the day after it ends), the pregnancy's own codes apart."""
    facts = (events.lazy().filter(~pl.col("code").str.starts_with("TRAJSIM/") & ~pl.col("code").is_in(pregnancy_codes))
             .select("subject_id", "time", "code").with_row_index("fact"))
    inside = (facts.join(pregnancy_spells(events, pregnancy_codes), on="subject_id")
              .filter(pl.col("time").is_between(pl.col("start"), pl.col("end") + AFTER_END))
              .select("fact").unique().with_columns(inside=pl.lit(True)))
    codes = (facts.join(inside, on="fact", how="left")
             .group_by("code").agg(inside=pl.col("inside").fill_null(False).all(), patients=pl.col("subject_id").n_unique())
             .filter(pl.col("inside") & (pl.col("patients") >= MIN_CELL)))
    return codes.select("code").collect()["code"].sort().to_list()
