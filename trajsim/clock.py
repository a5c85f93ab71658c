"""The engine's clock, declared once. Simulated time is a day number: days since 1970-01-01 (a
Thursday), the fraction being the time of day. Every stage converts through these helpers, so a
day means the same thing to the engine, the model, the knowledge tables and the exporter."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache

import numpy as np

EPOCH = datetime(1970, 1, 1)
DAYS_PER_YEAR = 365.25  # Julian year: ages and yearly rates over the leap cycle
MINUTES_PER_DAY = 1440
ONE_MINUTE = 1 / MINUTES_PER_DAY  # in days
OFFICE_OPEN_HOURS = (8.0, 17.0)  # clinics see patients in quarter-hour slots between these hours
VISIT_NUMBER_BITS = 20  # an encounter id is the subject id with the visit's number in the low bits


def day_number(d: date) -> float:
    """The day number of a calendar date (its midnight)."""
    return float((d - EPOCH.date()).days)


def year_start_day(year: int) -> int:
    """The day number of 1 January of `year`."""
    return (date(year, 1, 1) - EPOCH.date()).days


def calendar_date(day: float) -> date:
    """The calendar date a day number falls on."""
    return date.fromordinal(EPOCH.toordinal() + int(day // 1))


@lru_cache(maxsize=1 << 16)
def to_datetime(day: float) -> datetime:
    """A day number as wall-clock time, to the minute (cached: a visit's facts share a few instants)."""
    return EPOCH + timedelta(minutes=round(day * MINUTES_PER_DAY))


def is_weekend(day: float) -> bool:
    return (int(day // 1) + 3) % 7 >= 5  # day 0 was a Thursday


def office_slot(rng: np.random.Generator) -> float:
    """A random quarter-hour appointment slot within opening hours, as a fraction of the day."""
    slots = int((OFFICE_OPEN_HOURS[1] - OFFICE_OPEN_HOURS[0]) * 4)
    # a plain float: every day and age computed from a visit's time stays one (numpy scalars are slower)
    return (OFFICE_OPEN_HOURS[0] + int(rng.integers(0, slots)) / 4) / 24


def next_office_slot(day: float) -> float:
    """The first quarter-hour slot at or after `day` on a weekday within opening hours (a clinic's
    next free slot for a visit that could not happen when planned)."""
    opens, closes = (int(hour * 4) for hour in OFFICE_OPEN_HOURS)  # in quarter hours of the day
    date, quarter = divmod(int(np.ceil(day * 96 - 1e-6)), 96)
    if quarter >= closes:
        date, quarter = date + 1, opens
    quarter = max(quarter, opens)
    while is_weekend(date):
        date, quarter = date + 1, opens
    return date + quarter / 96


def encounter_id(subject_id: int, visit_number: int) -> int:
    """The id of a patient's `visit_number`-th encounter (1-based), unique across patients."""
    return (subject_id << VISIT_NUMBER_BITS) | visit_number
