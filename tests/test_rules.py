"""Clinical validity rules: the checker finds each kind of violation planted in a hand-made table,
passes a valid one, and the sampler mask forbids exactly what the checker would reject."""

from datetime import datetime, timedelta

import numpy as np
import orjson
import polars as pl

from tests.conftest import small_scenario
from trajsim.engine import Fact, PatientState, ReferenceSource, TrajectorySource, Visit, simulate
from trajsim.clock import to_datetime
from trajsim.rules import MASK_RULES, RULES, RuleMask, find_violations, violation_counts
from trajsim.generate import generate
from trajsim.events import (
    BIRTH, CONDITION_END, DEATH, SEX_FEMALE, SEX_MALE, VISIT_END, Event, events_frame, visit_start_code,
)

BORN = datetime(1960, 3, 1)
HYPERTENSION, METFORMIN, LISINOPRIL = "SNOMED/59621000", "RXNORM/860975", "RXNORM/314076"
DIABETES, STREP, PENICILLIN = "SNOMED/44054006", "SNOMED/43878008", "RXNORM/834061"
PENICILLIN_ALLERGY, AZITHROMYCIN = "SNOMED/91936005", "RXNORM/308460"
PROSTATE_CANCER = "SNOMED/126906006"


def at(years: float) -> datetime:
    return BORN + timedelta(days=years * 365.25)


def valid_record(subject: int = 1, sex: str = SEX_MALE) -> list[Event]:
    """A 60-year-old's valid record: two visits, hypertension on lisinopril, a strep throat treated
    and resolved, normal vitals."""
    return [
        Event(subject, BORN, None, BIRTH),
        Event(subject, BORN, None, sex),
        Event(subject, at(50), 1, visit_start_code("AMB")),
        Event(subject, at(50), 1, HYPERTENSION),
        Event(subject, at(50), 1, LISINOPRIL, text=HYPERTENSION),
        Event(subject, at(50), 1, "LOINC/8480-6", 142.0, "mm[Hg]"),
        Event(subject, at(50) + timedelta(minutes=20), 1, VISIT_END),
        Event(subject, at(55), 2, visit_start_code("AMB")),
        Event(subject, at(55), 2, STREP),
        Event(subject, at(55), 2, PENICILLIN, text=STREP),
        Event(subject, at(55) + timedelta(minutes=20), 2, VISIT_END),
        Event(subject, at(55) + timedelta(days=10), None, CONDITION_END, text=STREP),
        Event(subject, at(56) - timedelta(minutes=20), 5, visit_start_code("AMB")),
        Event(subject, at(56) - timedelta(minutes=20), 5, LISINOPRIL, text=HYPERTENSION),  # renewed at a visit
        Event(subject, at(56), 5, VISIT_END),
    ]


def rules_found(events: list[Event]) -> dict[str, int]:
    return violation_counts(find_violations(events_frame(events)))


def test_a_valid_record_has_no_violations():
    assert rules_found(valid_record()) == {}


def test_sex_specific_code_for_the_other_sex_is_found():
    record = valid_record(sex=SEX_MALE) + [Event(1, at(40), None, "SNOMED/72892002"),  # normal pregnancy
                                           Event(1, at(40.7), None, "SNOMED/48782003"),  # delivered
                                           Event(1, at(40.7), None, CONDITION_END, text="SNOMED/72892002")]
    assert rules_found(record) == {"sex_specific_code": 1}


def test_age_specific_code_outside_its_ages_is_found():
    assert rules_found(valid_record() + [Event(1, at(40), None, "CVX/20")]) == {"age_specific_code": 1}  # DTaP in 2000


def test_fact_before_birth_is_found():
    assert rules_found(valid_record() + [Event(1, at(-1), None, "LOINC/8867-4", 70.0, "/min")]) == {"before_birth": 1}


def test_fact_after_death_is_found():
    record = valid_record() + [Event(1, at(57), None, DEATH, text=HYPERTENSION), Event(1, at(58), 4, LISINOPRIL, text=HYPERTENSION)]
    assert rules_found(record) == {"after_death": 1}


def test_second_death_is_found():
    record = valid_record() + [Event(1, at(57), None, DEATH, text=HYPERTENSION), Event(1, at(57), None, DEATH, text=HYPERTENSION)]
    assert rules_found(record) == {"multiple_deaths": 1}


def test_drug_for_an_indication_never_diagnosed_is_found():
    assert rules_found(valid_record() + [Event(1, at(56), 4, METFORMIN, text=DIABETES)]) == {
        "medication_without_indication": 1}


def test_drug_after_its_indication_resolved_is_found():
    assert rules_found(valid_record() + [Event(1, at(56), 4, PENICILLIN, text=STREP)]) == {
        "medication_without_indication": 1}


def test_drug_without_recorded_indication_needs_one_of_its_known_indications():
    """Ingested records rarely say why a drug was given: any condition it treats must then be active."""
    record = valid_record() + [Event(1, at(56.1), 4, LISINOPRIL), Event(1, at(56.1), 4, METFORMIN)]
    violations = find_violations(events_frame(record))
    assert violations["code"].to_list() == [METFORMIN]


def test_an_indication_may_be_named_by_its_icd10cm_code():
    assert rules_found(valid_record() + [Event(1, at(56.1), 4, LISINOPRIL, text="ICD10CM/I10")]) == {}


def test_drug_ruled_out_by_an_earlier_allergy_is_found():
    record = valid_record() + [Event(1, at(54), None, PENICILLIN_ALLERGY)]
    assert rules_found(record) == {"medication_contraindicated_by_allergy": 1}
    assert rules_found(valid_record() + [Event(1, at(58), None, PENICILLIN_ALLERGY)]) == {}  # allergy found later


def test_value_outside_physiological_bounds_is_found():
    record = valid_record() + [Event(1, at(56), None, "LOINC/8480-6", 400.0, "mm[Hg]")]
    assert rules_found(record) == {"value_out_of_bounds": 1}


def test_chronic_condition_recorded_again_while_active_is_found():
    assert rules_found(valid_record() + [Event(1, at(53), None, HYPERTENSION)]) == {"duplicate_active_condition": 1}


def test_chronic_condition_recorded_again_after_it_ended_is_valid():
    record = valid_record() + [Event(1, at(52), None, CONDITION_END, text=HYPERTENSION),
                               Event(1, at(53), None, HYPERTENSION)]
    assert rules_found(record) == {}


def test_visit_ending_before_it_starts_is_found():
    record = valid_record() + [Event(1, at(57), 3, visit_start_code("AMB")), Event(1, at(56.9), 3, VISIT_END)]
    assert rules_found(record) == {"visit_end_before_start": 1}


def test_overlapping_visits_are_found():
    record = valid_record() + [Event(1, at(55) + timedelta(minutes=10), 3, visit_start_code("AMB")),
                               Event(1, at(55) + timedelta(hours=2), 3, VISIT_END)]
    assert rules_found(record) == {"overlapping_visits": 1}


def test_violations_name_subject_time_and_code():
    record = valid_record(subject=5) + [Event(5, at(56), 4, METFORMIN, text=DIABETES)]
    row = find_violations(events_frame(record)).row(0, named=True)
    assert (row["subject_id"], row["time"], row["code"]) == (5, at(56), METFORMIN)
    assert DIABETES in row["detail"]


def test_every_rule_is_documented_and_a_mask_rule():
    assert set(MASK_RULES) <= set(RULES)
    assert all(RULES[rule] for rule in RULES)


def test_the_reference_simulator_breaks_no_rule():
    records = list(simulate(small_scenario(150), ReferenceSource()))
    events = events_frame(e for r in records for e in r.events)
    assert violation_counts(find_violations(events)) == {}


# --- the sampler mask -----------------------------------------------------------------------------
CODES = [HYPERTENSION, LISINOPRIL, METFORMIN, DIABETES, "SNOMED/72892002", "CVX/20", "LOINC/8867-4"]


def patient(sex: str = "M", age: float = 50.0, conditions: dict[str, float] | None = None,
            death_day: float | None = None) -> PatientState:
    return PatientState(1, sex, 0.0, 0.0, 1e6, death_day, None, conditions=conditions or {})


def allowed(p: PatientState, age: float = 50.0) -> dict[str, bool]:
    mask = RuleMask(CODES).allowed([p], age * 365.25)
    return dict(zip(CODES, mask[0].tolist()))


def test_mask_forbids_codes_of_the_other_sex():
    assert not allowed(patient("M"))["SNOMED/72892002"]
    assert allowed(patient("F"), age=30)["SNOMED/72892002"]


def test_mask_forbids_codes_outside_their_ages():
    assert allowed(patient(), age=2)["CVX/20"] and not allowed(patient(), age=50)["CVX/20"]


def test_mask_allows_a_drug_only_while_its_indication_is_active():
    assert not allowed(patient())[LISINOPRIL]
    assert allowed(patient(conditions={HYPERTENSION: float("inf")}))[LISINOPRIL]
    assert not allowed(patient(conditions={HYPERTENSION: 100.0}))[LISINOPRIL]


def test_mask_forbids_a_drug_the_patient_is_allergic_to():
    mask = RuleMask([PENICILLIN, AZITHROMYCIN])
    strep = patient(conditions={STREP: float("inf")})
    assert mask.allowed([strep], 50 * 365.25).tolist() == [[True, True]]
    strep.allergies.add(PENICILLIN_ALLERGY)
    assert mask.allowed([strep], 50 * 365.25).tolist() == [[False, True]]


def test_mask_forbids_an_active_chronic_condition_again():
    assert allowed(patient())[HYPERTENSION]
    assert not allowed(patient(conditions={HYPERTENSION: float("inf")}))[HYPERTENSION]


def test_mask_forbids_everything_after_death_and_before_birth():
    assert not any(allowed(patient(death_day=40 * 365.25)).values())
    assert not any(allowed(patient(), age=-1).values())


def test_mask_through_a_visit_allows_only_what_both_of_its_ends_allow():
    mask = RuleMask(CODES)
    hypertensive = patient(conditions={HYPERTENSION: 50 * 365.25 + 0.5}, death_day=60 * 365.25)
    start, end = 50 * 365.25, 50 * 365.25 + 1.0  # the hypertension ends within the visit's day
    through = mask.allowed([hypertensive], start, until=end)
    assert through.tolist() == (mask.allowed([hypertensive], start) & mask.allowed([hypertensive], end)).tolist()
    assert mask.allowed([hypertensive], start)[0, CODES.index(LISINOPRIL)] and not through[0, CODES.index(LISINOPRIL)]


def test_mask_takes_one_day_per_patient():
    patients = [patient(), patient()]
    mask = RuleMask(CODES).allowed(patients, [2 * 365.25, 50 * 365.25])
    assert mask[:, CODES.index("CVX/20")].tolist() == [True, False]


def test_mask_agrees_with_the_checker_on_a_simulated_cohort():
    """Every code the reference simulator recorded was allowed by the mask at that moment."""
    records = list(simulate(small_scenario(20), ReferenceSource()))
    codes = sorted({e.code for r in records for e in r.events})
    mask = RuleMask(codes)
    def day_of(event):
        return (event.time - to_datetime(0)).total_seconds() / 86400

    for record in records:
        deaths = [day_of(e) for e in record.events if e.code == DEATH]
        state = patient(record.patient.sex, death_day=deaths[0] if deaths else None)
        state.birth_day = day_of(record.events[0])
        for event in record.events:
            day = day_of(event)
            if event.code == CONDITION_END:
                state.conditions[event.text] = day
                continue
            assert mask.allowed([state], day)[0, codes.index(event.code)], (record.subject_id, event)
            if event.code.startswith("SNOMED/") and event.code in mask._condition_column:
                state.conditions[event.code] = np.inf


def test_generated_cohort_counts_violations_by_rule_in_the_manifest(tmp_path):
    class ProstateForAll(TrajectorySource):
        """Diagnoses prostate cancer in everyone, women too (a rule no chart keeper repairs for a source)."""

        def admit(self, patient):
            return []

        def next_visits(self, patients):
            return [None if p.now > p.entry_day else
                    Visit(p.now + 1, "AMB", 0.01, [Fact(PROSTATE_CANCER)]) for p in patients]

    summary = generate(small_scenario(6, **{"output.formats": ("events",)}), tmp_path, source=ProstateForAll())
    events = pl.read_parquet(tmp_path / "events" / "*.parquet")
    women = events.filter(pl.col("code") == SEX_FEMALE)["subject_id"]
    wrong = events.filter((pl.col("code") == PROSTATE_CANCER) & pl.col("subject_id").is_in(women.implode())).height
    assert wrong and summary.violations == {"sex_specific_code": wrong}
    assert orjson.loads((tmp_path / "manifest.json").read_bytes())["violations"] == {"sex_specific_code": wrong}


def test_checker_reads_ingested_real_records(refdata):
    """Real records break rules too (Synthea's own drugs without listed indications, visits that
    overlap); the checker names them by rule and subject without failing on unfamiliar codes."""
    from trajsim.ingest import read_events

    events = read_events("synthea-csv", refdata / "synthea_csv_dbt27" / "csv")
    violations = find_violations(events)
    assert set(violation_counts(violations)) <= set(RULES)
    assert violations.height > 0
    assert set(violations["subject_id"].to_list()) <= set(events["subject_id"].to_list())
