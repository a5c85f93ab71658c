"""Condition lifecycles: the `episodes` rules catch each kind of broken lifecycle in a hand-made
record, the engine's EpisodeKeeper and the sampler mask keep any source within the lifecycle
table, and the reference source's pregnancies run from conception to a delivery or a loss."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from tests.conftest import ScriptedSource, small_scenario
from tests.test_rules import BORN, at, rules_found, valid_record
from trajsim.clock import DAYS_PER_YEAR, day_number
from trajsim.engine import Fact, PatientState, ReferenceSource, Visit, simulate
from trajsim.engine.episodes import EpisodeKeeper
from trajsim.engine.pregnancy import (
    CESAREAN, NORMAL_DELIVERY, OBSTETRIC_ADMISSION, PRENATAL, first_visit_day, plan,
)
from trajsim.engine.source import ACTIVE
from trajsim.events import BIRTH, CONDITION_END, SEX_FEMALE, Event, events_frame
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.lifecycles import MISCARRIAGE, PREGNANCY, lifecycles, same_condition
from trajsim.rules import RuleMask, find_violations
from trajsim.rules.episodes import RULES
from trajsim.vocab import load_vocabulary

PHARYNGITIS, COVID, ADHD, HYPERTENSION = "SNOMED/195662009", "SNOMED/840539006", "SNOMED/192127007", "SNOMED/59621000"


def female_record() -> list[Event]:
    return [Event(1, BORN, None, BIRTH), Event(1, BORN, None, SEX_FEMALE), Event(1, at(35), None, HYPERTENSION)]


def test_the_lifecycle_table_is_cited_and_knows_its_codes():
    knowledge, vocabulary = load_knowledge(), load_vocabulary()
    lives = lifecycles(knowledge)
    assert all(code in vocabulary for code in lives)
    acute = [c for c in knowledge.conditions.values() if c.course == "acute"]
    assert all(lives[c.code].episodic and lives[c.icd10cm] is lives[c.code] for c in acute)
    assert lives[COVID].valid_from == day_number(datetime(2020, 1, 1).date())
    assert lives[PREGNANCY].max_days == 300 and lives[PREGNANCY].onset_age_min == 12


@pytest.mark.parametrize("rule, extra", [
    ("acute_episode_unresolved", [Event(1, at(52), None, PHARYNGITIS)]),
    ("acute_episode_too_long", [Event(1, at(58), 3, PHARYNGITIS),
                                Event(1, at(58) + timedelta(days=40), None, CONDITION_END, text=PHARYNGITIS)]),
    ("code_before_valid_date", [Event(1, datetime(2019, 6, 1), None, COVID),
                                Event(1, datetime(2019, 6, 15), None, CONDITION_END, text=COVID)]),
    ("onset_age_outside_window", [Event(1, at(45), None, ADHD)]),
])
def test_each_rule_catches_a_record_breaking_it(rule, extra):
    assert rule in RULES
    assert rules_found(valid_record() + extra) == {rule: 1}


def test_a_diagnosis_at_the_first_age_of_its_window_is_inside_it():
    """Obesity is diagnosed from 2 (CDC BMI-for-age): at two years of 365.25 days it is allowed, a day
    earlier it is not, for children born on any day (a year's fraction computed by dividing the
    seconds can round below 2)."""
    obesity, events, early = "SNOMED/414916001", [], []
    for child in range(1, 65):
        born = datetime(2015, 1, 1) + timedelta(days=child * 5)
        two = born + timedelta(days=2 * DAYS_PER_YEAR)
        events += [Event(child, born, None, BIRTH), Event(child, born, None, SEX_FEMALE), Event(child, two, None, obesity)]
        early += [Event(child, born, None, BIRTH), Event(child, born, None, SEX_FEMALE),
                  Event(child, two - timedelta(days=1), None, obesity)]
    assert rules_found(events) == {}
    assert rules_found(early) == {"onset_age_outside_window": 64}


def test_an_open_episode_at_the_end_of_a_record_is_not_judged():
    record = valid_record() + [Event(1, at(56) - timedelta(days=5), None, PHARYNGITIS)]  # the record ends 5 days later
    assert rules_found(record) == {}


def test_a_pregnancy_that_never_ends_or_lasts_too_long_is_caught():
    def born(days: int) -> list[Event]:
        return [Event(1, at(30) + timedelta(days=days), None, NORMAL_DELIVERY),
                Event(1, at(30) + timedelta(days=days), None, CONDITION_END, text=PREGNANCY)]

    never = female_record() + [Event(1, at(30), None, PREGNANCY)]
    long = female_record() + [Event(1, at(30), None, PREGNANCY), *born(320)]
    ended = female_record() + [Event(1, at(30), None, PREGNANCY), *born(270)]
    assert rules_found(never) == {"pregnancy_too_long": 1}
    assert rules_found(long) == {"pregnancy_too_long": 1}
    assert rules_found(ended) == {}


def test_obstetric_care_outside_a_pregnancy_and_a_pregnancy_ending_with_no_birth_are_caught():
    pregnant = [Event(1, at(30), 7, PREGNANCY)]
    end = Event(1, at(30) + timedelta(days=270), None, CONDITION_END, text=PREGNANCY)
    delivered = Event(1, at(30) + timedelta(days=270), 8, NORMAL_DELIVERY)
    assert rules_found(female_record() + pregnant + [Event(1, at(30) + timedelta(days=60), 9, PRENATAL), delivered, end]) == {}
    assert rules_found(female_record() + pregnant + [end]) == {"pregnancy_end_without_outcome": 1}
    postpartum = Event(1, at(30) + timedelta(days=300), 9, PRENATAL)
    assert rules_found(female_record() + pregnant + [delivered, end, postpartum]) == {"obstetric_care_outside_pregnancy": 1}
    assert rules_found(female_record() + [Event(1, at(31), 9, CESAREAN)]) == {"obstetric_care_outside_pregnancy": 1}
    fetal_heart = Event(1, at(30) + timedelta(days=120), 9, FETAL_HEART)
    assert rules_found(female_record() + pregnant + [fetal_heart, delivered, end]) == {}
    assert rules_found(female_record() + [Event(1, at(60), 9, FETAL_HEART)]) == {"obstetric_care_outside_pregnancy": 1}


def patient(age: float = 30.0, sex: str = "F", now: float | None = None) -> PatientState:
    birth = day_number(datetime(2020, 6, 1).date()) - age * DAYS_PER_YEAR
    return PatientState(1, sex, birth, birth, birth + 100 * DAYS_PER_YEAR, None, np.random.default_rng(3),
                        now=birth + age * DAYS_PER_YEAR if now is None else now)


def test_the_keeper_ends_an_acute_episode_a_source_leaves_open():
    p, keeper = patient(), EpisodeKeeper(load_knowledge())
    visit = Visit(p.now, "AMB", 0.02, [Fact("SNOMED/185345009"), Fact(PHARYNGITIS), Fact("RXNORM/313782", text=PHARYNGITIS)])
    keeper.vet(p, visit)
    assert [f.code for f in visit.facts] == ["SNOMED/185345009", PHARYNGITIS, "RXNORM/313782"]
    p.conditions[PHARYNGITIS] = ACTIVE
    again = Visit(p.now + 2, "AMB", 0.02, [Fact(PHARYNGITIS)])
    keeper.vet(p, again)
    assert again.facts == []  # not diagnosed again while the episode lasts
    assert keeper.between_visits(p, until=p.now + 1) == []
    (day, end), = keeper.between_visits(p, until=p.now + 365)
    assert end == Fact(CONDITION_END, text=PHARYNGITIS)
    assert p.now + 1 <= day <= p.now + lifecycles(load_knowledge())[PHARYNGITIS].max_days


def test_the_keeper_shortens_an_episode_proposed_too_long_and_drops_an_end_of_nothing():
    p, keeper = patient(), EpisodeKeeper(load_knowledge())
    visit = Visit(p.now, "AMB", 0.02, [Fact(PHARYNGITIS), Fact(CONDITION_END, offset_days=90, text=PHARYNGITIS),
                                       Fact(CONDITION_END, offset_days=3, text="SNOMED/65363002")])
    keeper.vet(p, visit)
    assert visit.facts == [Fact(PHARYNGITIS), Fact(CONDITION_END, offset_days=21, text=PHARYNGITIS)]


def test_an_end_proposed_before_its_episode_begins_is_dropped_and_the_keeper_ends_it():
    """An end a source writes outside visits on the morning of an afternoon diagnosis, or during a
    stay whose diagnosis comes days later, is not that episode's end."""
    p, keeper = patient(), EpisodeKeeper(load_knowledge())
    stay = Visit(p.now, "IMP", 10.0, [Fact("SNOMED/183452005"), Fact(PHARYNGITIS, offset_days=8)])
    keeper.vet(p, stay)
    p.conditions[PHARYNGITIS] = ACTIVE  # recorded with the stay
    early_end = Visit(p.now + 3, None, 0.0, [Fact(CONDITION_END, text=PHARYNGITIS)])
    keeper.vet(p, early_end)
    assert early_end.facts == []
    (day, end), = keeper.between_visits(p, until=p.now + 365)
    assert end.text == PHARYNGITIS and day > p.now + 8


def test_a_follow_up_with_nothing_to_follow_is_an_encounter_for_a_problem_and_the_rules_catch_one():
    """The shipped model wrote follow-up visits for children with no condition at all (81 of 2,948
    follow-ups in 300 patients)."""
    from trajsim.engine.pregnancy import PROBLEM_VISIT
    from trajsim.events import FOLLOW_UP_VISIT, VISIT_END, visit_start_code

    p, keeper = patient(), EpisodeKeeper(load_knowledge())
    empty = Visit(p.now, "AMB", 0.02, [Fact(FOLLOW_UP_VISIT), Fact("LOINC/8302-2", value=165.0, unit="cm")])
    keeper.vet(p, empty)
    assert [f.code for f in empty.facts] == [PROBLEM_VISIT, "LOINC/8302-2"]
    for kept in ([Fact(FOLLOW_UP_VISIT), Fact(PHARYNGITIS)], [Fact(FOLLOW_UP_VISIT)]):
        if len(kept) == 1:
            p.conditions[HYPERTENSION] = ACTIVE  # a condition to follow
        visit = Visit(p.now + 30, "AMB", 0.02, kept)
        keeper.vet(p, visit)
        assert visit.facts[0].code == FOLLOW_UP_VISIT
    follow_up = [Event(1, at(57), 3, visit_start_code("AMB")), Event(1, at(57), 3, FOLLOW_UP_VISIT),
                 Event(1, at(57) + timedelta(minutes=20), 3, VISIT_END)]
    assert rules_found(valid_record() + follow_up) == {}  # his hypertension
    healthy = [e for e in valid_record() if e.code != HYPERTENSION and e.text != HYPERTENSION]
    assert rules_found(healthy + follow_up) == {"follow_up_without_problem": 1}


def test_the_keeper_drops_covid_before_2020_and_a_first_diagnosis_outside_its_ages():
    knowledge = load_knowledge()
    p, keeper = patient(age=45, now=day_number(datetime(2019, 6, 1).date())), EpisodeKeeper(knowledge)
    drug = knowledge.medications["adhd"][0].code
    visit = Visit(p.now, "AMB", 0.02, [Fact(COVID), Fact(ADHD), Fact(drug, text=ADHD), Fact(HYPERTENSION)])
    keeper.vet(p, visit)
    assert visit.facts == [Fact(HYPERTENSION)]
    later = Visit(day_number(datetime(2021, 1, 5).date()), "AMB", 0.02, [Fact(COVID)])
    keeper.vet(p, later)
    assert later.facts == [Fact(COVID)]


def test_the_mask_forbids_covid_before_2020_and_first_diagnoses_outside_their_ages():
    codes = [COVID, ADHD, HYPERTENSION, PREGNANCY]
    mask = RuleMask(codes)
    adult = patient(age=45)
    child = patient(age=3)
    before, after = day_number(datetime(2019, 6, 1).date()), day_number(datetime(2021, 6, 1).date())
    assert mask.allowed([adult], before)[0].tolist() == [False, False, True, True]
    assert mask.allowed([adult], after)[0].tolist() == [True, False, True, True]
    assert mask.allowed([child], child.now)[0].tolist() == [True, True, False, False]  # no hypertension before 6
    adult.conditions[ADHD] = 10.0  # diagnosed in childhood and resolved: a recurrence is no first diagnosis
    assert mask.allowed([adult], after)[0][1]
    older = patient(age=52)
    assert not mask.allowed([older], older.now)[0][3]  # no pregnancy after 50


def test_a_pregnancy_plan_follows_the_prenatal_schedule():
    rng = np.random.default_rng(5)
    plans = [plan(rng, 20_000.0, first_visit_day(rng, 20_000.0)) for _ in range(2000)]
    losses = [p for p in plans if p.outcome == MISCARRIAGE]
    assert 0.06 < len(losses) / len(plans) < 0.10
    assert all(p.end_day - p.conception_day < 13 * 7 for p in losses)
    births = [p for p in plans if p.outcome != MISCARRIAGE]
    assert 0.28 < sum(p.outcome == CESAREAN for p in births) / len(births) < 0.36
    for pregnancy in births[:200]:
        days = [day for day, _ in pregnancy.visits]
        kinds = [kind for _, kind in pregnancy.visits]
        assert kinds[-1] == OBSTETRIC_ADMISSION and set(kinds[:-1]) == {PRENATAL}
        weeks = [(day - pregnancy.conception_day + 14) / 7 for day in days]
        gaps = np.diff(weeks[:-1])
        assert all(g == 4 for w, g in zip(weeks, gaps) if w >= 13 and w + g <= 28)
        assert all(g == 1 for w, g in zip(weeks, gaps) if w >= 36)
        assert pregnancy.end_day - pregnancy.conception_day <= 300
    preterm = np.mean([(p.visits[-1][0] - p.conception_day + 14) / 7 < 37 for p in births])
    assert 0.06 < preterm < 0.15


@pytest.fixture(scope="module")
def reference_events() -> pl.DataFrame:
    young_women = {"population.age_mix": ({"min": 18, "max": 45, "weight": 1.0},), "population.female_fraction": 1.0}
    records = simulate(small_scenario(200, seed=11, **young_women), ReferenceSource())
    return events_frame([event for record in records for event in record.events])


def test_reference_pregnancies_end_with_a_delivery_or_a_loss_after_prenatal_visits(reference_events):
    events = reference_events.sort("time")
    last = events.group_by("subject_id").agg(pl.col("time").max().alias("last"))
    ends = (events.filter((pl.col("code") == CONDITION_END) & (pl.col("text") == PREGNANCY))
            .select("subject_id", pl.col("time").alias("end")))
    pregnancies = (events.filter(pl.col("code") == PREGNANCY).select("subject_id", "time")
                   .join_asof(ends, left_on="time", right_on="end", by="subject_id", strategy="forward", check_sortedness=False)
                   .join(last, on="subject_id"))
    unended = pregnancies.filter(pl.col("end").is_null())
    assert (unended["last"] - unended["time"] < timedelta(days=300)).all()  # still pregnant when the record ends
    ended = pregnancies.filter(pl.col("end").is_not_null())
    assert ended.height >= 15 and ((ended["end"] - ended["time"]) <= timedelta(days=300)).all()
    outcomes = events.filter(pl.col("code").is_in([NORMAL_DELIVERY, CESAREAN, MISCARRIAGE]))
    prenatal = events.filter(pl.col("code") == PRENATAL)
    kinds = set()
    for start, subject, end in ended.select("time", "subject_id", "end").iter_rows():
        near = outcomes.filter((pl.col("subject_id") == subject) & ((pl.col("time") - end).abs() <= timedelta(days=3)))
        assert near.height == 1
        kinds.add(near["code"][0])
        if near["code"][0] != MISCARRIAGE:
            visits = prenatal.filter((pl.col("subject_id") == subject) & pl.col("time").is_between(start, end))
            weeks = (end - start).days / 7 + 2  # gestational age at birth
            assert visits.height >= (8 if weeks >= 38 else 4)  # monthly to 28 weeks, fortnightly to 36, then weekly
            admission = events.filter((pl.col("subject_id") == subject) & (pl.col("code") == OBSTETRIC_ADMISSION)
                                      & pl.col("time").is_between(end - timedelta(days=1), end))
            assert admission.height == 1
    assert NORMAL_DELIVERY in kinds and CESAREAN in kinds


def test_200_reference_patients_have_no_violations(reference_events):
    records = simulate(small_scenario(200, seed=12), ReferenceSource())
    for events in (reference_events, events_frame([event for record in records for event in record.events])):
        found = find_violations(events)
        assert found.is_empty(), found.head(10)


def test_a_diagnosis_at_a_visit_redraws_the_day_of_death_before_the_visit_is_recorded():
    """The engine cuts a visit's facts at the day of death; a diagnosis that changes the death hazard
    redraws that day first, so an episode's end days later is not lost to a death drawn again."""
    from trajsim.engine.schedules import Schedule
    from trajsim.engine.source import FactKind

    knowledge, redrawn = load_knowledge(), 0
    for seed in range(20):
        birth = day_number(datetime(1950, 1, 1).date())
        now = birth + 70 * DAYS_PER_YEAR
        patient = PatientState(1, "M", birth, now, now + 10 * DAYS_PER_YEAR, now + 3.0, np.random.default_rng(seed), now=now)
        schedule = Schedule(knowledge, patient, frozenset({FactKind.DEATHS}))
        schedule.update_death(now, [Fact("SNOMED/53741008")])  # coronary disease diagnosed at this visit
        redrawn += patient.death_day != now + 3.0
    assert redrawn == 20


def test_a_prenatal_visit_with_no_slot_before_the_delivery_gives_way_to_it():
    """A weekly visit falling on the weekend before the delivery admission is not pushed past it."""
    from collections import deque

    from trajsim.clock import is_weekend
    from trajsim.engine.pregnancy import Pregnancy, next_visit

    p = patient()
    saturday = next(d for d in range(int(p.now), int(p.now) + 7) if is_weekend(d) and not is_weekend(d - 1)) + 0.4
    plan = Pregnancy(saturday - 260, saturday + 1.8, NORMAL_DELIVERY,
                     deque([(saturday, PRENATAL), (saturday + 1.5, OBSTETRIC_ADMISSION)]))
    visit = next_visit(load_knowledge(), p, plan)
    assert visit.encounter_class == "IMP" and visit.day == saturday + 1.5 and not plan.visits


def loose_pregnancies(p: PatientState, n: int) -> Visit | None:
    """What the shipped model wrote: a pregnancy dated outside any visit with no end and no delivery,
    a prenatal visit and a cesarean with no pregnancy, and its own early end."""
    if n == 1:
        return Visit(p.now + 30, "AMB", 0.02, [Fact(PRENATAL), Fact(CESAREAN)])
    if n == 2:
        return Visit(p.now + 30, None, 0.0, [Fact(PREGNANCY)])
    if n == 3:
        return Visit(p.now + 60, "AMB", 0.02, [Fact(PRENATAL), Fact(CONDITION_END, text=PREGNANCY)])
    return None


def test_the_engine_carries_a_pregnancy_a_source_records_to_a_birth_or_a_loss():
    young_women = {"population.age_mix": ({"min": 20, "max": 35, "weight": 1.0},), "population.female_fraction": 1.0,
                   "care": "source"}
    events = events_frame(e for r in simulate(small_scenario(30, seed=6, **young_women), ScriptedSource(loose_pregnancies)) for e in r.events)
    assert find_violations(events).is_empty()
    ends = events.filter((pl.col("code") == CONDITION_END) & (pl.col("text") == PREGNANCY))
    outcomes = events.filter(pl.col("code").is_in([NORMAL_DELIVERY, CESAREAN, MISCARRIAGE]))
    assert ends.height >= 25 and outcomes.height == ends.height
    assert events.filter(pl.col("code") == OBSTETRIC_ADMISSION).height >= 0.8 * ends.height  # a loss has none
    prenatal, women = events.filter(pl.col("code") == PRENATAL).height, events["subject_id"].n_unique()
    assert 0.7 * women <= prenatal <= women  # only the visit in the pregnancy (if no loss came first) is prenatal
    births = events.filter(pl.col("code").is_in([NORMAL_DELIVERY, CESAREAN])).select("subject_id", "time")
    onsets = events.filter(pl.col("code") == PREGNANCY).select("subject_id", pl.col("time").alias("onset"))
    weeks = births.join(onsets, on="subject_id").select((pl.col("time") - pl.col("onset")).dt.total_days() / 7 + 2)
    assert weeks.height >= 20 and weeks.min().item() >= 24  # the source's end two months in is dropped


FETAL_HEART, FUNDAL_HEIGHT, SYMPTOM_VISIT = "SNOMED/225158009", "SNOMED/274804006", "SNOMED/185345009"


def prenatal_bundles(p: PatientState, n: int) -> Visit | None:
    """What models of Synthea and of the reference wrote: a prenatal visit's contents (fetal heart
    tones, fundal height) at office visits of men and of women who are not pregnant."""
    if n > 3:
        return None
    return Visit(p.now + 90, "AMB", 0.02, [Fact(SYMPTOM_VISIT), Fact(FETAL_HEART), Fact(FUNDAL_HEIGHT)])


def test_what_only_a_pregnancy_explains_is_not_recorded_outside_one():
    adults = {"population.age_mix": ({"min": 40, "max": 80, "weight": 1.0},), "care": "source"}
    source = ScriptedSource(prenatal_bundles)
    source.pregnancy_only = frozenset({FUNDAL_HEIGHT})  # as a model learns it from its source's records
    events = events_frame(e for r in simulate(small_scenario(12, seed=5, **adults), source) for e in r.events)
    assert events.filter(pl.col("code") == SYMPTOM_VISIT)["subject_id"].n_unique() == 12  # the visits are kept
    assert events.filter(pl.col("code").is_in([PRENATAL, FETAL_HEART, FUNDAL_HEIGHT])).is_empty()
    assert find_violations(events).is_empty()


def test_a_model_learns_what_its_source_records_only_in_pregnancy():
    """Fundal height measured in five pregnancies and never else is learned; a urine culture also
    taken outside one is not, nor a code seen in fewer than five patients."""
    from trajsim.model.pregnancy import pregnancy_only_codes

    urine_culture, rare = "SNOMED/117010004", "SNOMED/169230002"
    events = []
    for woman in range(1, 7):
        start = at(25 + woman)
        events += [Event(woman, BORN, None, BIRTH), Event(woman, BORN, None, SEX_FEMALE),
                   Event(woman, start, 1, PREGNANCY), Event(woman, start + timedelta(days=100), 2, FUNDAL_HEIGHT),
                   Event(woman, start + timedelta(days=100), 2, urine_culture),
                   Event(woman, start + timedelta(days=270), None, CONDITION_END, text=PREGNANCY)]
        if woman < 5:
            events.append(Event(woman, start + timedelta(days=150), 3, rare))
    events.append(Event(6, at(50), 9, urine_culture))
    learned = pregnancy_only_codes(events_frame(events), same_condition(load_knowledge(), PREGNANCY))
    assert learned == [FUNDAL_HEIGHT]


def test_a_pregnancy_in_the_history_before_entry_ends_with_a_birth_or_a_loss():
    """The shipped model wrote a pregnancy (three times over) in the history before a record began;
    the episode keeper ended it by a drawn length with no birth. Its course is the pregnancy
    keeper's, as for one recorded later."""
    def history(p: PatientState, n: int) -> Visit | None:
        onsets = [Fact(PREGNANCY, offset_days=-days) for days in (224, 161, 134)]
        return Visit(p.entry_day, None, 0.0, onsets) if n == 1 else None

    young_women = {"population.age_mix": ({"min": 20, "max": 35, "weight": 1.0},), "population.female_fraction": 1.0,
                   "care": "source"}
    events = events_frame(e for r in simulate(small_scenario(20, seed=3, **young_women), ScriptedSource(history))
                          for e in r.events)
    assert find_violations(events).is_empty()
    ends = events.filter((pl.col("code") == CONDITION_END) & (pl.col("text") == PREGNANCY))
    assert ends.height >= 15 and events.filter(pl.col("code").is_in([NORMAL_DELIVERY, CESAREAN, MISCARRIAGE])).height == ends.height
