"""The reference simulator follows its knowledge tables: schedules, monitoring and first-line drugs."""

from collections import Counter

from tests.conftest import small_scenario
from trajsim.engine import ReferenceSource, simulate
from trajsim.events import CONDITION_END, VISIT_START_PREFIX
from trajsim.knowledge import load_knowledge

INFANTS = ({"min": 0, "max": 2, "weight": 1.0},)
OLDER = ({"min": 55, "max": 80, "weight": 1.0},)


def test_newborns_follow_the_well_child_schedule_and_get_their_vaccines():
    records = list(simulate(small_scenario(30, **{"population.age_mix": INFANTS}), ReferenceSource()))
    for record in records:
        vaccines = Counter(e.code for e in record.events if e.code.startswith("CVX/"))
        age_years = record.patient.age_at(record.patient.exit_day)
        if record.patient.death_day is None and age_years > 1.5:
            assert vaccines["CVX/08"] == 3  # hepatitis B birth, 1-2 and 6-18 month doses
            assert vaccines["CVX/20"] >= 3  # DTaP at 2, 4 and 6 months
        well = [e for e in record.events if e.code == "SNOMED/410620009"]
        assert len(well) >= min(6, int(age_years * 6))


def test_type2_diabetes_is_monitored_with_hba1c_and_treated_with_metformin():
    records = list(simulate(small_scenario(300, **{"population.age_mix": OLDER}), ReferenceSource()))
    diabetic = [r for r in records if any(e.code == "SNOMED/44054006" for e in r.events)]
    assert len(diabetic) > 20
    for record in diabetic:
        assert any(e.code == "RXNORM/860975" and e.text == "SNOMED/44054006" for e in record.events)
    long_followed = [r for r in diabetic if r.patient.exit_day - r.patient.entry_day > 3 * 365]
    hba1c_per_year = [
        sum(e.code == "LOINC/4548-4" for e in r.events) / ((r.patient.exit_day - r.patient.entry_day) / 365.25)
        for r in long_followed
    ]
    assert 1.5 <= sum(hba1c_per_year) / len(hba1c_per_year) <= 3.0  # ADA: at least twice a year


def test_acute_conditions_resolve_after_their_course():
    knowledge = load_knowledge()
    durations = {c.code: c.duration_days for c in knowledge.conditions.values() if c.course == "acute"}
    records = list(simulate(small_scenario(200), ReferenceSource()))
    checked = 0
    for record in records:
        onsets = {}
        for event in record.events:
            if event.code in durations and event.code not in onsets:
                onsets[event.code] = event.time
            if event.code == CONDITION_END and event.text in onsets:
                days = (event.time - onsets.pop(event.text)).total_seconds() / 86400
                assert abs(days - durations[event.text]) < 0.01 or event.text == "SNOMED/233604007"
                checked += 1
    assert checked > 30


def test_sex_specific_rates_apply():
    records = list(simulate(small_scenario(400, **{"population.age_mix": OLDER}), ReferenceSource()))
    uti = Counter(r.patient.sex for r in records for e in r.events if e.code == "SNOMED/68566005")
    assert uti["F"] > 2 * uti["M"]  # 12.6% vs 3% a year (Foxman 2002)


def test_clinic_visits_fall_on_weekdays_in_office_hours():
    for record in simulate(small_scenario(50), ReferenceSource()):
        for event in record.events:
            if event.code == VISIT_START_PREFIX + "AMB":
                assert event.time.weekday() < 5 and 8 <= event.time.hour < 17
