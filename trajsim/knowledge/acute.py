"""Acute care as data: which conditions are treated through the emergency department with a
procedure (and admitted), the rates of the events the engine dates on their own day (first
myocardial infarction and stroke, injuries by age, emergency visits for acute illness), and the hospital
admissions a chronic condition or a lasting episode leads to (an elective joint replacement, an
outpatient cataract operation, a heart-failure or COPD exacerbation, a depressive episode), from `data/acute_care.csv`, `data/acute_rates.csv` and `data/admissions.csv`; and the
share of all ED visits made for each reason the engine adds ED visits for (`data/emergency_reasons.csv`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from trajsim.knowledge.hazards import AgeSegments, band_segments
from trajsim.knowledge.tables import DATA, AgeBand, read_table

EMERGENCY_VISIT = "emergency_visit"  # the rate of all ED visits in acute_rates.csv
NEWBORN_STAY = "SNOMED/32485007"  # Hospital admission: the newborn's birth stay
OBSERVATION_STAY = "SNOMED/448951000124107"  # Admission to observation unit
EMERGENCY_ADMISSION = "SNOMED/183452005"  # Emergency hospital admission: a stay's encounter type
# An observation stay mostly ends within 24 hours, nearly always within 48, past which the patient is
# admitted (CMS Medicare Benefit Policy Manual, chapter 6, section 20.6)
OBSERVATION_LONGEST = 2.0  # days
# A stay that starts within an hour of the end of the patient's last one is that stay going on (a
# patient discharged and admitted again at once); trajsim simulates no transfers between hospitals
SAME_STAY_GAP_DAYS = 1 / 24
HOSPICE_CARE = "SNOMED/385763009"  # Hospice care (regime/therapy)
# Hospice is for a terminal illness with a prognosis of six months or less (CMS, Medicare Benefit
# Policy Manual, chapter 9, section 10); about 17% of US hospice patients are discharged alive
# (NHPCO Facts and Figures 2020), so a year with no death after a referral is what a reader flags.
HOSPICE_SURVIVAL_DAYS = 365


def stay_type(code: str, days: float) -> str:
    """The encounter type of a stay of type `code` that lasts `days`: an observation stay kept
    past 48 hours is an admission."""
    return EMERGENCY_ADMISSION if code == OBSERVATION_STAY and days > OBSERVATION_LONGEST else code


@dataclass(frozen=True)
class Treatment:
    """How an acute condition is cared for through the ED: the procedure that treats it or rules its
    danger out (None: none every visit gets), and the shares of its ED visits that end in admission
    (1: always, an MI) and in an observation stay (chest pain); the rest go home."""

    condition: str  # key in conditions.csv
    procedure: str | None
    admitted: float = 0.0
    observed: float = 0.0

    @property
    def always_admitted(self) -> bool:
        return self.admitted >= 1.0


@cache
def treatments() -> dict[str, Treatment]:
    """Treatments by condition key."""
    rows = read_table(DATA.joinpath("acute_care.csv"), ("condition", "procedure", "admitted", "observed"))
    treatments = {r["condition"]: Treatment(r["condition"], r["procedure"] or None, float(r["admitted"] or 0),
                                            float(r["observed"] or 0)) for r in rows}
    bad = [t.condition for t in treatments.values()
           if not (0 <= t.admitted <= 1 and 0 <= t.observed <= 1 and t.admitted + t.observed <= 1)]
    if bad:
        raise ValueError(f"acute_care.csv: admitted and observed of {bad[0]} must be shares adding up to at most 1")
    return treatments


@dataclass(frozen=True)
class Admission:
    """A hospital stay that patients with `condition` have at `rate` a year at ages [age_min,
    age_max): planned (`elective`, admitted directly on a weekday; `outpatient`, the same but home
    the same day, in an ambulatory encounter) or through the ED (`emergency`), with the procedure or
    the lab done in it, at most `max_per_patient` times (None: no limit)."""

    condition: str  # key in conditions.csv
    elective: bool  # planned: elective or outpatient
    admission: str  # the stay's encounter type
    procedure: str | None
    lab: str | None
    rate: float  # stays per person-year with the condition
    age_min: float
    age_max: float
    stay_days: float
    max_per_patient: int | None
    encounter_class: str = "IMP"  # AMB for outpatient surgery

    def applies(self, age: float) -> bool:
        return self.age_min <= age < self.age_max


ROUTES = ("elective", "outpatient", "emergency")


@cache
def admissions() -> tuple[Admission, ...]:
    """The admissions chronic conditions and lasting episodes lead to (`data/admissions.csv`)."""
    rows = read_table(DATA.joinpath("admissions.csv"), ("condition", "route", "admission", "procedure", "lab",
                                                         "per_1000py", "age_min", "age_max", "stay_days",
                                                         "max_per_patient"))
    bad = sorted({r["route"] for r in rows} - set(ROUTES))
    if bad:
        raise ValueError(f"admissions.csv: route {bad[0]!r} is not one of {', '.join(ROUTES)}")
    return tuple(Admission(r["condition"], r["route"] != "emergency", r["admission"], r["procedure"] or None,
                           r["lab"] or None, float(r["per_1000py"]) / 1000, float(r["age_min"]), float(r["age_max"]),
                           float(r["stay_days"]), int(r["max_per_patient"]) if r["max_per_patient"] else None,
                           "AMB" if r["route"] == "outpatient" else "IMP")
                 for r in rows)


@cache
def event_rates() -> dict[str, tuple[AgeBand, ...]]:
    """Age and sex bands of events per person-year, by event (a condition key or EMERGENCY_VISIT)."""
    rates: dict[str, list[AgeBand]] = {}
    for r in read_table(DATA.joinpath("acute_rates.csv"), ("event", "sex", "age_min", "age_max", "per_1000py")):
        band = AgeBand(r["sex"], float(r["age_min"]), float(r["age_max"]), float(r["per_1000py"]) / 1000)
        rates.setdefault(r["event"], []).append(band)
    return {event: tuple(bands) for event, bands in rates.items()}


def event_rate(event: str, sex: str, age: float) -> float:
    """Events per person-year at this age (the first band covering it; 0 outside the table's bands)."""
    return _event_segments(event, sex).at(age)


@cache
def _event_segments(event: str, sex: str) -> AgeSegments[float]:
    return band_segments(((band.age_min, band.age_max, band.value) for band in event_rates().get(event, ())
                        if band.sex in ("any", sex)), lambda values: values[0] if values else 0.0)


def sudden_onsets() -> frozenset[str]:
    """Conditions that start as a dated event (myocardial infarction, stroke, an injury): the engine
    draws their onset between visits, so no source or schedule starts them at a visit."""
    return frozenset(event_rates()) - {EMERGENCY_VISIT}


@cache
def emergency_shares() -> dict[str, float]:
    """Condition key -> the share of all US ED visits made for it, for the reasons the engine adds ED
    visits for (`data/emergency_reasons.csv`); injuries and the other conditions a source dates at
    their own rates are not among them, so they are not counted twice."""
    rows = read_table(DATA.joinpath("emergency_reasons.csv"), ("condition", "share"))
    shares = {r["condition"]: float(r["share"]) for r in rows}
    if not 0 < sum(shares.values()) <= 1:
        raise ValueError("emergency_reasons.csv: shares must be positive and add up to at most 1")
    return shares
