"""Clinical notes written from the structured record of one visit.

A note only states what the record holds: the diagnoses, medications, measurements and vaccines
of the visit, and the conditions and medications active when it began. Its assessment reads the
chart: it names the abnormal findings (vital signs outside `data/vital_findings.csv`, labs outside
their reference interval for the patient's sex and age, `trajsim/knowledge/labs.py`) and the active problems, and it never calls a patient stable when a
vital sign is critically abnormal (`contradictions` checks a note against its visit's vitals).
Children's pulse and blood pressure are judged by the PALS ranges for their age.
Structure follows the kind of visit (a SOAP progress note in clinic, an emergency department
note, a discharge summary after a stay); wording varies between notes, chosen by the visit's
identity so output stays reproducible.
"""

from __future__ import annotations

import random
import re
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, lru_cache
from typing import NamedTuple

from fhir_export.tables import load_table

# LOINC document types (display names as in LOINC) by encounter class.
NOTE_TYPES = {"AMB": ("11506-3", "Progress note"), "EMER": ("34111-5", "Emergency department Note"),
              "IMP": ("18842-5", "Discharge summary")}
UNIT_TEXT = {"mm[Hg]": "mmHg", "Cel": "°C", "kg/m2": "kg/m²", "{tbl}": "tablet"}
SYSTOLIC, DIASTOLIC = "LOINC/8480-6", "LOINC/8462-4"
# Wording that says nothing is wrong; a note may not use it when a vital sign is critically abnormal.
REASSURING = re.compile(r"\b(stable|doing well|well[- ]appearing|no acute distress|unremarkable)\b", re.IGNORECASE)


@dataclass(frozen=True)
class VitalRange:
    """Where a vital sign is abnormal (below `low` or from `high`) and critically so, from `age_min`
    years; None: no limit on that side."""

    age_min: float
    low: float | None
    high: float | None
    critical_low: float | None
    critical_high: float | None
    low_text: str
    high_text: str

    def flag(self, value: float) -> str | None:
        """"L" or "H" when the value is abnormal, else None."""
        return "L" if self.low is not None and value < self.low else "H" if self.high is not None and value >= self.high else None

    def critical(self, value: float) -> bool:
        return (self.critical_low is not None and value < self.critical_low
                or self.critical_high is not None and value >= self.critical_high)


@cache
def vital_ranges() -> dict[str, tuple[VitalRange, ...]]:
    """The vital-sign ranges by LOINC code, by age band in rising `age_min` (`data/vital_findings.csv`:
    PALS bands for children, adult ranges from adolescence)."""
    def number(text: str) -> float | None:
        return float(text) if text else None
    rows = load_table("vital_findings", ("code", "age_min", "low", "high", "critical_low", "critical_high", "low_text", "high_text"))
    ranges: dict[str, list[VitalRange]] = {}
    for r in rows:
        ranges.setdefault(r["code"], []).append(VitalRange(
            float(r["age_min"]), number(r["low"]), number(r["high"]), number(r["critical_low"]),
            number(r["critical_high"]), r["low_text"], r["high_text"]))
    return {code: tuple(sorted(bands, key=lambda band: band.age_min)) for code, bands in ranges.items()}


def vital_range(code: str, age_years: float | None) -> VitalRange | None:
    """The range a vital sign is judged by at this age (None: not judged, e.g. a child's breathing rate)."""
    if age_years is None:
        return None
    starts = _band_starts().get(code)
    if starts is None:
        return None
    index = bisect_right(starts, age_years) - 1  # the last band begun by this age
    return vital_ranges()[code][index] if index >= 0 else None


@cache
def _band_starts() -> dict[str, list[float]]:
    """Each vital sign's `age_min`s, rising: a note judges each vital sign of its visit several times,
    at an age no other visit has."""
    return {code: [band.age_min for band in bands] for code, bands in vital_ranges().items()}


class Reading(NamedTuple):  # a tuple: one is made for every measurement exported
    """One measurement of the visit; `flag` is a lab's "L", "H" or "N" against its reference range
    (None: it has none)."""

    code: str
    name: str
    value: float
    unit: str | None
    flag: str | None = None


@dataclass
class VisitRecord:
    """What one visit's note may state, gathered from the structured record."""

    encounter_class: str
    visit_type: str | None
    start: datetime
    end: datetime | None
    age: str  # e.g. "34-year-old" or "9-month-old"
    person: str  # woman, man, girl or boy
    age_years: float | None = None
    history: list[str] = field(default_factory=list)  # problems active when the visit began
    medications: list[str] = field(default_factory=list)  # medications current when the visit began
    allergies: list[str] = field(default_factory=list)  # allergies recorded before the visit
    procedures: list[str] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    prescriptions: list[tuple[str, str | None]] = field(default_factory=list)  # (medication, indication)
    measurements: list[Reading] = field(default_factory=list)
    immunizations: list[str] = field(default_factory=list)
    social_history: list[str] = field(default_factory=list)  # e.g. the smoking status asked at the visit
    died: bool = False


@lru_cache(maxsize=1024)  # a cohort has few distinct ages
def article(phrase: str) -> str:
    """The indefinite article of a phrase: "an" before a number said with a vowel sound (8, 11, 18,
    80-89: "an 88-year-old", "an 18-month-old") or a vowel, else "a"."""
    number = re.match(r"\d+", phrase)
    if number is None:
        return "an" if phrase[:1].lower() in tuple("aeiou") else "a"
    return "an" if number.group().startswith("8") or number.group() in ("11", "18") else "a"


def age_phrase(birth: datetime | None, moment: datetime) -> tuple[str, bool]:
    """("34-year-old" or "9-month-old", whether a child) at `moment`."""
    if birth is None:
        return "", False
    months = (moment.year - birth.year) * 12 + moment.month - birth.month - (moment.day < birth.day)
    return (f"{months}-month-old" if months < 24 else f"{months // 12}-year-old"), months < 18 * 12


def format_value(value: float, unit: str | None) -> str:
    """A measurement as a note writes it, e.g. `7.1 %` or `128 mmHg`."""
    text = f"{value:g}"
    return f"{text} {UNIT_TEXT.get(unit, unit)}" if unit else text


def _listing(items: list[str], none: str) -> str:
    return "\n".join(f"- {item}" for item in items) if items else none


def _sentence_list(items: list[str]) -> str:
    lowered = [item[0].lower() + item[1:] if item[:2].isalpha() and not item[:2].isupper() else item for item in items]
    return lowered[0] if len(lowered) == 1 else ", ".join(lowered[:-1]) + " and " + lowered[-1]


def _allergies(visit: VisitRecord) -> str:
    return "; ".join(visit.allergies) if visit.allergies else "No known allergies."


def _measurements(visit: VisitRecord) -> str:
    return _listing([f"{m.name}: {format_value(m.value, m.unit)}" for m in visit.measurements],
                    "No measurements were recorded.")


def _vitals(visit: VisitRecord) -> dict[str, float]:
    return {m.code: m.value for m in visit.measurements if m.code in vital_ranges()}


def findings(visit: VisitRecord) -> list[str]:
    """The abnormal findings of the visit, e.g. "Blood pressure elevated at 168/94 mmHg", "Febrile at
    38.9 °C", "Hemoglobin high at 18.1 g/dL"; blood pressure is one finding, named by its worse part."""
    found, vitals = [], _vitals(visit)
    pressure = [(code, vitals[code]) for code in (SYSTOLIC, DIASTOLIC) if code in vitals]
    flags = {code: (vital_range(code, visit.age_years), value) for code, value in pressure}
    flagged = [(r.flag(v), r) for r, v in flags.values() if r is not None and r.flag(v)]
    if flagged:
        flag, judged = next(((f, r) for f, r in flagged if f == "H"), flagged[0])
        reading = "/".join(f"{vitals[c]:g}" for c in (SYSTOLIC, DIASTOLIC) if c in vitals)
        found.append(f"{judged.high_text if flag == 'H' else judged.low_text} at {reading} mmHg")
    for m in visit.measurements:
        if m.code in (SYSTOLIC, DIASTOLIC):
            continue
        judged = vital_range(m.code, visit.age_years)
        flag = judged.flag(m.value) if judged is not None else m.flag if m.flag in ("L", "H") else None
        if flag is None:
            continue
        text = (judged.high_text if flag == "H" else judged.low_text) if judged else f"{m.name} {'high' if flag == 'H' else 'low'}"
        found.append(f"{text} at {format_value(m.value, m.unit)}")
    return list(dict.fromkeys(found))


def critical_vitals(vitals: Mapping[str, float], age_years: float | None) -> list[str]:
    """The codes of the vital signs that are critically abnormal at this age."""
    return [code for code, value in vitals.items()
            if (judged := vital_range(code, age_years)) is not None and judged.critical(value)]


def contradictions(note: str, vitals: Mapping[str, float], age_years: float | None) -> list[str]:
    """How a note contradicts its visit's vital signs (`vitals`: LOINC code -> value; empty: it
    does not). A note contradicts them when it uses reassuring wording ("stable", "doing well", "no
    acute distress") although a vital sign is critically abnormal for the patient's age
    (`data/vital_findings.csv`; for adults systolic pressure below 90 or from 180 mmHg, heart rate
    below 45 or above 130 /min, temperature from 38.5 °C; for children outside the PALS ranges), or
    calls a febrile patient afebrile. Used by the tests and the clinical benchmark."""
    found = []
    critical = critical_vitals(vitals, age_years)
    if critical and (words := REASSURING.search(note)):
        found.append(f"says {words.group(0)!r} with critical {', '.join(critical)}")
    temperature = vitals.get("LOINC/8310-5")
    judged = vital_range("LOINC/8310-5", age_years)
    if temperature is not None and judged is not None and judged.flag(temperature) == "H" and re.search(r"\bafebrile\b", note, re.IGNORECASE):
        found.append(f"says afebrile at {temperature:g} °C")
    return found


def _critical(visit: VisitRecord) -> bool:
    return bool(critical_vitals(_vitals(visit), visit.age_years))


def _assessment(visit: VisitRecord) -> list[str]:
    """New diagnoses, abnormal findings and the other active problems; "stable" only when the
    chart shows nothing abnormal."""
    ongoing = [f"{problem}, ongoing" for problem in visit.history if problem not in visit.diagnoses]
    found = findings(visit)
    items = visit.diagnoses + found + ongoing
    if not visit.diagnoses and not found:
        items.insert(0, "No new problems identified." if ongoing or _critical(visit) else "Stable; no new problems identified.")
    return items


def _plan(visit: VisitRecord, rng: random.Random) -> list[str]:
    plan = [f"Start {medication}" + (f" for {_sentence_list([indication])}." if indication else ".")
            for medication, indication in visit.prescriptions]
    plan += [f"{rng.choice(('Administered', 'Given'))} {vaccine} vaccine." for vaccine in visit.immunizations]
    plan += [f"{procedure} performed." for procedure in visit.procedures]
    if visit.medications and not visit.died:
        plan.append(rng.choice(("Continue current medications.", "No change to other medications.")))
    return plan


def _introduction(visit: VisitRecord, rng: random.Random) -> str:
    opener = rng.choice(("{age} {person}", "{Article} {age} {person}", "Patient is {article} {age} {person}"))
    text = opener.format(age=visit.age, person=visit.person, article=article(visit.age),
                         Article=article(visit.age).capitalize())
    if visit.history:
        text += rng.choice((" with a history of ", " with known ", ", past medical history of ")) + _sentence_list(visit.history)
    return text + "."


def _reason(visit: VisitRecord) -> str:
    if visit.diagnoses:
        reason = _sentence_list(visit.diagnoses)
        return reason[0].upper() + reason[1:]
    return visit.visit_type or "Routine visit"


def progress_note(visit: VisitRecord, rng: random.Random) -> str:
    assessment = _assessment(visit)
    return "\n\n".join((
        f"PROGRESS NOTE — {visit.start:%Y-%m-%d}",
        f"SUBJECTIVE\n{rng.choice(('Seen today for', 'Presents for', 'Visit for'))}: {_reason(visit)}.\n"
        f"{_introduction(visit, rng)}",
        f"Current medications:\n{_listing(visit.medications, 'None.')}",
        f"Allergies: {_allergies(visit)}",
        *([f"Social history: {_sentence_list(visit.social_history)}."] if visit.social_history else []),
        f"OBJECTIVE\n{_measurements(visit)}",
        f"ASSESSMENT\n{_listing(assessment, '')}",
        f"PLAN\n{_listing(_plan(visit, rng), rng.choice(('Routine follow-up.', 'Return as scheduled.')))}",
    ))


def emergency_note(visit: VisitRecord, rng: random.Random) -> str:
    disposition = "Patient expired in the department." if visit.died else rng.choice(
        ("Discharged home; return precautions given.",) if _critical(visit) else
        ("Discharged home in stable condition.", "Discharged home; return precautions given."))
    return "\n\n".join((
        f"EMERGENCY DEPARTMENT NOTE — {visit.start:%Y-%m-%d %H:%M}",
        f"Chief complaint: {_reason(visit)}",
        f"History of present illness: {_introduction(visit, rng)}",
        f"Home medications:\n{_listing(visit.medications, 'None reported.')}",
        f"Allergies: {_allergies(visit)}",
        f"Vital signs and results:\n{_measurements(visit)}",
        f"ED diagnoses:\n{_listing(visit.diagnoses + findings(visit), 'No acute diagnosis made.')}",
        f"Treatment:\n{_listing(_plan(visit, rng), 'Supportive care.')}",
        f"Disposition: {disposition}",
    ))


def discharge_summary(visit: VisitRecord, rng: random.Random) -> str:
    end = f"{visit.end:%Y-%m-%d}" if visit.end else "not recorded"
    outcome = "The patient died during this admission." if visit.died else rng.choice(
        ("Condition improved; discharged home.",) if _critical(visit) else
        ("Discharged home in stable condition.", "Condition improved; discharged home."))
    return "\n\n".join((
        "DISCHARGE SUMMARY",
        f"Admitted: {visit.start:%Y-%m-%d}    Discharged: {end}",
        f"Principal diagnoses:\n{_listing(visit.diagnoses, 'None recorded.')}",
        f"Abnormal findings:\n{_listing(findings(visit), 'None.')}",
        f"History: {_introduction(visit, rng)}",
        f"Medications on admission:\n{_listing(visit.medications, 'None.')}",
        f"Allergies: {_allergies(visit)}",
        f"Results during stay:\n{_measurements(visit)}",
        f"Hospital course and treatment:\n{_listing(_plan(visit, rng), 'Supportive care.')}",
        f"Outcome: {outcome}",
    ))


WRITERS = {"AMB": progress_note, "EMER": emergency_note, "IMP": discharge_summary}


def write_note(visit: VisitRecord, rng: random.Random) -> str:
    """The note of one visit, in the form its encounter class calls for."""
    return WRITERS.get(visit.encounter_class, progress_note)(visit, rng)
