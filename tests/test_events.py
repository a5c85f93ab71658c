"""The canonical event table: its schema is enforced, with errors that point at the bad row."""

from datetime import datetime

import polars as pl
import pytest

from trajsim.events import BIRTH, EVENT_SCHEMA, Event, EventTableError, events_frame, validate_events


def sample() -> pl.DataFrame:
    return events_frame([
        Event(1, datetime(2020, 1, 1), None, BIRTH),
        Event(1, datetime(2020, 2, 1, 9, 30), 7, "LOINC/4548-4", 6.1, "%"),
    ])


def test_engine_events_make_a_schema_conformant_frame():
    frame = validate_events(sample())
    assert dict(frame.schema) == EVENT_SCHEMA
    assert frame["numeric_value"].to_list() == [None, 6.1]


def test_iso_strings_are_accepted_as_times():
    frame = validate_events(sample().with_columns(pl.Series("time", ["2020-01-01", "2020-02-01 09:30"])))
    assert frame["time"][1] == datetime(2020, 2, 1, 9, 30)


def test_missing_column_is_named():
    with pytest.raises(EventTableError, match=r"events.parquet: missing column\(s\) unit"):
        validate_events(sample().drop("unit"), "events.parquet")


def test_unparseable_time_names_column_and_row():
    bad = sample().with_columns(pl.Series("time", ["2020-01-01", "last tuesday"]))
    with pytest.raises(EventTableError, match=r"column 'time' row 1: value 'last tuesday'"):
        validate_events(bad)


def test_code_without_known_system_names_the_row():
    bad = sample().with_columns(pl.Series("code", ["TRAJSIM/birth", "HbA1c"]))
    with pytest.raises(EventTableError, match=r"column 'code' row 1: 'HbA1c' is not SYSTEM/CODE"):
        validate_events(bad)


def test_missing_subject_is_reported():
    bad = sample().with_columns(pl.Series("subject_id", [1, None], dtype=pl.UInt64))
    with pytest.raises(EventTableError, match=r"column 'subject_id' row 1: missing value"):
        validate_events(bad)
