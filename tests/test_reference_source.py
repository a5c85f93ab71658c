"""The reference simulator follows its knowledge tables: schedules, monitoring and first-line drugs."""

import math
from collections import Counter, defaultdict
from datetime import datetime, time, timedelta

import numpy as np
import polars as pl
import pytest

from tests.conftest import small_scenario
from trajsim.engine import ReferenceSource, simulate
from trajsim.evaluate.calibration import prevalence_by_band
from trajsim.events import CONDITION_END, MEDICATION_END, VISIT_START_PREFIX, events_frame
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.lifecycles import lifecycles
from trajsim.knowledge.therapy import RENEWAL_DAYS

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
    ruled_out = {r.subject_id for r in diabetic  # metformin is contraindicated below an eGFR of 30 (drug_lab_limits.csv)
                 if any(e.code == "LOINC/98979-8" and e.numeric_value < 30 for e in r.events)}
    for record in (r for r in diabetic if any(e.encounter_id is not None for e in r.events)
                   and r.subject_id not in ruled_out):  # drugs are ordered at visits
        assert any(e.code == "RXNORM/860975" and e.text == "SNOMED/44054006" for e in record.events)
    long_followed = [r for r in diabetic if r.patient.exit_day - r.patient.entry_day > 3 * 365]
    hba1c_per_year = [
        sum(e.code == "LOINC/4548-4" for e in r.events) / ((r.patient.exit_day - r.patient.entry_day) / 365.25)
        for r in long_followed
    ]
    assert 1.5 <= sum(hba1c_per_year) / len(hba1c_per_year) <= 3.0  # ADA: at least twice a year


def test_acute_conditions_resolve_within_their_lifecycle():
    knowledge = load_knowledge()
    lives = lifecycles(knowledge)
    acute = {c.code for c in knowledge.conditions.values() if c.course == "acute"}
    records = list(simulate(small_scenario(200), ReferenceSource()))
    lengths = defaultdict(list)
    for record in records:
        onsets = {}
        for event in record.events:
            if event.code in acute and event.code not in onsets:
                onsets[event.code] = event.time
            if event.code == CONDITION_END and event.text in onsets:
                days = (event.time - onsets.pop(event.text)).total_seconds() / 86400
                assert 1.0 <= days <= lives[event.text].max_days
                lengths[event.text].append(days)
    assert sum(map(len, lengths.values())) > 30
    assert len(set(lengths["SNOMED/195662009"])) > 1  # durations are drawn, not fixed


def test_sex_specific_rates_apply():
    records = list(simulate(small_scenario(250, **{"population.age_mix": OLDER}), ReferenceSource()))
    # the source's own office visits (the engine's ED case mix, NHAMCS, is not by sex)
    office = {(r.patient.subject_id, e.encounter_id) for r in records for e in r.events if e.code == VISIT_START_PREFIX + "AMB"}
    uti = Counter(r.patient.sex for r in records for e in r.events
                  if e.code == "SNOMED/68566005" and (r.patient.subject_id, e.encounter_id) in office)
    assert uti["F"] > 2 * uti["M"]  # 12.6% vs 3% a year (Foxman 2002)


def test_clinic_visits_fall_on_weekdays_in_office_hours():
    for record in simulate(small_scenario(50), ReferenceSource()):
        for event in record.events:
            if event.code == VISIT_START_PREFIX + "AMB":
                assert event.time.weekday() < 5 and 8 <= event.time.hour < 17


# --- calibration against the cited tables, and scheduled care -----------------------------------
MIDDLE_AGED = ({"min": 40, "max": 60, "weight": 1.0},)


@pytest.fixture(scope="module")
def lifetime_cohort():
    """400 people aged 40-60 simulated from birth: every chronic condition arose by incidence."""
    scenario = small_scenario(400, seed=11, **{"period.start": "birth", "population.age_mix": MIDDLE_AGED})
    return scenario, list(simulate(scenario, ReferenceSource()))


def test_lifetime_prevalence_matches_the_cited_tables_within_sampling_error(lifetime_cohort):
    """The benchmark's +-25% (10,000 patients) widened by three binomial standard errors for 400."""
    scenario, records = lifetime_cohort
    events = events_frame(e for r in records for e in r.events).lazy()
    end = datetime.combine(scenario.period.end, time())
    table = prevalence_by_band(events, end, load_knowledge())
    checked = table.filter(pl.col("condition").is_in(["hypertension", "obesity", "hyperlipidemia", "type2_diabetes"])
                           & (pl.col("patients") >= 100))
    assert checked.height >= 4
    for row in checked.iter_rows(named=True):
        assert abs(row["relative_error"]) <= 0.25 + 3 * row["relative_standard_error"], row


def test_deaths_follow_the_life_table():
    """Observed deaths over those the life table expects for the same person-years, within three
    Poisson standard errors, although conditions shift who dies."""
    old_age = ({"min": 70, "max": 100, "weight": 1.0},)
    records = list(simulate(small_scenario(150, seed=5, **{"period.start": "2010-01-01",
                                                             "population.age_mix": old_age}), ReferenceSource()))
    knowledge = load_knowledge()
    bands, expected, observed = knowledge.mortality, 0.0, 0
    for record in records:
        p = record.patient
        start, stop = p.age_at(p.entry_day), p.age_at(p.exit_day)
        years = np.clip(np.minimum(stop, bands[:, 1]) - np.maximum(start, bands[:, 0]), 0, None)
        expected += float(years @ bands[:, 2])
        observed += p.death_day is not None and p.death_day <= p.end_day
    assert expected > 50
    assert abs(observed / expected - 1) <= 3 / math.sqrt(expected)


def test_complications_are_commoner_with_their_cause():
    """Diabetes raises chronic kidney disease: its prevalence at entry (comorbidity.csv) and its onset
    after (complications.csv)."""
    records = list(simulate(small_scenario(300, seed=11, **{"population.age_mix": OLDER}), ReferenceSource()))
    diabetic = [r for r in records if "SNOMED/44054006" in r.patient.conditions]
    others = [r for r in records if "SNOMED/44054006" not in r.patient.conditions]
    def ckd_share(group):
        return sum("SNOMED/709044004" in r.patient.conditions for r in group) / len(group)
    assert len(diabetic) >= 15
    assert ckd_share(diabetic) > ckd_share(others)


def test_labs_depend_on_the_condition(lifetime_cohort):
    """HbA1c is above the diagnostic threshold with diabetes; eGFR is lower with chronic kidney disease."""
    _, records = lifetime_cohort
    def values(code, condition, present):
        return [e.numeric_value for r in records if (condition in r.patient.conditions) == present
                for e in r.events if e.code == code]
    assert np.mean(values("LOINC/4548-4", "SNOMED/44054006", True)) > 6.5
    def since_diagnosis(code, condition):  # readings once the condition is on the chart
        return [e.numeric_value for r in records for e in r.events if e.code == code
                and any(d.code == condition and d.time <= e.time for d in r.events)]
    ckd = "SNOMED/709044004"
    assert np.mean(since_diagnosis("LOINC/98979-8", ckd)) < 60 < np.mean(values("LOINC/98979-8", ckd, False))
    # kidney disease: albuminuria and a raised urea nitrogen (KDIGO 2012)
    assert np.mean(values("LOINC/14959-1", "SNOMED/709044004", True)) > 30 > max(values("LOINC/14959-1", "SNOMED/709044004", False))
    assert np.mean(values("LOINC/6299-2", "SNOMED/709044004", True)) > np.mean(values("LOINC/6299-2", "SNOMED/709044004", False)) + 5


def test_long_term_drugs_are_renewed_at_visits_at_most_yearly_and_stop_with_their_indication(lifetime_cohort):
    _, records = lifetime_cohort
    knowledge = load_knowledge()
    renewals = 0
    for record in records:
        last: dict[str, datetime] = {}  # drug -> its last order while it is taken
        for event in record.events:
            if event.code == MEDICATION_END:
                last.pop(event.text, None)
            elif event.code in knowledge.refill_days:
                assert event.encounter_id is not None, (record.subject_id, event)
                if event.code in last:
                    assert event.time - last[event.code] >= timedelta(days=RENEWAL_DAYS), (record.subject_id, event)
                    renewals += 1
                last[event.code] = event.time
    assert renewals > 20
    ended = [e for r in records for e in r.events if e.code == MEDICATION_END]
    assert ended


def test_allergies_follow_their_prevalence_and_rule_out_drugs(lifetime_cohort):
    _, records = lifetime_cohort
    allergic = [r for r in records if "SNOMED/91936005" in r.patient.allergies]
    assert 20 <= len(allergic) <= 65  # about 10% of 400 report a penicillin allergy (CDC)
    ruled_out = load_knowledge().contraindications
    for record in allergic:
        onset = next(e.time for e in record.events if e.code == "SNOMED/91936005")
        assert not [e for e in record.events if e.time >= onset and e.code in ruled_out], record.subject_id


def test_screenings_follow_their_schedule(lifetime_cohort):
    _, records = lifetime_cohort
    screened = Counter(e.code for r in records for e in r.events if e.code in ("SNOMED/24623002", "SNOMED/73761001"))
    women_40_plus = sum(r.patient.sex == "F" for r in records)  # the cohort is aged 40-60 at the end
    assert screened["SNOMED/24623002"] > women_40_plus  # biennial mammograms, most women screened
    for record in records:
        mammograms = [e.time for e in record.events if e.code == "SNOMED/24623002"]
        assert record.patient.sex == "F" or not mammograms
        gaps = [(b - a).days for a, b in zip(mammograms, mammograms[1:])]
        assert all(gap >= 2 * 365 for gap in gaps), gaps
