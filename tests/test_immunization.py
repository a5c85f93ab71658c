"""Immunization on the ACIP schedule: the rules catch doses too soon, too young, too old or beyond
the series; the chart keeper drops what a source proposes against the schedule; children followed
from birth get exactly the routine series, each dose at the visit for its age; a child's first flu
season has two doses; Tdap is offered in each pregnancy at 27-36 weeks; older adults get
pneumococcal and zoster vaccine at about their cited uptake; the reference source breaks no
immunization rule."""

from collections import Counter
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from tests.conftest import small_scenario
from trajsim.clock import calendar_date, day_number
from trajsim.engine import Fact, PatientState, ReferenceSource, Visit, simulate
from trajsim.engine.immunization import ImmunizationKeeper, Immunizer, vaccine_series
from trajsim.events import BIRTH, SEX_FEMALE, Event, events_frame, visit_start_code
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.lifecycles import PREGNANCY
from trajsim.rules import find_violations
from trajsim.rules.immunization import RULES

BORN = datetime(2010, 1, 1)
HEPB, DTAP, MMR, FLU, PCV20, ZOSTER = "CVX/08", "CVX/20", "CVX/03", "CVX/140", "CVX/216", "CVX/187"
ROTAVIRUS, TDAP, IPV, HIB, PCV, COVID = "CVX/116", "CVX/115", "CVX/10", "CVX/49", "CVX/133", "CVX/208"
PPSV23, ZOSTER_LIVE = "CVX/33", "CVX/121"
PNEUMOCOCCAL = (PCV, PPSV23, PCV20)
TWO_MONTH_DOSES = Counter({HEPB: 1, ROTAVIRUS: 1, DTAP: 1, IPV: 1, HIB: 1, PCV: 1})


def record(doses: list[tuple[float, str]], born: datetime = BORN) -> pl.DataFrame:
    """A girl's record: birth, then each (age in days, vaccine) dose at its own clinic visit."""
    events = [Event(1, born, None, BIRTH), Event(1, born, None, SEX_FEMALE)]
    for visit, (age_days, code) in enumerate(doses, start=1):
        events += [Event(1, born + timedelta(days=age_days), visit, visit_start_code("AMB")),
                   Event(1, born + timedelta(days=age_days), visit, code)]
    return events_frame(events)


def immunization_rules(events: pl.DataFrame) -> Counter:
    return Counter(find_violations(events).filter(pl.col("rule").is_in(list(RULES)))["rule"])


def test_the_schedule_passes_the_rules():
    on_time = [(1, HEPB), (35, HEPB), (190, HEPB), (61, DTAP), (122, DTAP), (183, DTAP), (457, DTAP), (1461, DTAP),
               (370, MMR), (1470, MMR), (200, FLU), (570, FLU), (61, ROTAVIRUS), (122, ROTAVIRUS), (183, ROTAVIRUS)]
    assert immunization_rules(record(sorted(on_time))) == Counter()


def test_a_dose_within_its_minimum_interval_is_too_soon():
    assert immunization_rules(record([(61, DTAP), (75, DTAP)])) == Counter({"dose_too_soon": 1})
    # ACIP's 4-day grace period: 25 days after dose 1 still counts as 4 weeks
    assert immunization_rules(record([(61, DTAP), (86, DTAP)])) == Counter()
    assert immunization_rules(record([(200, FLU), (210, FLU)])) == Counter({"dose_too_soon": 1})


def test_a_vaccine_outside_the_schedule_is_held_to_a_21_day_floor():
    assert immunization_rules(record([(7000, "CVX/43"), (7007, "CVX/43")])) == Counter({"dose_too_soon": 1})
    assert immunization_rules(record([(7000, "CVX/43"), (7030, "CVX/43")])) == Counter()


def test_more_doses_than_the_series_are_beyond_it():
    hepb = [(1, HEPB), (35, HEPB), (190, HEPB), (400, HEPB)]
    assert immunization_rules(record(hepb)) == Counter({"dose_beyond_series": 1})


def test_a_dose_after_the_series_ages_is_not_counted_in_it():
    """A third MMR dose in adulthood (a mumps outbreak) is not part of the childhood series."""
    assert immunization_rules(record([(370, MMR), (1470, MMR), (9000, MMR)])) == Counter()


def test_a_dose_before_its_minimum_age_is_found():
    assert immunization_rules(record([(200, MMR)])) == Counter({"dose_below_minimum_age": 1})
    assert immunization_rules(record([(40 * 365, ZOSTER)])) == Counter({"dose_below_minimum_age": 1})


def test_rotavirus_from_its_maximum_ages_is_found():
    """ACIP: the first dose by 14 weeks 6 days, no dose after 8 months 0 days; no grace period."""
    assert immunization_rules(record([(61, ROTAVIRUS), (122, ROTAVIRUS), (250, ROTAVIRUS)])) == Counter(
        {"dose_above_maximum_age": 1})
    assert immunization_rules(record([(106, ROTAVIRUS)])) == Counter({"dose_above_maximum_age": 1})
    assert immunization_rules(record([(104, ROTAVIRUS), (140, ROTAVIRUS), (243, ROTAVIRUS)])) == Counter()


def test_more_flu_doses_in_a_season_than_acip_gives_are_found():
    """One dose a season; two, 4 weeks apart, for a child under 9 (September to March here)."""
    assert immunization_rules(record([(250, FLU), (280, FLU)])) == Counter()
    assert immunization_rules(record([(250, FLU), (280, FLU), (310, FLU)])) == Counter({"influenza_beyond_season": 1})
    adult = datetime(1980, 1, 1)
    assert immunization_rules(record([(11_220, FLU), (11_260, FLU)], born=adult)) == Counter(
        {"influenza_beyond_season": 1})


def test_the_keeper_drops_an_adults_second_flu_dose_of_a_season():
    keeper, adult = ImmunizationKeeper(load_knowledge()), patient(birth_day=-30 * 365.25)
    october, november = Visit(day_number(date(2020, 10, 5)), "AMB", 0.01, [Fact(FLU)]), \
        Visit(day_number(date(2020, 11, 9)), "AMB", 0.01, [Fact(FLU)])
    keeper.vet(adult, october)
    keeper.vet(adult, november)
    assert [len(october.facts), len(november.facts)] == [1, 0]


T0 = day_number(date(2016, 1, 4))  # the birth of the infants below: every vaccine of their schedule was licensed


def patient(birth_day: float = 0.0, entry_day: float = 0.0, end_day: float = 40_000.0, seed: int = 3) -> PatientState:
    """A girl born `birth_day` days after T0, her record from `entry_day` to `end_day` after it."""
    return PatientState(1, "F", T0 + birth_day, T0 + entry_day, T0 + end_day, None, np.random.default_rng(seed))


def test_an_infant_seen_at_8_weeks_gets_the_2_month_doses():
    immunizer = Immunizer(load_knowledge(), patient())
    assert Counter(f.code for f in immunizer.due(T0 + 1.0)) == Counter({HEPB: 1})
    assert Counter(f.code for f in immunizer.due(T0 + 56.0)) == TWO_MONTH_DOSES


def test_rotavirus_is_not_started_after_14_weeks_6_days():
    """A baby first seen at 15 weeks (the record began at 11 weeks) never gets rotavirus vaccine,
    though the other 2-month doses catch up."""
    immunizer, given = Immunizer(load_knowledge(), patient(entry_day=77.0)), Counter()
    for day in (105.0, 150.0, 200.0, 240.0):
        given.update(f.code for f in immunizer.due(T0 + day))
    assert given[ROTAVIRUS] == 0
    assert given[DTAP] == 3


def test_the_keeper_drops_rotavirus_after_8_months():
    keeper, child = ImmunizationKeeper(load_knowledge()), patient()
    kept = []
    for day in (61, 122, 250):
        visit = Visit(T0 + day, "AMB", 0.01, [Fact(ROTAVIRUS)])
        keeper.vet(child, visit)
        kept += [day for f in visit.facts]
    assert kept == [61, 122]


def flu_doses_by_season(immunizer: Immunizer, days: np.ndarray) -> list[list[float]]:
    """The days of the flu shots given at clinic visits on `days`, grouped by season."""
    seasons: dict[int, list[float]] = {}
    for day in days:
        if any(f.code == FLU for f in immunizer.due(T0 + float(day))):
            seasons.setdefault(int((T0 + day - 244) // 365.25), []).append(T0 + float(day))
    return list(seasons.values())


def test_a_child_gets_two_flu_doses_in_the_first_season_and_one_after():
    """ACIP: children 6 months-8 years with fewer than two earlier doses get two, 4 weeks apart."""
    knowledge, checked = load_knowledge(), 0
    for seed in range(12):
        seasons = flu_doses_by_season(Immunizer(knowledge, patient(end_day=4 * 365.25, seed=seed)),
                                      np.arange(1, 4 * 365.25, 30.0))
        if seasons and calendar_date(seasons[0][0]).month != 3:  # a visit of the season is left after the first dose
            checked += 1
            assert len(seasons[0]) == 2 and seasons[0][1] - seasons[0][0] >= 28
            assert all(len(doses) == 1 for doses in seasons[1:])
    assert checked >= 3
    adolescent = Immunizer(knowledge, patient(birth_day=-12 * 365.25, end_day=4 * 365.25))
    assert all(len(doses) == 1 for doses in flu_doses_by_season(adolescent, np.arange(1, 4 * 365.25, 30.0)))


def test_tdap_is_offered_once_in_each_pregnancy_at_27_to_36_weeks():
    """Prenatal visits every 2 weeks; the visit recording the pregnancy dates its conception."""
    knowledge, vaccinated = load_knowledge(), 0
    for seed in range(300):
        mother = patient(birth_day=-25 * 365.25, seed=seed)
        immunizer = Immunizer(knowledge, mother)
        conception = 10.0
        mother.conditions[PREGNANCY] = T0 + conception + 270.0
        first = conception + 8 * 7.0
        assert TDAP not in {f.code for f in immunizer.due(T0 + first, [Fact(PREGNANCY, offset_days=conception - first)])}
        weeks = [week for week in range(12, 40, 2)
                 if TDAP in {f.code for f in immunizer.due(T0 + conception - 14 + week * 7.0)}]
        assert len(weeks) <= 1 and all(27 <= w <= 36 for w in weeks)
        vaccinated += len(weeks)
    assert 0.45 < vaccinated / 300 < 0.68  # Razzaghi et al., MMWR 2020: 56.6%


def test_the_keeper_drops_an_excess_dose_a_source_proposes():
    keeper, child = ImmunizationKeeper(load_knowledge()), patient()
    kept = []
    for day in (1, 35, 190, 400, 401):  # a fourth Hep B dose, then a DTaP dose far too young
        visit = Visit(T0 + day, "AMB", 0.01, [Fact(HEPB)] if day < 401 else [Fact(MMR)])
        keeper.vet(child, visit)
        kept += [f.code for f in visit.facts]
    assert kept == [HEPB, HEPB, HEPB, MMR]
    too_soon = Visit(T0 + 420, "AMB", 0.01, [Fact(MMR), Fact("SNOMED/59621000")])
    keeper.vet(child, too_soon)
    assert [f.code for f in too_soon.facts] == ["SNOMED/59621000"]


def test_a_child_followed_from_birth_gets_exactly_the_series():
    knowledge = load_knowledge()
    child = patient(end_day=19 * 365.25)
    immunizer, given = Immunizer(knowledge, child), Counter()
    for day in np.arange(1, 19 * 365.25, 30.0):  # a clinic visit every month
        given.update(f.code for f in immunizer.due(T0 + day) if f.code not in (FLU, COVID))
    routine = Counter()
    for series in vaccine_series(knowledge).values():
        if series.doses[0].before_entry == "given" and series.name not in ("influenza", "tetanus"):
            routine.update(d.code for d in series.doses if d.routine)
    assert given == routine + Counter({"CVX/115": 1})  # and the adolescent Tdap


def test_a_child_entering_late_catches_up_within_the_minimum_intervals():
    knowledge = load_knowledge()
    child = patient(entry_day=70.0)  # the 2-month doses were due (from 7 weeks) 21 days before the record began
    immunizer = Immunizer(knowledge, child)
    assert {DTAP, "CVX/10", "CVX/49", "CVX/133"} <= {f.code for f in immunizer.due(T0 + 85.0)}
    assert DTAP not in {f.code for f in immunizer.due(T0 + 110.0)}  # dose 2 waits 4 weeks
    # seen again only at 10 months: one dose per series, the next at least 4 weeks later
    assert Counter(f.code for f in immunizer.due(T0 + 300.0))[DTAP] == 1
    assert DTAP not in {f.code for f in immunizer.due(T0 + 320.0)}
    assert DTAP in {f.code for f in immunizer.due(T0 + 330.0)}


def test_covid_19_vaccine_is_two_doses_from_its_authorization_at_about_the_cited_uptake():
    knowledge, available, vaccinated = load_knowledge(), day_number(date(2020, 12, 11)), 0
    visits = np.arange(day_number(date(2019, 1, 7)), day_number(date(2024, 1, 1)), 14.0)
    for seed in range(200):
        adult = patient(birth_day=day_number(date(1980, 3, 1)) - T0, entry_day=visits[0] - T0, seed=seed)
        immunizer = Immunizer(knowledge, adult)
        days = [day for day in visits if COVID in {f.code for f in immunizer.due(float(day))}]
        if days:  # the first visit from 11 December 2020, then the first 3 weeks on
            assert available <= days[0] < available + 14 and days == [days[0], days[0] + 28]
            vaccinated += 1
    assert 0.65 < vaccinated / 200 < 0.85  # CDC COVID Data Tracker: about 75% of adults 18-64
    child = Immunizer(knowledge, patient(birth_day=day_number(date(2014, 3, 1)) - T0, entry_day=visits[0] - T0))
    assert not any(COVID in {f.code for f in child.due(float(day))} for day in visits if day < day_number(date(2026, 3, 1)))


def test_covid_19_vaccine_before_it_existed_is_found():
    adult = datetime(1980, 1, 1)
    early = (datetime(2020, 6, 1) - adult).days
    assert immunization_rules(record([(early, COVID)], born=adult)) == Counter({"dose_before_vaccine_existed": 1})
    assert immunization_rules(record([(early + 400, COVID), (early + 421, COVID)], born=adult)) == Counter()


def test_the_keeper_drops_covid_19_vaccine_before_it_existed():
    keeper, adult = ImmunizationKeeper(load_knowledge()), patient(birth_day=-30 * 365.25)
    early = Visit(day_number(date(2020, 6, 1)), "AMB", 0.01, [Fact(COVID)])
    keeper.vet(adult, early)
    assert early.facts == []


@pytest.fixture(scope="module")
def older_adults():
    mix = ({"min": 66, "max": 80, "weight": 1.0},)
    return list(simulate(small_scenario(300, seed=11, **{"population.age_mix": mix}), ReferenceSource()))


def test_older_adults_get_pneumococcal_and_zoster_vaccine_at_about_the_cited_uptake(older_adults):
    seen = [r for r in older_adults if any(e.code == visit_start_code("AMB") for e in r.events)]
    pneumococcal = np.mean([any(e.code in PNEUMOCOCCAL for e in r.events) for r in seen])
    doses = [sum(e.code == ZOSTER for e in r.events) for r in seen]
    assert 0.55 < pneumococcal < 0.8  # CDC: about 65-70% of adults 65 and older
    assert 0.25 < np.mean([d > 0 for d in doses]) < 0.45  # NHIS: about 30-40%
    assert max(doses) == 2


def test_older_adults_get_the_pneumococcal_and_zoster_vaccines_of_their_years(older_adults):
    """PCV13 then PPSV23 a year later until ACIP recommended PCV20 (20 October 2021), never both
    regimens; zoster vaccine live until ACIP preferred RZV (26 January 2018), RZV only from then."""
    pcv20, rzv, zvl = datetime(2021, 10, 20), datetime(2018, 1, 26), datetime(2018, 1, 26)
    both, before, pcv13 = 0, 0, 0
    for r in older_adults:
        times = {code: [e.time for e in r.events if e.code == code] for code in (*PNEUMOCOCCAL, ZOSTER, ZOSTER_LIVE)}
        before += any(t < pcv20 for t in times[PCV20]) + any(t < rzv for t in times[ZOSTER])
        before += any(t >= zvl for t in times[ZOSTER_LIVE]) + any(t >= pcv20 for t in times[PCV])
        both += bool(times[PCV20]) and bool(times[PCV])
        if times[PCV]:
            pcv13 += 1
            assert all(t >= times[PCV][0] + timedelta(days=365) for t in times[PPSV23])
    assert before == 0 and both == 0
    assert pcv13 > 50  # most of these records start in 2015, in the PCV13 years
    assert sum(bool([e for e in r.events if e.code == ZOSTER_LIVE]) for r in older_adults) > 20


def test_pcv20_and_rzv_before_they_were_licensed_are_found():
    adult = datetime(1945, 1, 1)
    assert immunization_rules(record([((datetime(2016, 5, 1) - adult).days, PCV20)], born=adult)) == Counter(
        {"dose_before_vaccine_existed": 1})
    assert immunization_rules(record([((datetime(2015, 3, 1) - adult).days, ZOSTER)], born=adult)) == Counter(
        {"dose_before_vaccine_existed": 1})
    assert immunization_rules(record([((datetime(2015, 3, 1) - adult).days, PCV),
                                      ((datetime(2016, 3, 1) - adult).days, PPSV23),
                                      ((datetime(2015, 4, 1) - adult).days, ZOSTER_LIVE)], born=adult)) == Counter()


def test_the_keeper_drops_pcv20_before_it_was_licensed():
    keeper, adult = ImmunizationKeeper(load_knowledge()), patient(birth_day=-70 * 365.25)
    early = Visit(day_number(date(2016, 5, 2)), "AMB", 0.01, [Fact(PCV20), Fact(ZOSTER)])
    keeper.vet(adult, early)
    assert early.facts == []


INFANTS = ({"min": 0, "max": 3, "weight": 1.0},)


def infants_on_schedule(records) -> int:
    """Asserts that every child born within the record and followed past 100 days had the hepatitis
    B birth dose in its first week, the 2-month doses before 3 months and no rotavirus from 8
    months; the number of such children."""
    infants = 0
    for r in records:
        born = next(e.time for e in r.events if e.code == BIRTH)
        ages = lambda code: [(e.time - born).days for e in r.events if e.code == code]  # noqa: E731
        if (datetime(2025, 1, 1) - born).days < 100 or r.patient.exit_day - r.patient.birth_day < 100:
            continue
        infants += 1
        assert all(ages(code) and ages(code)[0] < 91 for code in TWO_MONTH_DOSES if code != HEPB)
        assert ages(HEPB)[0] < 7  # the birth dose
        assert all(age < 243 for age in ages(ROTAVIRUS)) and len(ages(ROTAVIRUS)) <= 3
    return infants


def test_reference_infants_get_each_dose_at_the_visit_for_its_age():
    """Born within the record: the 2-month doses before 3 months, rotavirus never from 8 months."""
    assert infants_on_schedule(simulate(small_scenario(60, seed=13, **{"population.age_mix": INFANTS}),
                                        ReferenceSource())) >= 20


def test_the_shipped_models_infants_get_each_dose_at_the_visit_for_its_age():
    """The shipped model learned the reference simulator's schedule and could only imitate it (its
    infants had the 2-month doses at 5-9 months, many never); the engine keeps the schedule for it."""
    from trajsim.model import DEFAULT_MODEL
    from trajsim.model.source import ModelSource

    scenario = small_scenario(40, seed=13, model="default", **{"population.age_mix": INFANTS})
    assert infants_on_schedule(simulate(scenario, ModelSource(DEFAULT_MODEL))) >= 12


def test_reference_patients_break_no_immunization_rule():
    records = list(simulate(small_scenario(200, seed=5), ReferenceSource()))
    events = events_frame(e for r in records for e in r.events)
    assert immunization_rules(events) == Counter()
