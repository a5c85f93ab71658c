"""Acute care and deaths as a user sees them: ED visits for what people go to the ED for (a sore
throat or a UTI mostly at the office), hospital stays, acute events through the ED with their
treatment, every death with a cause, some of them in hospital."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from tests.conftest import ScriptedSource, small_scenario
from tests.test_rules import HYPERTENSION, at, rules_found, valid_record
from trajsim.clock import DAYS_PER_YEAR
from trajsim.engine import Fact, ReferenceSource, TrajectorySource, Visit, simulate
from trajsim.engine.acute import SICK_VISIT
from trajsim.events import DEATH, MEDICATION_END, VISIT_END, Event, events_frame, visit_start_code
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.acute import (
    EMERGENCY_ADMISSION, EMERGENCY_VISIT, HOSPICE_CARE, OBSERVATION_STAY, admissions, event_rate, event_rates, treatments,
)
from trajsim.rules import acute, find_violations
from trajsim.vocab import domain_of, load_vocabulary

APPENDICITIS, APPENDECTOMY, OFFICE_VISIT = "SNOMED/74400008", "SNOMED/80146002", "SNOMED/185345009"
ELDERLY = ({"min": 80, "max": 95, "weight": 1.0},)


def cohort(size: int, seed: int, **changes: object) -> pl.DataFrame:
    return events_frame(e for r in simulate(small_scenario(size, seed=seed, **changes), ReferenceSource())
                        for e in r.events)


@pytest.fixture(scope="module")
def adults() -> pl.DataFrame:
    return cohort(300, seed=21)


@pytest.fixture(scope="module")
def elderly() -> pl.DataFrame:
    """Old enough that many die within the period."""
    return cohort(200, seed=22, **{"population.age_mix": ELDERLY})


def person_years(events: pl.DataFrame) -> float:
    """Years from each patient's first visit to their last event, summed."""
    spans = events.group_by("subject_id").agg(span=pl.col("time").max() - pl.col("time").filter(
        pl.col("code").str.starts_with("TRAJSIM/visit/")).min())
    return spans["span"].dt.total_seconds().sum() / (DAYS_PER_YEAR * 86_400)


def per_person_year(events: pl.DataFrame, encounter_class: str) -> float:
    return events.filter(pl.col("code") == visit_start_code(encounter_class)).height / person_years(events)


US_ED_VISITS = 0.43  # per person-year, all ages and reasons (NHAMCS 2019, acute_rates.csv)
MINOR_ILLNESS = ("SNOMED/195662009", "SNOMED/68566005", "SNOMED/10509002")  # pharyngitis, UTI, bronchitis


def test_minor_illness_is_mostly_seen_at_the_office_and_stays_come_at_published_rates(adults):
    # about 2 of 12.5 million UTI visits and 1.5 of 12 million sore-throat visits a year are to EDs
    # (emergency_reasons.csv); with injuries by age and the commonest ED reasons the ED rate nears
    # NHAMCS's 0.43 per person-year (the reasons modelled are most, not all, of US ED visits);
    # HCUP 2018: about 0.10 stays, of which these reasons make about half
    classes = (adults.filter(pl.col("code").str.starts_with("TRAJSIM/visit/"))
               .select("subject_id", "encounter_id", emergency=pl.col("code") == visit_start_code("EMER")))
    minor = adults.filter(pl.col("code").is_in(MINOR_ILLNESS)).join(classes, on=["subject_id", "encounter_id"])
    assert minor.height > 50 and 0.03 < minor["emergency"].mean() < 0.35
    assert 0.5 * US_ED_VISITS < per_person_year(adults, "EMER") < 1.5 * US_ED_VISITS
    assert 0.03 < per_person_year(adults, "IMP") < 0.2


def test_no_source_breaks_an_acute_care_rule(adults, elderly):
    for events in (adults, elderly):
        found = find_violations(events)
        assert found.filter(pl.col("rule").is_in(list(acute.RULES))).is_empty()


def test_every_death_has_a_cause_and_some_die_in_hospital(elderly):
    deaths = elderly.filter(pl.col("code") == DEATH)
    assert deaths.height > 30 and deaths["text"].null_count() == 0
    assert deaths["text"].n_unique() > 2  # the conditions that drove the hazard, not one code for all
    in_encounter = deaths["encounter_id"].is_not_null().mean()
    assert 0.15 < in_encounter < 0.6  # US about 30% in hospital (Cross and Warraich 2019)
    visits = elderly.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).select("subject_id", visit="time")
    seen = (deaths.join(visits, on="subject_id")
            .filter(pl.col("visit").is_between(pl.col("time") - timedelta(days=30), pl.col("time")))
            ["subject_id"].n_unique())
    assert seen / deaths.height > 0.6


class OfficeAppendicitis(TrajectorySource):
    """Proposes one office visit with appendicitis, as a learned model may."""

    def __init__(self) -> None:
        self.proposed: set[int] = set()

    def next_visits(self, patients):
        visits = [None if p.subject_id in self.proposed else Visit(p.now + 30, "AMB", 0.02, [
            Fact(OFFICE_VISIT), Fact(APPENDICITIS)]) for p in patients]
        self.proposed |= {p.subject_id for p in patients}
        return visits


def test_an_office_visit_with_appendicitis_becomes_an_ed_visit_and_an_appendectomy():
    records = list(simulate(small_scenario(5, seed=3, **{"population.age_mix": ({"min": 12, "max": 18, "weight": 1.0},)}),
                            OfficeAppendicitis()))
    for record in records:
        onset = next(e for e in record.events if e.code == APPENDICITIS)
        start = next(e for e in record.events if e.encounter_id == onset.encounter_id)
        assert start.code == visit_start_code("EMER")
        surgery = next(e for e in record.events if e.code == APPENDECTOMY)
        admission = next(e for e in record.events if e.encounter_id == surgery.encounter_id)
        assert admission.code == visit_start_code("IMP") and surgery.time - onset.time < timedelta(days=1)


def test_the_rules_catch_appendicitis_in_the_office_untreated_and_a_death_without_cause():
    record = valid_record() + [
        Event(1, at(58), 3, visit_start_code("AMB")),
        Event(1, at(58), 3, APPENDICITIS),
        Event(1, at(58), 3, VISIT_END),
        Event(1, at(59), None, DEATH),
    ]
    assert rules_found(record) == {"acute_event_in_office_visit": 1, "acute_condition_untreated": 1,
                                   "death_without_cause": 1}


def test_appendicitis_treated_through_the_ed_breaks_no_rule():
    record = valid_record() + [
        Event(1, at(58), 3, visit_start_code("EMER")),
        Event(1, at(58), 3, "LOINC/8867-4", 96.0, "/min"),  # triage's heart rate
        Event(1, at(58), 3, APPENDICITIS),
        Event(1, at(58) + timedelta(hours=3), 3, VISIT_END),
        Event(1, at(58) + timedelta(hours=3), 4, visit_start_code("IMP")),
        Event(1, at(58) + timedelta(hours=3), 4, APPENDECTOMY),
        Event(1, at(58) + timedelta(days=2), 4, "SNOMED/430193006"),  # his lisinopril reconciled at discharge
        Event(1, at(58) + timedelta(days=2), 4, VISIT_END),
        Event(1, at(59), None, DEATH, text=APPENDICITIS),
    ]
    assert rules_found(record) == {}


def test_every_treatment_is_a_procedure_for_a_known_condition():
    knowledge = load_knowledge()
    for treatment in treatments().values():
        assert treatment.condition in knowledge.conditions
        assert treatment.procedure is None or domain_of(treatment.procedure) == "procedure"
        assert 0 <= treatment.admitted + treatment.observed <= 1
    assert set(event_rates()) - {EMERGENCY_VISIT} <= set(knowledge.conditions)


KNEE_OA, KNEE_REPLACEMENT, HEART_FAILURE = "SNOMED/239873007", "SNOMED/609588000", "SNOMED/84114007"


def test_knee_replacements_are_planned_stays_at_most_one_per_knee(elderly):
    surgery = elderly.filter(pl.col("code") == KNEE_REPLACEMENT)
    assert surgery.height > 0
    stays = elderly.filter(pl.col("encounter_id").is_in(surgery["encounter_id"].implode()))
    starts = stays.filter(pl.col("code").str.starts_with("TRAJSIM/visit/"))
    assert (starts["code"] == visit_start_code("IMP")).all() and (starts["time"].dt.weekday() <= 5).all()
    assert stays.filter(pl.col("code") == "SNOMED/183495009").height == surgery.height  # non-urgent orthopedic
    with_oa = elderly.filter(pl.col("code") == KNEE_OA)["subject_id"].unique()
    assert surgery["subject_id"].is_in(with_oa.implode()).all()
    assert surgery.group_by("subject_id").len()["len"].max() <= 2


def test_heart_failure_brings_admissions_through_the_ed_with_a_natriuretic_peptide(elderly):
    failing = elderly.filter(pl.col("code") == HEART_FAILURE)["subject_id"].unique()
    with_hf = elderly.filter(pl.col("subject_id").is_in(failing.implode()))
    without = elderly.filter(~pl.col("subject_id").is_in(failing.implode()))
    assert failing.len() >= 5
    # HCUP: about 0.17 stays a year more; the sample of about 30 patients with heart failure is small
    assert per_person_year(with_hf, "IMP") > per_person_year(without, "IMP") + 0.08
    ed_labs = with_hf.filter(pl.col("code") == "LOINC/33762-6").join(
        with_hf.filter(pl.col("code") == visit_start_code("EMER")).select("encounter_id"), on="encounter_id")
    assert ed_labs.height > 0 and ed_labs["numeric_value"].null_count() == 0


def test_every_admission_is_for_a_known_condition_with_known_codes():
    knowledge, vocabulary = load_knowledge(), load_vocabulary()
    for admission in admissions():
        assert admission.condition in knowledge.conditions  # a chronic condition, or an episode (depression)
        assert domain_of(admission.admission) == "encounter_type"
        assert admission.procedure is None or domain_of(admission.procedure) == "procedure"
        assert admission.lab is None or admission.lab in knowledge.measurements
        assert all(code in vocabulary for code in (admission.admission, admission.procedure, admission.lab) if code)


def test_a_record_from_birth_starts_with_the_newborn_stay_and_sepsis_is_admitted(elderly):
    newborns = cohort(20, seed=23, **{"population.age_mix": ({"min": 0, "max": 1, "weight": 1.0},),
                                      "period.start": "birth"})
    first = (newborns.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).sort("time")
             .group_by("subject_id").first())
    births = newborns.filter(pl.col("code") == "TRAJSIM/birth").select("subject_id", birth="time")
    first = first.join(births, on="subject_id")
    assert first.height == 20 and (first["code"] == visit_start_code("IMP")).all() and (first["time"] == first["birth"]).all()
    sepsis = elderly.filter(pl.col("code") == "SNOMED/91302008").join(
        elderly.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).select("subject_id", "encounter_id", visit="code"),
        on=["subject_id", "encounter_id"])
    assert sepsis.height > 0 and (sepsis["visit"] == visit_start_code("IMP")).all()  # HCUP: the commonest stay over 65


def test_a_decedent_seen_in_the_last_month_is_seen_for_what_drives_the_death_and_referred_to_hospice(elderly):
    hospice = elderly.filter(pl.col("code") == HOSPICE_CARE).select("subject_id", "encounter_id", referred="time")
    assert hospice.height > 5
    visit_types = elderly.filter(pl.col("code") == SICK_VISIT).select("subject_id", "encounter_id", "text")
    deaths = elderly.filter(pl.col("code") == DEATH).select("subject_id", died="time")
    referred = hospice.join(visit_types, on=["subject_id", "encounter_id"]).join(deaths, on="subject_id")
    assert referred.height == hospice.height
    assert referred["text"].map_elements(domain_of, return_dtype=pl.String).eq("condition").all()
    assert ((referred["died"] - referred["referred"]) <= timedelta(days=31)).all()


def test_the_rules_catch_a_hospice_referral_followed_by_a_year_without_death():
    referral = [Event(1, at(57), 3, visit_start_code("AMB")), Event(1, at(57), 3, SICK_VISIT, text=HYPERTENSION),
                Event(1, at(57), 3, HOSPICE_CARE), Event(1, at(57) + timedelta(minutes=30), 3, VISIT_END)]
    later = [Event(1, at(58.5), 4, visit_start_code("AMB")), Event(1, at(58.5), 4, SICK_VISIT, text=HYPERTENSION),
             Event(1, at(58.5) + timedelta(minutes=30), 4, VISIT_END)]
    assert rules_found(valid_record() + referral + [Event(1, at(57.2), None, DEATH, text=HYPERTENSION)]) == {}
    assert rules_found(valid_record() + referral) == {}  # the record stops within the year: not judged
    assert rules_found(valid_record() + referral + later) == {"hospice_without_death": 1}
    assert rules_found(valid_record() + referral + [Event(1, at(59), None, DEATH, text=HYPERTENSION)]) == {
        "hospice_without_death": 1}


class HospiceEveryYear(TrajectorySource):
    """Refers every patient to hospice at a yearly visit, as the shipped model did for some who then
    lived for years."""

    def next_visits(self, patients):
        return [Visit(p.now + 365, "AMB", 0.02, [Fact(SICK_VISIT), Fact(HOSPICE_CARE)]) for p in patients]


def test_a_hospice_referral_is_the_engines_own_at_the_visit_before_a_death():
    events = events_frame(e for r in simulate(small_scenario(20, seed=4, **{"population.age_mix": (
        {"min": 70, "max": 90, "weight": 1.0},)}), HospiceEveryYear()) for e in r.events)
    assert events.filter(pl.col("code") == SICK_VISIT).height >= 100  # the visits stay
    hospice = events.filter(pl.col("code") == HOSPICE_CARE).select("subject_id", referred="time")
    deaths = events.filter(pl.col("code") == DEATH).select("subject_id", died="time")
    referred = hospice.join(deaths, on="subject_id", how="left")
    assert referred["died"].is_not_null().all()
    assert ((referred["died"] - referred["referred"]) <= timedelta(days=31)).all()
    assert "hospice_without_death" not in set(find_violations(events)["rule"])


MYOCARDIAL_INFARCTION, STROKE = "SNOMED/22298006", "SNOMED/230690007"
STATINS = ("RXNORM/259255", "RXNORM/312961")  # atorvastatin 80 mg (high intensity), simvastatin 20 mg
ASPIRIN, CLOPIDOGREL, METOPROLOL, CARVEDILOL = "RXNORM/243670", "RXNORM/309362", "RXNORM/866427", "RXNORM/200033"


def _taking_after(events: pl.DataFrame, event: str, drugs: tuple[str, ...], days: float) -> pl.Series:
    """For each patient whose `event` is dated in an ED visit, whether a drug of `drugs` is taken
    `days` later (ordered by then, in the ED visit, the stay or before, and not stopped since)."""
    emergency = events.filter(pl.col("code") == visit_start_code("EMER")).select("subject_id", "encounter_id")
    onsets = (events.filter(pl.col("code") == event).join(emergency, on=["subject_id", "encounter_id"])
              .group_by("subject_id").agg(discharged=pl.col("time").min() + timedelta(days=days)))
    stop = pl.col("code") == MEDICATION_END
    course = events.filter(pl.col("code").is_in(drugs) | (stop & pl.col("text").is_in(drugs))).select(
        "subject_id", "time", "code", drug=pl.when(stop).then("text").otherwise("code"))
    taken = (onsets.join(course, on="subject_id").filter(pl.col("time") <= pl.col("discharged"))
             .group_by("subject_id", "drug").agg(taken=pl.col("code").sort_by("time").last() != MEDICATION_END)
             .group_by("subject_id").agg(pl.col("taken").any()))
    return onsets.join(taken, on="subject_id", how="left")["taken"].fill_null(False)


def test_every_heart_attack_and_stroke_leaves_hospital_on_secondary_prevention(elderly):
    # 2013 ACCF/AHA STEMI and 2014 NSTE-ACS guidelines: aspirin, a P2Y12 inhibitor, a high-intensity
    # statin and a beta-blocker from the stay on; AHA/ASA 2021: an antiplatelet and a statin after stroke
    for drugs in (STATINS, (ASPIRIN,), (METOPROLOL, CARVEDILOL), (CLOPIDOGREL,)):
        treated = _taking_after(elderly, MYOCARDIAL_INFARCTION, drugs, days=15)
        assert treated.len() >= 5 and treated.all(), drugs
    for drugs in (STATINS, (ASPIRIN, CLOPIDOGREL)):
        treated = _taking_after(elderly, STROKE, drugs, days=15)
        assert treated.len() >= 5 and treated.all(), drugs


def test_the_rules_catch_a_heart_attack_discharged_without_statin_aspirin_or_beta_blocker():
    record = valid_record() + [
        Event(1, at(58), 3, visit_start_code("EMER")),
        Event(1, at(58), 3, "LOINC/8867-4", 96.0, "/min"),
        Event(1, at(58), 3, MYOCARDIAL_INFARCTION),
        Event(1, at(58) + timedelta(hours=3), 3, VISIT_END),
        Event(1, at(58) + timedelta(hours=3), 4, visit_start_code("IMP")),
        Event(1, at(58) + timedelta(hours=3), 4, "SNOMED/415070008"),  # PCI
        Event(1, at(58) + timedelta(hours=3), 4, CLOPIDOGREL, text=MYOCARDIAL_INFARCTION),
        Event(1, at(58) + timedelta(days=4), 4, VISIT_END),
    ]
    assert rules_found(record) == {"statin_missing_after_myocardial_infarction": 1,
                                   "aspirin_missing_after_myocardial_infarction": 1,
                                   "beta_blocker_missing_after_myocardial_infarction": 1}


FALL_INJURIES = ("SNOMED/125667009", "SNOMED/82271004", "SNOMED/370247008", "SNOMED/33737001",
                 "SNOMED/359817006", "SNOMED/16114001")  # contusion, head injury, facial laceration, rib, hip, ankle fractures


def _injury_visits_per_person_year(events: pl.DataFrame) -> float:
    emergency = events.filter(pl.col("code") == visit_start_code("EMER")).select("subject_id", "encounter_id")
    injured = events.filter(pl.col("code").is_in(FALL_INJURIES)).join(emergency, on=["subject_id", "encounter_id"])
    return injured.select("subject_id", "encounter_id").unique().height / person_years(events)


def test_older_adults_come_to_the_ed_after_falls_most(adults, elderly):
    # CDC: about 3 million ED visits a year for falls of the 55 million Americans 65 and over, rising
    # with age; the injuries a fall brings (contusions, head injuries, fractures) come on their own day
    old, everyone = _injury_visits_per_person_year(elderly), _injury_visits_per_person_year(adults)
    assert old > 0.05 and old > 1.5 * everyone
    treated = elderly.filter(pl.col("code") == "SNOMED/370247008").select("subject_id", "encounter_id").join(
        elderly.filter(pl.col("code") == "SNOMED/288086009"), on=["subject_id", "encounter_id"], how="anti")
    assert treated.is_empty()  # every facial laceration is sutured at its visit


CHEST_PAIN, OBSERVATION = "SNOMED/29857009", OBSERVATION_STAY


def test_a_third_of_chest_pain_in_the_ed_is_kept_under_observation_for_about_a_day(adults):
    # HCUP 2013-2014: 313,000 observation stays from the ED against 638,000 treat-and-release visits
    # for nonspecific chest pain; CMS: observation nearly always ends within 48 hours
    visits = adults.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).select(
        "subject_id", "encounter_id", start="time", visit="code")
    ends = adults.filter(pl.col("code") == VISIT_END).select("subject_id", "encounter_id", end="time")
    pain = adults.filter(pl.col("code") == CHEST_PAIN).join(visits, on=["subject_id", "encounter_id"])
    assert pain.height > 20 and (pain["visit"] == visit_start_code("EMER")).all()
    observed = (adults.filter((pl.col("code") == OBSERVATION) & (pl.col("text") == CHEST_PAIN))
                .join(visits, on=["subject_id", "encounter_id"]).join(ends, on=["subject_id", "encounter_id"]))
    assert (observed["visit"] == visit_start_code("IMP")).all()
    assert 0.15 < observed.height / pain.height < 0.5
    assert ((observed["end"] - observed["start"]) <= timedelta(days=2)).all()


HEART_FAILURE_STAY, EMERGENCY_STAY = "SNOMED/84114007", EMERGENCY_ADMISSION


def test_the_rules_catch_a_stay_for_a_condition_the_patient_does_not_have():
    stay = [Event(1, at(58), 3, visit_start_code("IMP")),
            Event(1, at(58), 3, EMERGENCY_STAY, text=HEART_FAILURE_STAY),
            Event(1, at(60), 3, VISIT_END)]
    assert rules_found(valid_record() + stay) == {"visit_for_unrecorded_condition": 1}
    diagnosed = [Event(1, at(57), 2, HEART_FAILURE_STAY)]  # heart failure on record before the stay: valid
    assert "visit_for_unrecorded_condition" not in rules_found(valid_record() + diagnosed + stay)


def test_every_emergency_stay_names_a_condition_on_the_chart(adults, elderly):
    # HCUP counts stays by principal diagnosis: a stay from the ED is for what the ED found
    for events in (adults, elderly):
        stays = events.filter(pl.col("code") == visit_start_code("IMP")).select("subject_id", "encounter_id")
        types = events.filter(pl.col("code") == EMERGENCY_STAY).join(stays, on=["subject_id", "encounter_id"])
        named = types.filter(pl.col("text").is_not_null())
        assert named.height > 0.4 * types.height and named["text"].n_unique() > 5
    assert find_violations(adults).filter(pl.col("rule") == "visit_for_unrecorded_condition").is_empty()


NAUSEA, FEVER, SYNCOPE, ABDOMINAL_PAIN = "SNOMED/16932000", "SNOMED/386661006", "SNOMED/271594007", "SNOMED/21522001"
GLUCOSE, LEUKOCYTES, URINE_LEUKOCYTE_ESTERASE, ECG, TEMPERATURE = (
    "LOINC/2339-0", "LOINC/6690-2", "LOINC/5799-2", "SNOMED/29303009", "LOINC/8310-5")


def test_the_new_ed_reasons_come_with_the_workup_a_clinician_orders(adults):
    # nausea and vomiting: electrolytes and glucose (Scorza 2007); fever: a blood count and a
    # urinalysis, and a temperature of 38 C or more (Hamilton and John 2013); syncope: an ECG (ACC/AHA/HRS 2017)
    visits = adults.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).select("subject_id", "encounter_id", visit="code")
    for reason, workup in ((NAUSEA, (GLUCOSE,)), (FEVER, (LEUKOCYTES, URINE_LEUKOCYTE_ESTERASE)), (SYNCOPE, (ECG,))):
        seen = adults.filter(pl.col("code") == reason).join(visits, on=["subject_id", "encounter_id"])
        assert seen.height >= 3 and (seen["visit"] == visit_start_code("EMER")).all(), reason
        for code in workup:
            done = adults.filter(pl.col("code") == code).select("subject_id", "encounter_id").unique()
            assert seen.join(done, on=["subject_id", "encounter_id"], how="anti").is_empty(), (reason, code)
    fevers = adults.filter(pl.col("code") == FEVER).select("subject_id", "encounter_id")
    temperatures = adults.filter(pl.col("code") == TEMPERATURE).join(fevers, on=["subject_id", "encounter_id"])
    assert temperatures["numeric_value"].median() >= 38.0


def test_abdominal_pain_in_the_ed_is_sometimes_observed_or_admitted_for_it(adults):
    # about a tenth admitted and some observed (acute_care.csv); the stay names the pain as its reason
    pain = adults.filter(pl.col("code") == ABDOMINAL_PAIN).select("subject_id", "encounter_id").unique()
    kept = adults.filter(pl.col("code").is_in([EMERGENCY_STAY, OBSERVATION]) & (pl.col("text") == ABDOMINAL_PAIN))
    assert pain.height > 30 and 0.05 < kept.height / pain.height < 0.35
    assert kept.filter(pl.col("code") == EMERGENCY_STAY).height > 0


def test_ed_visits_are_drawn_at_the_nhamcs_rate_for_every_age_and_sex():
    # NHAMCS 2019 (MMWR 2022;71:1350): highest under 1 and from 75, lowest at 45-74; women more than men
    for sex in ("F", "M"):
        rates = {age: event_rate(EMERGENCY_VISIT, sex, age) for age in (0.5, 10, 30, 60, 80, 105)}
        assert all(0.3 < rate < 1.5 for rate in rates.values())
        assert rates[0.5] > rates[80] > rates[30] > rates[60]
    assert event_rate(EMERGENCY_VISIT, "F", 30) > event_rate(EMERGENCY_VISIT, "M", 30)


def test_an_observation_stay_starts_as_the_ed_visit_ends(adults, elderly):
    """An observation stay continues the ED visit that sent the patient, even when a planned visit
    (a prenatal one) was due before the stay would otherwise be taken."""
    for events in (adults, elderly):
        starts = events.filter(pl.col("code") == OBSERVATION).select("subject_id", "time")
        ed = events.filter(pl.col("code") == visit_start_code("EMER")).select("subject_id", "encounter_id")
        ed_ends = events.filter(pl.col("code") == VISIT_END).join(ed, on=["subject_id", "encounter_id"])
        unsent = starts.join(ed_ends.select("subject_id", "time"), on=["subject_id", "time"], how="anti")
        assert starts.height > 10 and unsent.height == 0, unsent


def _stay(encounter: int, start, hours: float, kind: str) -> list[Event]:
    """A stay with its type and a reconciliation of the lisinopril the patient takes."""
    end = start + timedelta(hours=hours)
    return [Event(1, start, encounter, visit_start_code("IMP")), Event(1, start, encounter, kind),
            Event(1, end, encounter, "SNOMED/430193006"), Event(1, end, encounter, VISIT_END)]


def test_the_rules_catch_an_observation_past_48_hours_and_a_stay_that_starts_as_another_ends():
    first = at(57)
    assert rules_found(valid_record() + _stay(3, first, 30, OBSERVATION)) == {}
    assert rules_found(valid_record() + _stay(3, first, 60, OBSERVATION)) == {"observation_too_long": 1}
    assert rules_found(valid_record() + _stay(3, first, 60, EMERGENCY_ADMISSION)) == {}
    again = _stay(4, first + timedelta(hours=30, minutes=20), 48, EMERGENCY_ADMISSION)
    assert rules_found(valid_record() + _stay(3, first, 30, OBSERVATION) + again) == {"stay_after_stay": 1}
    later = _stay(4, first + timedelta(days=20), 48, EMERGENCY_ADMISSION)
    assert rules_found(valid_record() + _stay(3, first, 30, OBSERVATION) + later) == {}


TROPONIN = "LOINC/89579-7"


def _stays_source(patient, n: int) -> Visit | None:
    """An ED visit with a heart attack (which the emergency keeper admits), then the source's own
    admission proposed during the keeper's stay; a month later an observation stay the source keeps
    for three days and then the source's admission proposed inside it; two months later a stay and
    another half an hour after it, as learned models write them."""
    day = patient.entry_day + 200
    return {1: Visit(day, "EMER", 0.1, [Fact(MYOCARDIAL_INFARCTION)]),
            2: Visit(day + 0.5, "IMP", 4.0, [Fact(EMERGENCY_ADMISSION), Fact(TROPONIN, 1.0, 0.8, "ng/mL")]),
            3: Visit(day + 30, "IMP", 3.0, [Fact(OBSERVATION)]),
            4: Visit(day + 31, "IMP", 5.0, [Fact(EMERGENCY_ADMISSION), Fact(TROPONIN, 1.0, 0.01, "ng/mL")]),
            5: Visit(day + 90, "IMP", 2.0, [Fact(EMERGENCY_ADMISSION)]),
            6: Visit(day + 92.02, "IMP", 1.0, [Fact(EMERGENCY_ADMISSION)])}.get(n)  # half an hour after it ends


def test_a_stay_a_source_proposes_during_another_goes_on_with_it_and_a_long_observation_is_an_admission():
    scenario = small_scenario(8, seed=5, **{"population.age_mix": ({"min": 55, "max": 70, "weight": 1.0},)})
    events = events_frame(e for r in simulate(scenario, ScriptedSource(_stays_source)) for e in r.events)
    stays = events.filter(pl.col("code") == visit_start_code("IMP")).select("subject_id", "encounter_id", start="time")
    ends = events.filter(pl.col("code") == VISIT_END).select("subject_id", "encounter_id", end="time")
    stays = stays.join(ends, on=["subject_id", "encounter_id"]).sort("subject_id", "start")
    alive = events.filter(pl.col("code") == DEATH).is_empty()
    assert stays.group_by("subject_id").len()["len"].min() == 3 or not alive  # three stays, not six (the keeper may add its own)
    first = stays.group_by("subject_id").first()
    assert ((first["end"] - first["start"]) >= timedelta(days=4)).all()  # the source's admission went on with the keeper's
    kinds = events.filter(pl.col("code").is_in([OBSERVATION, EMERGENCY_ADMISSION])).join(
        stays, on=["subject_id", "encounter_id"])
    assert kinds.filter(pl.col("code") == OBSERVATION).is_empty()  # the three-day observation became an admission
    troponins = events.filter(pl.col("code") == TROPONIN).join(stays, on=["subject_id", "encounter_id"], how="anti")
    assert troponins.is_empty()  # each source stay's result is in the one stay
    found = set(find_violations(events)["rule"])
    assert not found & {"stay_after_stay", "observation_too_long", "duplicate_procedure"}, found


def test_a_stay_that_goes_on_records_no_second_type_procedure_or_reading_at_one_time():
    from tests.test_episodes import patient
    from trajsim.engine.patient import PatientRecord

    record = PatientRecord(patient(age=60.0))
    start = record.patient.now
    glucose, reconciliation = Fact("LOINC/2339-0", 2.0, 133.0, "mg/dL"), Fact("SNOMED/430193006", 2.0)
    record.add_visit(Visit(start, "IMP", 2.0, [Fact(OBSERVATION), glucose, reconciliation]))
    assert record.in_stay(start + 2.0) and record.in_stay(start + 2.02) and not record.in_stay(start + 2.1)
    record.add_visit(Visit(start + 2.0, "IMP", 1.5, [Fact(EMERGENCY_ADMISSION), Fact("LOINC/2339-0", 0.0, 138.0, "mg/dL"),
                                                     Fact("SNOMED/430193006", 1.5), Fact("LOINC/2339-0", 1.0, 120.0, "mg/dL")]))
    codes = [e.code for e in record.events]
    assert codes.count(visit_start_code("IMP")) == 1 and codes.count(VISIT_END) == 1
    assert codes.count("SNOMED/430193006") == 1 and codes.count("LOINC/2339-0") == 2  # 133 at 48 h, 120 a day later
    assert EMERGENCY_ADMISSION in codes and OBSERVATION not in codes  # 3.5 days: an admission
    assert max(e.time for e in record.events if e.code == VISIT_END) == max(e.time for e in record.events)
