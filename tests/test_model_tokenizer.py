"""The tokenizer: events -> tokens -> events keeps codes and day-resolution times, values stay in
their bins, and rare codes are folded into their system's category."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from trajsim.engine import ReferenceSource, simulate
from trajsim.events import BIRTH, DEATH, SEX_FEMALE, SEX_MALE, VISIT_START_PREFIX, events_frame
from trajsim.clock import calendar_date
from trajsim.model.tokenizer import ENDED, HEADS, MIN_BIN_VALUES, Tokenizer, gap_days, gap_tokens

from tests.conftest import small_scenario


@pytest.fixture(scope="module")
def reference_events() -> pl.DataFrame:
    return events_frame(e for r in simulate(small_scenario(30, seed=11), ReferenceSource()) for e in r.events)


def _facts(frame: pl.DataFrame) -> pl.DataFrame:
    """Every fact except birth and sex, as (subject, day, code, ended code, in a visit?), sorted.
    (A drug's indication in `text` is not tokenized: the engine source names it from the rules; nor
    is the encounter a death falls in: the engine, not the model, dates and places death.)"""
    ended = pl.when(pl.col("code").is_in(ENDED)).then(pl.col("text"))
    return (frame.filter(~pl.col("code").is_in([BIRTH, SEX_FEMALE, SEX_MALE]))
            .select("subject_id", pl.col("time").dt.date().alias("day"), "code", ended.alias("ended"),
                    (pl.col("encounter_id").is_not_null() & (pl.col("code") != DEATH)).alias("in_visit"))
            .sort(pl.all()))


def test_gap_tokens_spell_exact_day_counts():
    for days in range(0, 3000):
        assert sum(gap_days(token) for token in gap_tokens(days)) == days


def test_round_trip_keeps_codes_days_and_visits(reference_events):
    tokenizer = Tokenizer.fit(reference_events, min_count=1)
    decoded = tokenizer.decode_frame(tokenizer.encode(reference_events))
    assert _facts(decoded).equals(_facts(reference_events))
    visits = pl.col("code").str.starts_with(VISIT_START_PREFIX)
    assert decoded.filter(visits).height == reference_events.filter(visits).height


def test_dates_shifted_into_the_future_round_trip(reference_events):
    """De-identified sources shift dates by decades (MIMIC-IV records lie in 2110-2210)."""
    shifted = reference_events.with_columns(pl.col("time").dt.offset_by("150y"))
    tokenizer = Tokenizer.fit(shifted, min_count=1)
    assert _facts(tokenizer.decode_frame(tokenizer.encode(shifted))).equals(_facts(shifted))


def test_birth_is_kept_only_as_a_five_year_band(reference_events):
    tokenizer = Tokenizer.fit(reference_events, min_count=1)
    births = lambda frame: frame.filter(pl.col("code") == BIRTH).sort("subject_id")["time"].dt.year()  # noqa: E731
    original, decoded = births(reference_events), births(tokenizer.decode_frame(tokenizer.encode(reference_events)))
    assert ((original - original % 5) == (decoded - decoded % 5)).all()


def test_values_decode_inside_their_bin(reference_events):
    tokenizer = Tokenizer.fit(reference_events, min_count=1)
    rng = np.random.default_rng(0)
    for code, edges in tokenizer.value_edges.items():
        for k in range(len(edges) - 1):
            fact = tokenizer.decode_fact(f"{code}#{k}", 0, rng)
            assert edges[k] <= fact.value <= edges[k + 1]
            assert fact.value == round(fact.value, tokenizer.value_decimals[code])


def test_each_value_is_encoded_in_the_bin_that_holds_it(reference_events):
    tokenizer = Tokenizer.fit(reference_events, min_count=1)
    measured = reference_events.filter(pl.col("numeric_value").is_not_null())
    tokens = tokenizer._fact_tokens(measured)
    for token, value in zip(tokens, measured["numeric_value"]):
        code, _, k = token.partition("#")
        edges = tokenizer.value_edges[code]
        assert edges[int(k)] <= value <= edges[int(k) + 1]


def test_value_bins_are_learned_from_enough_values(reference_events):
    """A code's bins are as many as its values can fit (a value token seen a few times is not learned):
    each holds about MIN_BIN_VALUES values or more, and a code of few distinct values has no empty
    bins between equal edges."""
    tokenizer = Tokenizer.fit(reference_events, min_count=1)
    measured = reference_events.filter(pl.col("numeric_value").is_not_null())
    tokens = pl.Series(tokenizer._fact_tokens(measured))
    counts = dict(tokens.value_counts().iter_rows())
    values = dict(measured.group_by("code").len().iter_rows())
    assert any(len(edges) - 1 < tokenizer.n_bins for edges in tokenizer.value_edges.values())
    for code, edges in tokenizer.value_edges.items():
        assert len(edges) - 1 <= max(1, values[code] // MIN_BIN_VALUES)
        assert len(edges) == 2 or np.all(np.diff(edges) > 0), code
        bins = [t for t in tokenizer.vocab if t.startswith(f"{code}#")]
        assert len(bins) == len(edges) - 1
        # quantile bins of >= 2 distinct edges each hold values (the top bin takes its edge's ties)
        assert sum(counts.get(t, 0) for t in bins) == values[code]


def test_rare_codes_fold_into_their_system_category(reference_events):
    named = pl.concat([reference_events["code"], reference_events.filter(pl.col("code").is_in(ENDED))["text"]])
    counts = dict(named.value_counts().iter_rows())
    rare = sorted(c for c, n in counts.items() if n < 20 and c.startswith("SNOMED/"))
    assert rare, "the fixture cohort should have some SNOMED codes seen fewer than 20 times"
    tokenizer = Tokenizer.fit(reference_events, min_count=20)
    assert not set(rare) & set(tokenizer.vocab)
    assert "RARE/SNOMED" in tokenizer.vocab
    decoded = tokenizer.decode_frame(tokenizer.encode(reference_events))
    snomed = set(decoded.filter(pl.col("code").str.starts_with("SNOMED/"))["code"])
    assert snomed <= set(counts)  # a folded code decodes to one of the codes folded into it


def test_saved_tokenizer_encodes_the_same(reference_events, tmp_path):
    tokenizer = Tokenizer.fit(reference_events)
    tokenizer.save(tmp_path / "tokenizer.json")
    assert Tokenizer.load(tmp_path / "tokenizer.json").encode(reference_events) == tokenizer.encode(reference_events)


def visit_years_and_marks(tokenizer: Tokenizer, ids: list[int]) -> tuple[list[int], list[int], list[int]]:
    """(years marked, the last mark before each visit, each visit's calendar year) of one token row."""
    tokens = [tokenizer.vocab[i] for i in ids]
    marks, marked_at_visit = [], []
    for token in tokens[3:]:
        if token.startswith("YEAR/"):
            marks.append(int(token[5:]))
        elif token in HEADS:
            marked_at_visit.append(marks[-1])
    segments = tokenizer.segments(ids, np.random.default_rng(0))[2]
    return marks, marked_at_visit, [calendar_date(segment.day).year for segment in segments]


def test_the_clock_is_marked_each_new_year_between_visits(reference_events):
    tokenizer = Tokenizer.fit(reference_events, min_count=1)
    for _, ids in tokenizer.encode(reference_events):
        marks, marked_at_visit, visit_years = visit_years_and_marks(tokenizer, ids)
        assert marks == list(range(marks[0], marks[-1] + 1))  # every year the record passes, in order
        assert marked_at_visit == visit_years[:len(marked_at_visit)]  # a visit lies in the year last marked


def test_a_record_names_the_year_it_ends_after_the_year_it_starts(reference_events):
    tokenizer = Tokenizer.fit(reference_events, min_count=1)
    last_years = dict(reference_events.group_by("subject_id").agg(pl.col("time").max().dt.year()).iter_rows())
    for subject_id, ids in tokenizer.encode(reference_events):
        header = [tokenizer.vocab[i] for i in ids[:tokenizer.header_length]]
        assert header[3].startswith("YEAR/") and header[4] == f"UNTIL/{last_years[subject_id]}"
        segments = tokenizer.segments(ids, np.random.default_rng(0))[2]
        assert calendar_date(segments[-1].day).year <= last_years[subject_id]


def test_the_calendar_names_the_token_of_each_year_and_record_end(reference_events):
    tokenizer = Tokenizer.fit(reference_events)
    years, until = tokenizer.year_tokens(), tokenizer.until_tokens()
    assert len(years) == tokenizer.calendar()["n_years"] > 50 and years.keys() == until.keys()
    assert all(tokenizer.vocab[i] == f"YEAR/{year}" for year, i in years.items())
    assert all(tokenizer.vocab[i] == f"UNTIL/{year}" for year, i in until.items())


def test_a_tokenizer_fitted_before_record_ends_reads_and_writes_records_without_them(reference_events, tmp_path):
    fitted = Tokenizer.fit(reference_events, min_count=1)
    older = Tokenizer(**{**{k: getattr(fitted, k) for k in ("value_edges", "value_decimals", "units", "folded",
                                                            "min_count", "n_bins", "year_marks")},
                         "vocab": [t for t in fitted.vocab if not t.startswith("UNTIL/")]})
    older.save(tmp_path / "tokenizer.json")
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    del saved["record_end"]  # as files written before it are
    (tmp_path / "tokenizer.json").write_text(json.dumps(saved))
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    assert loaded.header_length == 4 and not loaded.record_end and not loaded.until_tokens()
    rng = np.random.default_rng(0)
    for (_, old_ids), (_, new_ids) in zip(loaded.encode(reference_events), fitted.encode(reference_events)):
        assert [loaded.vocab[i] for i in old_ids] == [t for t in (fitted.vocab[i] for i in new_ids) if not t.startswith("UNTIL/")]
        assert [s.day for s in loaded.segments(old_ids, rng)[2]] == [s.day for s in fitted.segments(new_ids, rng)[2]]
