"""Clinical notes written from the structured record of one visit.

A note only states what the record holds: the diagnoses, medications, measurements and vaccines
of the visit, and the conditions and medications active when it began. Structure follows the kind
of visit (a SOAP progress note in clinic, an emergency department note, a discharge summary after
a stay); wording varies between notes, chosen by the visit's identity so output stays reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime

# LOINC document types (display names as in LOINC) by encounter class.
NOTE_TYPES = {"AMB": ("11506-3", "Progress note"), "EMER": ("34111-5", "Emergency department Note"),
              "IMP": ("18842-5", "Discharge summary")}
UNIT_TEXT = {"mm[Hg]": "mmHg", "Cel": "°C", "kg/m2": "kg/m²", "{tbl}": "tablet"}


@dataclass
class VisitRecord:
    """What one visit's note may state, gathered from the structured record."""

    encounter_class: str
    visit_type: str | None
    start: datetime
    end: datetime | None
    age: str  # e.g. "34-year-old" or "9-month-old"
    person: str  # woman, man, girl or boy
    history: list[str] = field(default_factory=list)  # conditions active when the visit began
    medications: list[str] = field(default_factory=list)  # medications current when the visit began
    allergies: list[str] = field(default_factory=list)  # allergies recorded before the visit
    procedures: list[str] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    prescriptions: list[tuple[str, str | None]] = field(default_factory=list)  # (medication, indication)
    measurements: list[tuple[str, float, str | None]] = field(default_factory=list)  # (name, value, unit)
    immunizations: list[str] = field(default_factory=list)
    died: bool = False


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
    return _listing([f"{name}: {format_value(value, unit)}" for name, value, unit in visit.measurements],
                    "No measurements were recorded.")


def _plan(visit: VisitRecord, rng: random.Random) -> list[str]:
    plan = [f"Start {medication}" + (f" for {_sentence_list([indication])}." if indication else ".")
            for medication, indication in visit.prescriptions]
    plan += [f"{rng.choice(('Administered', 'Given'))} {vaccine} vaccine." for vaccine in visit.immunizations]
    plan += [f"{procedure} performed." for procedure in visit.procedures]
    if visit.medications and not visit.died:
        plan.append(rng.choice(("Continue current medications.", "No change to other medications.")))
    return plan


def _introduction(visit: VisitRecord, rng: random.Random) -> str:
    opener = rng.choice(("{age} {person}", "A {age} {person}", "Patient is a {age} {person}"))
    text = opener.format(age=visit.age, person=visit.person)
    if visit.history:
        text += rng.choice((" with a history of ", " with known ", ", past medical history of ")) + _sentence_list(visit.history)
    return text + "."


def _reason(visit: VisitRecord) -> str:
    if visit.diagnoses:
        reason = _sentence_list(visit.diagnoses)
        return reason[0].upper() + reason[1:]
    return visit.visit_type or "Routine visit"


def progress_note(visit: VisitRecord, rng: random.Random) -> str:
    assessment = visit.diagnoses or ["Stable; no new problems identified."]
    return "\n\n".join((
        f"PROGRESS NOTE — {visit.start:%Y-%m-%d}",
        f"SUBJECTIVE\n{rng.choice(('Seen today for', 'Presents for', 'Visit for'))}: {_reason(visit)}.\n"
        f"{_introduction(visit, rng)}",
        f"Current medications:\n{_listing(visit.medications, 'None.')}",
        f"Allergies: {_allergies(visit)}",
        f"OBJECTIVE\n{_measurements(visit)}",
        f"ASSESSMENT\n{_listing(assessment, '')}",
        f"PLAN\n{_listing(_plan(visit, rng), rng.choice(('Routine follow-up.', 'Return as scheduled.')))}",
    ))


def emergency_note(visit: VisitRecord, rng: random.Random) -> str:
    disposition = "Patient expired in the department." if visit.died else rng.choice(
        ("Discharged home in stable condition.", "Discharged home; return precautions given."))
    return "\n\n".join((
        f"EMERGENCY DEPARTMENT NOTE — {visit.start:%Y-%m-%d %H:%M}",
        f"Chief complaint: {_reason(visit)}",
        f"History of present illness: {_introduction(visit, rng)}",
        f"Home medications:\n{_listing(visit.medications, 'None reported.')}",
        f"Allergies: {_allergies(visit)}",
        f"Vital signs and results:\n{_measurements(visit)}",
        f"ED diagnoses:\n{_listing(visit.diagnoses, 'No acute diagnosis made.')}",
        f"Treatment:\n{_listing(_plan(visit, rng), 'Supportive care.')}",
        f"Disposition: {disposition}",
    ))


def discharge_summary(visit: VisitRecord, rng: random.Random) -> str:
    end = f"{visit.end:%Y-%m-%d}" if visit.end else "not recorded"
    outcome = "The patient died during this admission." if visit.died else rng.choice(
        ("Discharged home in stable condition.", "Condition improved; discharged home."))
    return "\n\n".join((
        "DISCHARGE SUMMARY",
        f"Admitted: {visit.start:%Y-%m-%d}    Discharged: {end}",
        f"Principal diagnoses:\n{_listing(visit.diagnoses, 'None recorded.')}",
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
