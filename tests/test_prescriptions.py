"""Prescriptions a physician can read: orders at encounters, renewals instead of refill spam, the
children's product for a child, and the guideline therapy of the chart's active conditions, for
both shipped sources; and the prescribing rules catch a chart that breaks them."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl
import pytest

from tests.conftest import small_scenario
from trajsim.clock import to_datetime
from trajsim.engine import ReferenceSource, simulate
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.therapy import RENEWAL_DAYS
from trajsim.events import BIRTH, MEDICATION_END, SEX_MALE, VISIT_END, Event, events_frame, visit_start_code
from trajsim.model import DEFAULT_MODEL
from trajsim.output import default_builder
from trajsim.rules import find_violations, prescribing
from trajsim.vocab import in_domain

CHILDREN_AND_ADULTS = ({"min": 0, "max": 12, "weight": 1.0}, {"min": 40, "max": 90, "weight": 1.0})
CHILD_PRODUCTS = {"RXNORM/308189", "RXNORM/313820", "RXNORM/197803"}  # amoxicillin, acetaminophen, ibuprofen


def sources():
    from trajsim.model.source import ModelSource

    return {"reference": ReferenceSource(), "default model": ModelSource(DEFAULT_MODEL)}


@pytest.fixture(scope="module", params=["reference", "default model"])
def cohort(request):
    """200 patients, half children, half adults, of one shipped source."""
    model = "default" if request.param == "default model" else "reference"  # the source's own care, as generate runs it
    scenario = small_scenario(200, seed=3, model=model, **{"population.age_mix": CHILDREN_AND_ADULTS})
    records = list(simulate(scenario, sources()[request.param]))
    return request.param, records, events_frame(e for r in records for e in r.events)


def test_no_prescribing_rule_is_broken(cohort):
    name, _, events = cohort
    found = find_violations(events).filter(pl.col("rule").is_in([*prescribing.RULES, "medication_without_indication"]))
    assert found.is_empty(), (name, found.head(10))


def test_orders_are_prescribing_decisions_not_refills(cohort):
    """Refills were 5 orders per person-year; a long-term drug is now ordered again only when its
    order falls due for renewal, so orders stay near one per drug taken and year."""
    name, records, events = cohort
    years = sum(r.patient.exit_day - r.patient.entry_day for r in records) / 365.25
    orders = events.filter(in_domain(pl.col("code"), "medication"))
    assert orders.height / years < 3.0, name
    listed = [m for ms in load_knowledge().medications.values() for m in ms]
    long_term = {m.code for m in listed} - {m.code for m in listed if m.course_days is not None}
    stops = events.filter(pl.col("code") == MEDICATION_END).select("subject_id", "time", drug="text", stop=pl.lit(1))
    courses = (pl.concat([orders.select("subject_id", "time", drug="code", stop=pl.lit(0)), stops])
               .filter(pl.col("drug").is_in(long_term)).sort("subject_id", "drug", "time", "stop")
               .with_columns(course=pl.col("stop").cum_sum().over("subject_id", "drug")))
    gaps = (courses.filter(pl.col("stop") == 0)
            .select((pl.col("time").diff().over("subject_id", "drug", "course").dt.total_hours() / 24).alias("days"))
            .drop_nulls())
    # renewed once a year while taken (a renewal is due at the first office visit of its day), never refilled
    assert gaps.height and gaps["days"].min() > RENEWAL_DAYS - 1, name
    entry = {r.subject_id: to_datetime(r.patient.entry_day) for r in records}
    early = orders.filter(pl.col("time") < pl.col("subject_id").replace_strict(entry, return_dtype=pl.Datetime("us")))
    assert early.is_empty(), name  # nothing ordered before the record starts


def test_children_get_childrens_products(cohort):
    name, _, events = cohort
    assert set(events.filter(pl.col("code").is_in(CHILD_PRODUCTS))["code"]), name


def test_every_medication_request_references_an_encounter_and_long_term_ones_carry_repeats(cohort):
    name, records, _ = cohort
    builder, requests = default_builder("test"), []
    for record in records[:60]:
        requests += [r for r in builder.build(record.events).resources if r["resourceType"] == "MedicationRequest"]
    assert requests and all("encounter" in r for r in requests), name
    long_term = [r for r in requests if "dispenseRequest" in r]
    for request in long_term:  # the first fill and its repeats last until the order must be renewed
        dispense = request["dispenseRequest"]
        assert (dispense["numberOfRepeatsAllowed"] + 1) * dispense["expectedSupplyDuration"]["value"] >= 365, name
    assert long_term, name


def _chart(*facts: tuple[float, str, int | None, str | None]) -> pl.DataFrame:
    """One man born in 1960, with facts (days after 2015-01-01, code, encounter, text)."""
    start = datetime(2015, 1, 1)
    events = [Event(1, datetime(1960, 1, 1), None, BIRTH), Event(1, datetime(1960, 1, 1), None, SEX_MALE)]
    events += [Event(1, start + timedelta(days=day), encounter, code, None, None, text) for day, code, encounter, text in facts]
    return events_frame(sorted(events, key=lambda e: e.time))


def _visit(day: float, encounter: int, *facts: tuple[str, str | None],
           encounter_class: str = "AMB") -> list[tuple[float, str, int | None, str | None]]:
    return [(day, visit_start_code(encounter_class), encounter, None), *((day, code, encounter, text) for code, text in facts),
            (day + 0.02, VISIT_END, encounter, None)]


def _rules(events: pl.DataFrame) -> set[str]:
    return set(find_violations(events).filter(pl.col("rule").is_in(list(prescribing.RULES)))["rule"])


CAD, GERD, STREP = "SNOMED/53741008", "SNOMED/235595009", "SNOMED/43878008"


def test_the_rules_catch_a_chart_that_breaks_them():
    chart = _chart(
        *_visit(0, 1, (CAD, None), (GERD, None), ("RXNORM/243670", CAD), ("RXNORM/243670", CAD)),
        (30, "RXNORM/243670", None, CAD),  # a refill written as a new order
        *_visit(60, 2, (STREP, None)),
    )
    assert _rules(chart) == {"duplicate_order_same_day", "order_outside_encounter", "statin_missing_in_coronary_disease",
                             "ppi_missing_in_gerd", "antibiotic_missing_in_strep"}
    diabetic = _chart(*_visit(0, 1, ("SNOMED/44054006", None), ("RXNORM/860975", "SNOMED/44054006")))  # aged 55
    assert _rules(diabetic) == {"statin_missing_in_diabetes"}
    on_statin_only = _chart(*_visit(0, 1, ("SNOMED/44054006", None), ("RXNORM/312961", "SNOMED/44054006")))
    assert _rules(on_statin_only) == {"metformin_missing_in_diabetes"}
    child = _chart(*_visit(20000, 1, ("SNOMED/59621000", None), ("RXNORM/197361", "SNOMED/59621000")))  # amlodipine 5 mg
    child = child.with_columns(time=pl.when(pl.col("code") == BIRTH).then(datetime(2064, 1, 1)).otherwise("time"))
    assert "adult_formulation_in_child" in _rules(child.sort("time"))


def test_therapy_taken_from_before_the_diagnosis_counts_and_a_stop_ends_it():
    statin = [("RXNORM/312961", "SNOMED/55822004")]
    taken = _chart(*_visit(0, 1, ("SNOMED/55822004", None), *statin), *_visit(200, 2, (CAD, None)))
    assert "statin_missing_in_coronary_disease" not in _rules(taken)
    stopped = _chart(*_visit(0, 1, ("SNOMED/55822004", None), *statin), (100, MEDICATION_END, None, "RXNORM/312961"),
                     *_visit(200, 2, (CAD, None)))
    assert "statin_missing_in_coronary_disease" in _rules(stopped)


def test_a_drug_in_a_stay_is_ordered_when_its_indication_is_diagnosed_and_runs_its_course():
    """A source may write a stay's antibiotic days before the diagnosis it treats, and stop it at
    once: the order follows the diagnosis and the course keeps its length."""
    from tests.test_episodes import patient
    from trajsim.engine import Fact, Visit
    from trajsim.engine.prescriptions import Prescriber
    from trajsim.knowledge import load_knowledge

    strep, penicillin = "SNOMED/43878008", "RXNORM/834061"
    p = patient(age=40.0)
    stay = Visit(p.now, "IMP", 10.0, [Fact("SNOMED/183452005"), Fact(penicillin, text=strep),
                                      Fact(MEDICATION_END, text=penicillin), Fact(strep, offset_days=6.0)])
    Prescriber(load_knowledge()).vet(p, stay)
    (order,) = [f for f in stay.facts if f.code == penicillin]
    (stop,) = [f for f in stay.facts if f.code == MEDICATION_END]
    assert order.offset_days == 6.0 and stop.text == penicillin and stop.offset_days > order.offset_days + 3


def test_a_statin_is_renewed_at_the_office_not_at_an_emergency_visit():
    hyperlipidemia, statin, sprain = "SNOMED/55822004", ("RXNORM/312961", "SNOMED/55822004"), ("SNOMED/44465007", None)
    started = _visit(0, 1, (hyperlipidemia, None), statin)
    in_the_ed = _chart(*started, *_visit(400, 2, sprain, statin, encounter_class="EMER"))
    assert _rules(in_the_ed) == {"renewal_at_emergency_visit"}
    at_the_office = _chart(*started, *_visit(400, 2, statin))
    assert "renewal_at_emergency_visit" not in _rules(at_the_office)
    restarted = _chart(*started, (200, MEDICATION_END, None, "RXNORM/312961"),
                       *_visit(400, 2, sprain, statin, encounter_class="EMER"))  # a new start, not a renewal
    assert "renewal_at_emergency_visit" not in _rules(restarted)


def test_a_chronic_condition_seen_only_in_the_ed_is_left_to_the_office_but_strep_is_not():
    diabetes = ("SNOMED/44054006", None)
    assert not _rules(_chart(*_visit(0, 1, diabetes, encounter_class="EMER")))
    assert _rules(_chart(*_visit(0, 1, (STREP, None), encounter_class="EMER"))) == {"antibiotic_missing_in_strep"}


def test_coronary_disease_found_in_the_ed_starts_its_statin_there():
    from tests.test_episodes import patient
    from trajsim.engine import Fact, Visit
    from trajsim.engine.prescriptions import Prescriber
    from trajsim.knowledge import load_knowledge

    # known coronary disease seen at an ED visit is the office's; found there, the ED starts the statin
    known = _chart((1, CAD, None, None), *_visit(30, 2, ("SNOMED/44465007", None), encounter_class="EMER"))  # a sprain
    assert not _rules(known)
    assert _rules(_chart(*_visit(0, 1, (CAD, None), encounter_class="EMER"))) == {"statin_missing_in_coronary_disease"}
    p = patient(age=60.0)
    found = Visit(p.now, "EMER", 0.15, [Fact("SNOMED/50849002"), Fact(CAD, offset_days=0.05)])
    Prescriber(load_knowledge()).vet(p, found)
    (statin,) = [f for f in found.facts if f.code == "RXNORM/259255"]
    assert statin.text == CAD and statin.offset_days == 0.05


@pytest.mark.parametrize("egfr", ["LOINC/98979-8", "LOINC/33914-3"])  # CKD-EPI 2021, and MDRD as Synthea codes it
def test_metformin_is_not_ordered_once_the_egfr_is_below_30_and_is_then_not_expected(egfr):
    """FDA label: metformin is contraindicated with an eGFR below 30."""
    diabetes, metformin = "SNOMED/44054006", ("RXNORM/860975", "SNOMED/44054006")
    statin = ("RXNORM/312961", "SNOMED/44054006")  # aged 55: the diabetic's statin, so only metformin is judged

    def chart(value: float, *drugs: tuple[str, str]) -> pl.DataFrame:
        events = _chart(*_visit(0, 1, (diabetes, None), *drugs))
        low = events_frame([Event(1, datetime(2015, 1, 1), 1, egfr, value, "mL/min/{1.73_m2}")])
        return pl.concat([events, low]).sort("time")

    assert _rules(chart(25.0, metformin, statin)) == {"drug_ruled_out_by_lab"}
    assert not _rules(chart(25.0, statin))  # no metformin expected at an eGFR of 25
    assert _rules(chart(60.0, statin)) == {"metformin_missing_in_diabetes"}
    assert not _rules(chart(60.0, metformin, statin))


def test_a_drug_the_knowledge_does_not_list_is_kept_without_an_indication():
    """A learned model writes its source's formulary (Synthea's simvastatin 10 mg) with no indication
    the rules can judge: the order stands; a listed drug without an active indication does not."""
    from tests.test_episodes import patient
    from trajsim.engine import Fact, Visit
    from trajsim.engine.prescriptions import Prescriber
    from trajsim.knowledge import load_knowledge

    unlisted, amoxicillin = "RXNORM/316672", "RXNORM/308182"
    knowledge = load_knowledge()
    assert unlisted not in knowledge.indications and amoxicillin in knowledge.indications
    visit = Visit(patient(age=50.0).now, "AMB", 0.02, [Fact(unlisted), Fact(amoxicillin)])
    Prescriber(knowledge).vet(patient(age=50.0), visit)
    assert [f.code for f in visit.facts] == [unlisted]



def test_a_drug_keeps_the_indication_its_source_ordered_it_for():
    """Synthea orders acetaminophen for acute bronchitis, which the knowledge's first-line table does
    not list: with the indications a trained model learned, the order stands and names bronchitis,
    and a drug the knowledge does not list names the reason it was learned for; without them the
    acetaminophen is dropped as unindicated."""
    from tests.test_episodes import patient
    from trajsim.engine import Fact, Visit
    from trajsim.engine.prescriptions import Prescriber
    from trajsim.knowledge.therapy import drug_indications

    bronchitis, acetaminophen, simvastatin, hyperlipidemia = ("SNOMED/10509002", "RXNORM/313782", "RXNORM/316672",
                                                              "SNOMED/55822004")
    knowledge = load_knowledge()
    learned = drug_indications(knowledge, {acetaminophen: [bronchitis], simvastatin: [hyperlipidemia]})

    def ordered(indications) -> list[tuple[str, str | None]]:
        p = patient(age=50.0)
        visit = Visit(p.now, "AMB", 0.02, [Fact(bronchitis), Fact(hyperlipidemia), Fact(acetaminophen), Fact(simvastatin)])
        Prescriber(knowledge, indications=indications).vet(p, visit)
        return [(f.code, f.text) for f in visit.facts if f.code.startswith("RXNORM")]

    assert ordered(None) == [(simvastatin, None)]
    assert ordered(learned) == [(acetaminophen, bronchitis), (simvastatin, hyperlipidemia)]



HYPERTENSION, SYSTOLIC, DIASTOLIC = "SNOMED/59621000", "LOINC/8480-6", "LOINC/8462-4"


def _hypertensive(*visits: tuple[float, float, float, str | None]) -> pl.DataFrame:
    """A man born in 1960, hypertensive since 2015 and treated with nothing, seen at office visits
    (days after 2015-01-01, systolic, diastolic, a drug ordered there or None)."""
    start, events = datetime(2015, 1, 1), []
    for encounter, (day, systolic, diastolic, drug) in enumerate(visits, start=2):
        seen = start + timedelta(days=day)
        events += [Event(1, seen, encounter, visit_start_code("AMB")), Event(1, seen, encounter, SYSTOLIC, systolic, "mm[Hg]"),
                   Event(1, seen, encounter, DIASTOLIC, diastolic, "mm[Hg]"),
                   *([Event(1, seen, encounter, drug, text=HYPERTENSION)] if drug else []),
                   Event(1, seen + timedelta(minutes=20), encounter, VISIT_END)]
    chart = _chart(*_visit(0, 1, (HYPERTENSION, None), ("RXNORM/310798", HYPERTENSION)),
                   (1, MEDICATION_END, None, "RXNORM/310798"))  # diagnosed years ago, its first drug stopped
    return pl.concat([chart, events_frame(events)]).sort("time")


def test_a_diagnosed_hypertension_at_stage_2_is_treated_at_the_visit_or_the_chart_breaks_a_rule():
    """The man of 56 with 139-163/71-94 mm Hg for years before lisinopril (ACC/AHA 2017: a drug from
    140/90): an untreated stage-2 reading breaks the rule once per visit, a drug ordered there or
    taken since an earlier visit does not, nor a reading below 140/90."""
    rule = "antihypertensive_missing_at_stage_2_blood_pressure"
    found = find_violations(_hypertensive((200, 163, 88, None), (400, 139, 94, None), (600, 136, 84, None)))
    assert found.filter(pl.col("rule") == rule)["time"].dt.date().to_list() == [date(2015, 7, 20), date(2016, 2, 5)]
    assert rule not in _rules(_hypertensive((200, 152, 88, "RXNORM/314076"), (400, 145, 92, None)))
    assert rule not in _rules(_hypertensive((200, 136, 84, None), (400, 128, 80, None)))


def test_the_prescriber_starts_an_antihypertensive_at_a_stage_2_reading_of_a_diagnosed_hypertension():
    from tests.test_episodes import patient
    from trajsim.engine import Fact, Visit
    from trajsim.engine.prescriptions import Prescriber
    from trajsim.engine.source import ACTIVE
    from trajsim.knowledge import load_knowledge
    from trajsim.knowledge.therapy import guideline_therapies

    knowledge = load_knowledge()
    antihypertensives = next(t.codes for t in guideline_therapies(knowledge) if t.condition == "hypertension")
    for systolic, diastolic, treated in ((128.0, 82.0, False), (146.0, 82.0, True), (132.0, 91.0, True)):
        p, prescriber = patient(age=56, sex="M"), Prescriber(knowledge, renews=False)
        p.conditions[HYPERTENSION] = ACTIVE
        visit = Visit(p.now, "AMB", 0.02, [Fact("SNOMED/390906007"), Fact(SYSTOLIC, value=systolic),
                                          Fact(DIASTOLIC, value=diastolic)])
        prescriber.vet(p, visit)
        ordered = [f for f in visit.facts if f.code in antihypertensives]
        assert bool(ordered) == treated, (systolic, diastolic)
        assert all(f.text == HYPERTENSION for f in ordered)
        emergency = Visit(p.now, "EMER", 0.1, [Fact(SYSTOLIC, value=systolic), Fact(DIASTOLIC, value=diastolic)])
        Prescriber(knowledge, renews=False).vet(p, emergency)  # the ED leaves a chronic condition's therapy to the office
        assert not any(f.code in antihypertensives for f in emergency.facts)


PREGNANCY, LISINOPRIL, ATORVASTATIN = "SNOMED/72892002", "RXNORM/314076", "RXNORM/259255"
SAFE_IN_PREGNANCY = {"RXNORM/896762", "RXNORM/198034"}  # labetalol, nifedipine (ACOG 2019)


def _pregnant_hypertensive(*facts: tuple[float, str, int | None, str | None]) -> pl.DataFrame:
    """A woman of 31, hypertensive on lisinopril since 2015, pregnant from day 50 to day 320, the
    pregnancy recorded at a prenatal visit on day 100; `facts` are added."""
    chart = _chart(*_visit(0, 1, (HYPERTENSION, None), (LISINOPRIL, HYPERTENSION)),
                   (100, visit_start_code("AMB"), 2, None), (50, PREGNANCY, 2, None), (100.02, VISIT_END, 2, None),
                   (320, "TRAJSIM/condition_end", None, PREGNANCY), *facts)
    return chart.with_columns(code=pl.col("code").replace({SEX_MALE: "TRAJSIM/sex/F"}),
                              time=pl.when(pl.col("code") == BIRTH).then(datetime(1984, 1, 1)).otherwise("time")).sort("time")


def test_a_drug_a_pregnancy_rules_out_breaks_a_rule_once_the_pregnancy_is_known():
    """FDA boxed warning: an ACE inhibitor is stopped as soon as pregnancy is detected; a statin is not started."""
    rule = "drug_contraindicated_in_pregnancy"
    assert rule in _rules(_pregnant_hypertensive())  # lisinopril taken through the pregnancy
    stopped = _pregnant_hypertensive((100, MEDICATION_END, None, LISINOPRIL), (100, "RXNORM/896762", 2, HYPERTENSION))
    assert rule not in _rules(stopped)  # stopped at the first prenatal visit, labetalol instead
    started = _pregnant_hypertensive((100, MEDICATION_END, None, LISINOPRIL), (100, "RXNORM/896762", 2, HYPERTENSION),
                                     *_visit(200, 3, ("SNOMED/55822004", None), (ATORVASTATIN, "SNOMED/55822004")))
    assert _rules(started) == {rule}  # a statin for hyperlipidemia during the pregnancy, and none expected there
    after = _pregnant_hypertensive((100, MEDICATION_END, None, LISINOPRIL), (100, "RXNORM/896762", 2, HYPERTENSION),
                                   *_visit(400, 3, ("SNOMED/55822004", None), (ATORVASTATIN, "SNOMED/55822004")))
    assert rule not in _rules(after)  # after the delivery


def test_the_prescriber_switches_a_pregnant_hypertensive_to_labetalol_or_nifedipine_and_starts_no_statin():
    from tests.test_episodes import patient
    from trajsim.engine import Fact, Visit
    from trajsim.engine.prescriptions import Prescriber
    from trajsim.engine.source import ACTIVE

    knowledge = load_knowledge()
    p, prescriber = patient(age=41, sex="F"), Prescriber(knowledge)
    p.conditions[HYPERTENSION] = ACTIVE
    before = Visit(p.now - 200, "AMB", 0.02, [Fact(LISINOPRIL, text=HYPERTENSION)])
    prescriber.vet(p, before)
    assert [f.code for f in before.facts] == [LISINOPRIL]
    p.medications[LISINOPRIL] = ACTIVE
    prenatal = Visit(p.now, "AMB", 0.02, [Fact("SNOMED/424441002"), Fact(PREGNANCY, offset_days=-40),
                                          Fact("SNOMED/44054006"), Fact(LISINOPRIL, text=HYPERTENSION)])
    prescriber.vet(p, prenatal)
    codes = [f.code for f in prenatal.facts]
    assert LISINOPRIL not in codes[:4] and Fact(MEDICATION_END, text=LISINOPRIL, always_recorded=True) in prenatal.facts
    assert set(codes) & SAFE_IN_PREGNANCY and ATORVASTATIN not in codes and "RXNORM/312961" not in codes
    assert "RXNORM/860975" in codes  # the new diabetic's metformin is allowed


def test_a_hypertensive_still_at_stage_2_after_three_months_on_one_drug_without_a_second_breaks_a_rule():
    """ACC/AHA 2017: treatment intensified, a first-line drug of another class added, when the
    pressure stays above goal; hydrochlorothiazide since day 200 here."""
    rule = "second_antihypertensive_missing"

    def found(*visits: tuple[float, float, float, str | None]) -> list[date]:
        chart = _hypertensive((200, 152, 88, "RXNORM/310798"), *visits)
        return find_violations(chart).filter(pl.col("rule") == rule)["time"].dt.date().to_list()

    assert found((260, 150, 92, None), (320, 146, 84, None), (400, 128, 78, None)) == [date(2015, 11, 17)]
    assert found((320, 146, 84, "RXNORM/197361"), (400, 144, 90, None)) == []  # amlodipine added; on two drugs since
    assert found((320, 136, 84, None)) == []  # at goal


def test_the_prescriber_adds_a_second_drug_after_three_months_above_goal_on_one():
    from tests.test_episodes import patient
    from trajsim.engine import Fact, Visit
    from trajsim.engine.prescriptions import Prescriber
    from trajsim.engine.source import ACTIVE

    knowledge = load_knowledge()
    diabetes, metformin, liraglutide = "SNOMED/44054006", "RXNORM/860975", "RXNORM/897122"
    p, prescriber = patient(age=56, sex="M"), Prescriber(knowledge)
    p.conditions[HYPERTENSION] = p.conditions[diabetes] = ACTIVE
    started = Visit(p.now, "AMB", 0.02, [Fact("LOINC/8480-6", value=150.0), Fact("LOINC/4548-4", value=8.6)])
    prescriber.vet(p, started)
    first = {f.code for f in started.facts if f.code.startswith("RXNORM/")}
    assert metformin in first and liraglutide not in first
    for code in first:
        p.medications[code] = ACTIVE

    def visit(days: float) -> set[str]:
        seen = Visit(p.now + days, "AMB", 0.02, [Fact("LOINC/8480-6", value=148.0), Fact("LOINC/4548-4", value=8.4)])
        prescriber.vet(p, seen)
        return {f.code for f in seen.facts if f.code.startswith("RXNORM/")} - first

    assert visit(45) == set()  # too soon to judge the first drugs
    added = visit(100)
    assert liraglutide in added and len(added) == 2  # a GLP-1 agonist and a second antihypertensive


def test_a_renewal_of_the_one_drug_taken_is_no_step_up():
    rule = "second_antihypertensive_missing"
    chart = _hypertensive((200, 152, 88, "RXNORM/310798"), (580, 150, 92, "RXNORM/310798"))  # renewed, still high
    assert find_violations(chart).filter(pl.col("rule") == rule)["time"].dt.date().to_list() == [date(2016, 8, 3)]


CKD, ALBUMIN_RATIO, LOSARTAN = "SNOMED/709044004", "LOINC/14959-1", "RXNORM/979492"
HYPOTHYROIDISM, LEVOTHYROXINE = "SNOMED/83664006", "RXNORM/966222"


def _kidney_chart(ratio: float, drug: str | None = None) -> pl.DataFrame:
    """A man of 55 with CKD since 2015, his albumin/creatinine ratio measured at a visit in 2016."""
    seen = datetime(2016, 3, 1, 9)
    visit = [Event(1, seen, 2, visit_start_code("AMB")), Event(1, seen, 2, ALBUMIN_RATIO, ratio, "mg/g"),
             *([Event(1, seen, 2, drug, text=CKD)] if drug else []), Event(1, seen + timedelta(minutes=20), 2, VISIT_END)]
    return pl.concat([_chart(*_visit(0, 1, (CKD, None))), events_frame(visit)]).sort("time")


def test_the_rules_catch_albuminuric_kidney_disease_without_a_raas_inhibitor_and_untreated_hypothyroidism():
    rule = "raas_inhibitor_missing_in_albuminuric_ckd"
    assert rule in _rules(_kidney_chart(51.0))  # moderately increased albuminuria (A2), KDIGO 2024
    assert rule not in _rules(_kidney_chart(12.0))  # A1: not due
    assert rule not in _rules(_kidney_chart(51.0, LOSARTAN))
    assert "thyroid_hormone_missing_in_hypothyroidism" in _rules(_chart(*_visit(0, 1, (HYPOTHYROIDISM, None))))
    assert not _rules(_chart(*_visit(0, 1, (HYPOTHYROIDISM, None), (LEVOTHYROXINE, HYPOTHYROIDISM))))


def test_the_prescriber_starts_a_raas_inhibitor_at_albuminuria_and_levothyroxine_in_hypothyroidism():
    from tests.test_episodes import patient
    from trajsim.engine import Fact, Visit
    from trajsim.engine.prescriptions import Prescriber
    from trajsim.engine.source import ACTIVE
    from trajsim.knowledge.therapy import guideline_therapies

    knowledge = load_knowledge()
    raas = next(t.codes for t in guideline_therapies(knowledge) if t.rule == "raas_inhibitor_missing_in_albuminuric_ckd")
    for ratio, treated in ((12.0, False), (51.0, True), (420.0, True)):
        p = patient(age=55, sex="M")
        p.conditions[CKD] = ACTIVE
        visit = Visit(p.now, "AMB", 0.02, [Fact("SNOMED/390906007"), Fact(ALBUMIN_RATIO, value=ratio, unit="mg/g")])
        Prescriber(knowledge, renews=False).vet(p, visit)
        assert any(f.code in raas for f in visit.facts) == treated, ratio
    p = patient(age=48, sex="F")
    p.conditions[HYPOTHYROIDISM] = ACTIVE
    visit = Visit(p.now, "AMB", 0.02, [Fact("SNOMED/390906007")])
    Prescriber(knowledge, renews=False).vet(p, visit)
    assert [f.text for f in visit.facts if f.code == LEVOTHYROXINE] == [HYPOTHYROIDISM]


PNEUMONIA, AMOXICILLIN, AZITHROMYCIN = "SNOMED/233604007", "RXNORM/308182", "RXNORM/308460"


def test_pneumonia_gets_an_antibiotic_in_the_ed_and_the_rules_catch_one_without():
    """Pneumonia had no drug in the knowledge base: 25 reference patients of 300 with it got none."""
    from tests.test_episodes import patient
    from trajsim.engine import Fact, Visit
    from trajsim.engine.prescriptions import Prescriber

    assert "antibiotic_missing_in_pneumonia" in _rules(_chart(*_visit(0, 1, (PNEUMONIA, None), encounter_class="EMER")))
    assert not _rules(_chart(*_visit(0, 1, (PNEUMONIA, None), (AMOXICILLIN, PNEUMONIA), encounter_class="EMER")))
    knowledge = load_knowledge()
    for allergic, drug in ((False, AMOXICILLIN), (True, AZITHROMYCIN)):
        p = patient(age=50, sex="M")
        if allergic:
            p.allergies.add("SNOMED/91936005")  # allergy to penicillin
        ed = Visit(p.now, "EMER", 0.1, [Fact("SNOMED/50849002"), Fact(PNEUMONIA)])
        Prescriber(knowledge, renews=False).vet(p, ed)
        assert [f.text for f in ed.facts if f.code == drug] == [PNEUMONIA], allergic
