"""Notes that read the chart: the assessment names abnormal findings and the active problems, never
calls a patient with critical vital signs stable, uses the right article before an age, and lists
only conditions active at the visit; `contradictions` finds a note at odds with its vitals."""

import base64
import random
from datetime import datetime

import orjson

from fhir_export.notes import Reading, VisitRecord, article, contradictions, findings, write_note
from trajsim.events import BIRTH, CONDITION_END, SEX_MALE, VISIT_END, Event, visit_start_code
from trajsim.output import default_builder

HYPERTENSION, STREP = "SNOMED/59621000", "SNOMED/43878008"
SYSTOLIC, DIASTOLIC, HEART_RATE, TEMPERATURE = "LOINC/8480-6", "LOINC/8462-4", "LOINC/8867-4", "LOINC/8310-5"


def visit(*readings: Reading, age: float = 62.0, encounter_class: str = "AMB", history=()) -> VisitRecord:
    return VisitRecord(encounter_class, "Follow-up encounter", datetime(2020, 1, 2, 9), None, f"{int(age)}-year-old",
                       "man", age, history=list(history), measurements=list(readings))


def vital(code: str, value: float) -> Reading:
    units = {SYSTOLIC: "mm[Hg]", DIASTOLIC: "mm[Hg]", HEART_RATE: "/min", TEMPERATURE: "Cel"}
    return Reading(code, code, value, units[code])


def notes_of(record: VisitRecord) -> list[str]:
    return [write_note(record, random.Random(seed)) for seed in range(12)]


def test_the_article_follows_how_the_age_is_said():
    assert [article(f"{n}-year-old") for n in (8, 11, 18, 80, 88, 1, 34, 81, 100)] == \
        ["an", "an", "an", "an", "an", "a", "a", "an", "a"]
    assert article("18-month-old") == "an"
    record = visit(age=88.0)
    assert all("a 88-year-old" not in note and "A 88-year-old" not in note for note in notes_of(record))
    assert any("an 88-year-old" in note or "An 88-year-old" in note for note in notes_of(record))


def test_the_assessment_names_abnormal_findings_and_active_problems():
    record = visit(vital(SYSTOLIC, 168), vital(DIASTOLIC, 94), vital(TEMPERATURE, 38.9),
                   Reading("LOINC/4548-4", "Hemoglobin A1c", 7.1, "%", "H"), history=["Essential hypertension"])
    assert findings(record) == ["Blood pressure elevated at 168/94 mmHg", "Febrile at 38.9 °C", "Hemoglobin A1c high at 7.1 %"]
    for note in notes_of(record):
        assessment = note.split("ASSESSMENT\n")[1].split("\n\nPLAN")[0]
        assert "- Blood pressure elevated at 168/94 mmHg" in assessment and "- Febrile at 38.9 °C" in assessment
        assert "Essential hypertension" in assessment and "Stable" not in assessment


def test_normal_findings_leave_the_assessment_stable():
    record = visit(vital(SYSTOLIC, 118), vital(DIASTOLIC, 76), vital(HEART_RATE, 72), vital(TEMPERATURE, 36.8))
    assert findings(record) == []
    assert all("Stable; no new problems identified." in note for note in notes_of(record))


def test_no_note_calls_a_critically_abnormal_patient_stable():
    for readings in ([vital(SYSTOLIC, 84), vital(DIASTOLIC, 50)], [vital(HEART_RATE, 140)], [vital(TEMPERATURE, 39.2)]):
        for encounter_class in ("AMB", "EMER", "IMP"):
            record = visit(*readings, encounter_class=encounter_class)
            for note in notes_of(record):
                assert contradictions(note, {r.code: r.value for r in readings}, 62.0) == [], note


def test_contradictions_finds_reassurance_against_critical_vitals():
    note = "ASSESSMENT\n- Stable; no new problems identified."
    assert contradictions(note, {HEART_RATE: 140}, 50.0)
    assert contradictions(note, {SYSTOLIC: 186, DIASTOLIC: 100}, 50.0)
    assert contradictions("Afebrile.", {TEMPERATURE: 38.6}, 5.0)
    assert contradictions(note, {HEART_RATE: 88, TEMPERATURE: 37.0}, 50.0) == []
    assert contradictions(note, {HEART_RATE: 150}, 0.5) == []  # an infant's pulse of 150 is normal (PALS)
    assert contradictions(note, {HEART_RATE: 190}, 0.5)
    assert contradictions(note, {SYSTOLIC: 70}, 5.0)  # below 70 + 2 x age
    assert contradictions("Seen today for: Well child visit.", {TEMPERATURE: 39.0}, 4.0) == []


def note_texts(events: list[Event]) -> list[str]:
    built = default_builder("test/1").build(events).resources
    return [base64.b64decode(r["content"][0]["attachment"]["data"]).decode()
            for r in built if r["resourceType"] == "DocumentReference"]


def office_visit(encounter: int, when: datetime, *codes: str) -> list[Event]:
    return [Event(1, when, encounter, visit_start_code("AMB")), *(Event(1, when, encounter, code) for code in codes),
            Event(1, when.replace(minute=30), encounter, VISIT_END)]


def test_only_conditions_active_at_the_visit_are_current_problems():
    events = [Event(1, datetime(1960, 1, 1), None, BIRTH), Event(1, datetime(1960, 1, 1), None, SEX_MALE),
              *office_visit(1, datetime(2020, 1, 2, 9), HYPERTENSION, STREP),
              Event(1, datetime(2020, 1, 12, 9), None, CONDITION_END, text=STREP),
              *office_visit(2, datetime(2020, 3, 2, 9))]
    first, later = note_texts(events)
    assert "streptococcal sore throat" in first.lower()
    assert "essential hypertension" in later.lower() and "streptococcal" not in later.lower()
    never_ended = [e for e in events if e.code != CONDITION_END]  # a record that never ends the illness
    later = note_texts(never_ended)[1]
    assert "essential hypertension" in later.lower() and "streptococcal" not in later.lower()


def test_generated_notes_do_not_contradict_their_vitals(cohort_dir):
    checked = 0
    for path in sorted((cohort_dir / "fhir" / "bundles").glob("*.json")):
        resources = [e["resource"] for e in orjson.loads(path.read_bytes())["entry"]]
        birth = datetime.fromisoformat(next(r for r in resources if r["resourceType"] == "Patient")["birthDate"])
        starts = {f"urn:uuid:{r['id']}": datetime.fromisoformat(r["period"]["start"][:19])
                  for r in resources if r["resourceType"] == "Encounter"}
        vitals: dict[str, dict[str, float]] = {}
        for r in resources:
            if r["resourceType"] == "Observation" and "encounter" in r:
                for part in r.get("component", [r]):
                    if "valueQuantity" in part:
                        code = "LOINC/" + part["code"]["coding"][0]["code"]
                        vitals.setdefault(r["encounter"]["reference"], {})[code] = part["valueQuantity"]["value"]
        for note in (r for r in resources if r["resourceType"] == "DocumentReference"):
            encounter = note["context"]["encounter"][0]["reference"]
            text = base64.b64decode(note["content"][0]["attachment"]["data"]).decode()
            age = (starts[encounter] - birth).days / 365.25
            assert contradictions(text, vitals.get(encounter, {}), age) == [], (path.name, text)
            checked += 1
    assert checked > 100
