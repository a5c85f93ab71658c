"""Rules about measured values that contradict each other or the chart, read as a clinician reads
a record: an adult's height that changes, a child who shrinks, a BMI that is not weight/height^2,
a diastolic pressure not below the systolic, an eGFR that is not the creatinine's by CKD-EPI 2021,
panel results that cannot stand together (an anion gap no laboratory reports, a hematocrit that is
not about three hemoglobins, a differential that does not add up to 100%, an albumin above the total
protein, a direct bilirubin above the total),
a value that implies a diagnosis the chart does not have (`data/value_limits.csv`: a fever, an
HbA1c in the diabetic range), a child's blood pressure at stage 2 hypertension with no hypertension
on the chart (AAP 2017, `knowledge/child_blood_pressure.py`) and one measurement recorded twice at once.

Related values (BMI with weight and height, diastolic with systolic, eGFR with creatinine, a
metabolic panel's electrolytes, a blood count's indices) are judged within one encounter, as a
panel is read together.
"""

from __future__ import annotations

import polars as pl

from trajsim.clock import DAYS_PER_YEAR
from trajsim.events import BIRTH, SEX_FEMALE, VISIT_END, VISIT_START_PREFIX
from trajsim.knowledge import Knowledge, child_blood_pressure
from trajsim.knowledge.physiology import (
    ALBUMIN, BICARBONATE, BILIRUBIN, BMI, CHLORIDE, CREATININE, DIASTOLIC, DIFFERENTIAL, DIRECT_BILIRUBIN, EGFR, HEIGHT, HEMATOCRIT, HEMOGLOBIN,
    SODIUM, SYSTOLIC, TOTAL_PROTEIN, UREA_NITROGEN, WEIGHT, body_parameters, ckd_epi_2021, value_limits,
)
from trajsim.rules.base import as_measured, violation
from trajsim.rules.record import _condition_spells

RULES: dict[str, str] = {
    "adult_height_change": "an adult's height more than 5 cm from their first adult height (from age 20)",
    "child_height_drop": "a child's height more than 3 cm below their tallest earlier height (before age 20)",
    "bmi_mismatch": "a BMI more than 1 kg/m2 from weight/height^2 of the same encounter",
    "diastolic_not_below_systolic": "a diastolic pressure at or above the systolic of the same encounter",
    "egfr_mismatch": "an adult's eGFR more than 10% (+1) from CKD-EPI 2021 of the creatinine of the same encounter",
    "urea_creatinine_mismatch": "an adult's urea nitrogen over the creatinine of the same encounter above 40 "
                                "(about 10-20 in health; above 20 a prerenal state or a bleed the chart would show)",
    "anion_gap_implausible": "a sodium minus chloride and bicarbonate of one encounter below 3 or above 25 mmol/L "
                             "(a laboratory error, or an acidosis beyond what the chart explains)",
    "hematocrit_mismatch": "a hemoglobin over hematocrit of one encounter (the MCHC) outside 28-38 g/dL: the "
                           "hematocrit is about three times the hemoglobin",
    "differential_not_100": "a leukocyte differential of one encounter whose five fractions add up to more than "
                            "1.5 points from 100%",
    "albumin_above_total_protein": "an albumin at or above the total protein of the same encounter (total protein "
                                   "is albumin plus globulin)",
    "direct_bilirubin_above_total": "a direct (conjugated) bilirubin above the total bilirubin of the same "
                                    "encounter, of which it is a part",
    "hba1c_diabetic_range_without_diabetes": "an HbA1c of 6.5% or more with no diabetes active or diagnosed "
                                             "in the same encounter",
    "fever_without_diagnosis": "a temperature of 38.0 C or more with no febrile condition active or diagnosed "
                               "in the same encounter",
    "albuminuria_without_kidney_disease": "a urine albumin/creatinine ratio of 30 mg/g or more with no chronic "
                                          "kidney disease active or diagnosed in the same encounter",
    "child_bp_stage2_without_hypertension": "a child's (1-17 years) systolic or diastolic pressure at or above "
                                            "AAP 2017 stage 2 hypertension for age and sex at the tallest height "
                                            "percentile (95th percentile + 12 mm Hg; from 13, 140/90 if lower) with "
                                            "no hypertension active or diagnosed in the same encounter",
    "duplicate_measurement": "one measurement recorded twice at the same time in one encounter (a BP panel "
                             "with two systolic values)",
}
ADULT_HEIGHT_CHANGE_CM, CHILD_HEIGHT_DROP_CM, BMI_TOLERANCE = 5.0, 3.0, 1.0
# Kraut and Madias, Clin J Am Soc Nephrol 2007;2:162-74: a gap below 3 mmol/L is almost always a
# laboratory error (or a rare paraproteinaemia); above 25 an organic acidosis.
ANION_GAP_RANGE = (3.0, 25.0)
# MedlinePlus, BUN test: a BUN-to-creatinine ratio of about 10:1-20:1 in health, higher with
# dehydration or bleeding into the gut; twice the upper limit is what no chart here explains (approximate)
UREA_CREATININE_HIGHEST = 40.0
MCHC_RANGE = (28.0, 38.0)  # Sarma, Clinical Methods 3rd ed. (1990), ch. 152: 32-36 g/dL, with room for disease
DIFFERENTIAL_TOLERANCE = 1.5  # five fractions each rounded to 0.1 point, and an analyser's unclassified cells
EGFR_RELATIVE_TOLERANCE, EGFR_ABSOLUTE_TOLERANCE = 0.10, 1.0
_SECONDS_PER_YEAR = DAYS_PER_YEAR * 86_400


def check(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """The violations of this family's rules."""
    people = facts.group_by("subject_id").agg(
        birth=pl.col("time").filter(pl.col("code") == BIRTH).min(),
        female=(pl.col("code") == SEX_FEMALE).any())
    return [_heights(facts, people), _panels(facts, people), *_limits(facts, knowledge),
            _child_pressures(facts, people, knowledge), _duplicates(facts, knowledge)]


def _aged(frame: pl.LazyFrame, people: pl.LazyFrame) -> pl.LazyFrame:
    return frame.join(people, on="subject_id").with_columns(
        age=(pl.col("time") - pl.col("birth")).dt.total_seconds() / _SECONDS_PER_YEAR)


def _heights(facts: pl.LazyFrame, people: pl.LazyFrame) -> pl.LazyFrame:
    """Adult heights against the first adult one; children's heights against the tallest so far."""
    heights = (_aged(facts.filter((pl.col("code") == HEIGHT) & pl.col("numeric_value").is_not_null()), people)
               .with_columns(adult=pl.col("age") >= body_parameters()["adult_height_age"])
               .sort("subject_id", "time"))
    value = pl.col("numeric_value")
    adults = heights.filter("adult").with_columns(first=value.first().over("subject_id"))
    children = heights.filter(~pl.col("adult")).with_columns(
        tallest=value.cum_max().shift(1).over("subject_id"))
    return pl.concat([
        violation(adults.filter((value - pl.col("first")).abs() > ADULT_HEIGHT_CHANGE_CM), "adult_height_change",
                  pl.format("{} cm; first adult height {} cm", value, "first")),
        violation(children.filter(pl.col("tallest") - value > CHILD_HEIGHT_DROP_CM), "child_height_drop",
                  pl.format("{} cm after {} cm", value, "tallest")),
    ])


def _panel(facts: pl.LazyFrame, codes: tuple[str, ...]) -> pl.LazyFrame:
    """One row per encounter with any of `codes`: the first value of each (null if not measured)
    and the time of the last of the first readings, which a violation is dated at."""
    readings = facts.filter(pl.col("code").is_in(codes) & pl.col("encounter_id").is_not_null()
                            & pl.col("numeric_value").is_not_null())
    return (readings.sort("time").group_by("subject_id", "encounter_id")
            .agg(*(pl.col("numeric_value").filter(pl.col("code") == c).first().alias(c) for c in codes),
                 *(pl.col("time").filter(pl.col("code") == c).first().alias(f"{c} time") for c in codes))
            .with_columns(time=pl.max_horizontal(*(f"{c} time" for c in codes))))


def _panels(facts: pl.LazyFrame, people: pl.LazyFrame) -> pl.LazyFrame:
    bmi = _panel(facts, (HEIGHT, WEIGHT, BMI)).with_columns(
        expected=pl.col(WEIGHT) / (pl.col(HEIGHT) / 100) ** 2, code=pl.lit(BMI))
    pressure = _panel(facts, (SYSTOLIC, DIASTOLIC)).with_columns(code=pl.lit(DIASTOLIC))
    kidney = (_aged(_panel(as_measured(facts), (CREATININE, EGFR)).drop_nulls([CREATININE, EGFR]), people)
              .filter(pl.col("age") >= 18)
              .with_columns(expected=pl.struct(CREATININE, "age", "female").map_batches(
                  lambda s: pl.Series(ckd_epi_2021(s.struct.field(CREATININE).to_numpy(),
                                                   s.struct.field("age").to_numpy(),
                                                   s.struct.field("female").to_numpy())),
                  return_dtype=pl.Float64), code=pl.lit(EGFR)))
    urea = (_aged(_panel(facts, (UREA_NITROGEN, CREATININE)).drop_nulls([UREA_NITROGEN, CREATININE]), people)
            .filter((pl.col("age") >= 18) & (pl.col(CREATININE) > 0))
            .with_columns(ratio=pl.col(UREA_NITROGEN) / pl.col(CREATININE), code=pl.lit(UREA_NITROGEN)))
    egfr_off = (pl.col(EGFR) - pl.col("expected")).abs() > (
        EGFR_RELATIVE_TOLERANCE * pl.col("expected") + EGFR_ABSOLUTE_TOLERANCE)
    return pl.concat([
        *_laboratory_panels(facts),
        violation(bmi.filter((pl.col(BMI) - pl.col("expected")).abs() > BMI_TOLERANCE), "bmi_mismatch",
                  pl.format("BMI {}; weight/height^2 is {}", pl.col(BMI), pl.col("expected").round(1))),
        violation(pressure.filter(pl.col(DIASTOLIC) >= pl.col(SYSTOLIC)), "diastolic_not_below_systolic",
                  pl.format("{}/{} mm Hg", pl.col(SYSTOLIC), pl.col(DIASTOLIC))),
        violation(kidney.filter(egfr_off), "egfr_mismatch",
                  pl.format("eGFR {} at creatinine {}; CKD-EPI 2021 gives {}", pl.col(EGFR), pl.col(CREATININE),
                            pl.col("expected").round(0))),
        violation(urea.filter(pl.col("ratio") > UREA_CREATININE_HIGHEST), "urea_creatinine_mismatch",
                  pl.format("urea nitrogen {} mg/dL at creatinine {} mg/dL (ratio {})", pl.col(UREA_NITROGEN),
                            pl.col(CREATININE), pl.col("ratio").round(0))),
    ])


def _laboratory_panels(facts: pl.LazyFrame) -> list[pl.LazyFrame]:
    """A metabolic panel's anion gap, a blood count's MCHC and differential, a chemistry's proteins and
    bilirubins."""
    electrolytes = _panel(facts, (SODIUM, CHLORIDE, BICARBONATE)).drop_nulls([SODIUM, CHLORIDE, BICARBONATE]) \
        .with_columns(gap=pl.col(SODIUM) - pl.col(CHLORIDE) - pl.col(BICARBONATE), code=pl.lit(CHLORIDE))
    count = _panel(facts, (HEMOGLOBIN, HEMATOCRIT)).drop_nulls([HEMOGLOBIN, HEMATOCRIT]) \
        .with_columns(mchc=pl.col(HEMOGLOBIN) / pl.col(HEMATOCRIT) * 100, code=pl.lit(HEMATOCRIT))
    differential = _panel(facts, DIFFERENTIAL).drop_nulls(list(DIFFERENTIAL)) \
        .with_columns(total=pl.sum_horizontal(*DIFFERENTIAL), code=pl.lit(DIFFERENTIAL[0]))
    proteins = _panel(facts, (ALBUMIN, TOTAL_PROTEIN)).drop_nulls([ALBUMIN, TOTAL_PROTEIN]) \
        .with_columns(code=pl.lit(ALBUMIN))
    bilirubin = _panel(facts, (BILIRUBIN, DIRECT_BILIRUBIN)).drop_nulls([BILIRUBIN, DIRECT_BILIRUBIN]) \
        .with_columns(code=pl.lit(DIRECT_BILIRUBIN))
    low, high = ANION_GAP_RANGE
    return [
        violation(electrolytes.filter((pl.col("gap") < low) | (pl.col("gap") > high)), "anion_gap_implausible",
                  pl.format("Na {} - Cl {} - HCO3 {} = {} mmol/L", pl.col(SODIUM), pl.col(CHLORIDE),
                            pl.col(BICARBONATE), pl.col("gap"))),
        violation(count.filter((pl.col("mchc") < MCHC_RANGE[0]) | (pl.col("mchc") > MCHC_RANGE[1])),
                  "hematocrit_mismatch", pl.format("hemoglobin {} g/dL, hematocrit {}%", pl.col(HEMOGLOBIN),
                                                   pl.col(HEMATOCRIT))),
        violation(differential.filter((pl.col("total") - 100).abs() > DIFFERENTIAL_TOLERANCE), "differential_not_100",
                  pl.format("fractions add up to {}%", pl.col("total").round(1))),
        violation(proteins.filter(pl.col(ALBUMIN) >= pl.col(TOTAL_PROTEIN)), "albumin_above_total_protein",
                  pl.format("albumin {} g/dL, total protein {} g/dL", pl.col(ALBUMIN), pl.col(TOTAL_PROTEIN))),
        violation(bilirubin.filter(pl.col(DIRECT_BILIRUBIN) > pl.col(BILIRUBIN)), "direct_bilirubin_above_total",
                  pl.format("direct bilirubin {} mg/dL, total {} mg/dL", pl.col(DIRECT_BILIRUBIN), pl.col(BILIRUBIN))),
    ]


def _limits(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """Values at or above a limit with none of the conditions that explain them active at the time
    or diagnosed in the same encounter. An encounter not yet ended (a live feed cut off mid-visit)
    is not judged: its diagnosis may be still to come."""
    found = []
    spells = _condition_spells(facts, knowledge)
    visit = ["subject_id", "encounter_id"]
    ended = facts.filter(pl.col("code") == VISIT_END).select(visit)
    unfinished = (facts.filter(pl.col("code").str.starts_with(VISIT_START_PREFIX) & pl.col("encounter_id").is_not_null())
                  .select(visit).join(ended, on=visit, how="anti"))
    for limit in value_limits().values():
        high = (facts.filter((pl.col("code") == limit.code) & (pl.col("numeric_value") >= limit.limit))
                .join(unfinished, on=visit, how="anti"))
        found.append(violation(_unexplained(high, spells, facts, sorted(limit.condition_codes(knowledge))), limit.rule,
                               pl.format("{} with none of {} active", pl.col("numeric_value"),
                                         pl.lit(", ".join(sorted(limit.conditions))))))
    return found


def _unexplained(readings: pl.LazyFrame, spells: pl.LazyFrame, facts: pl.LazyFrame, codes: list[str]) -> pl.LazyFrame:
    """The readings that none of the condition `codes` explains: none is active at the reading's
    time, and none is diagnosed in the reading's encounter."""
    readings = readings.with_row_index("reading")
    active = (readings.join(spells.filter(pl.col("condition").is_in(codes)), on="subject_id")
              .filter((pl.col("start") <= pl.col("time")) & (pl.col("end").is_null() | (pl.col("end") > pl.col("time")))))
    diagnosed = readings.join(facts.filter(pl.col("code").is_in(codes) & pl.col("encounter_id").is_not_null())
                              .select("subject_id", "encounter_id"), on=["subject_id", "encounter_id"])
    explained = pl.concat([active.select("reading"), diagnosed.select("reading")])
    return readings.join(explained, on="reading", how="anti").drop("reading")


def _child_pressures(facts: pl.LazyFrame, people: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Children's readings at stage 2 hypertension when hypertension is neither active nor diagnosed
    at the visit. The tallest children's threshold is the highest of an age, so a reading above it
    is stage 2 whatever the child's height (a record need not carry one)."""
    measures = child_blood_pressure.MEASURES
    thresholds = pl.LazyFrame(
        [(code, sex, age, child_blood_pressure.stage2_threshold(sex, measure, age, 95.0))
         for code, measure in measures.items() for sex in ("F", "M")
         for age in range(int(child_blood_pressure.AGE_MIN), int(child_blood_pressure.AGE_MAX))],
        schema={"code": pl.String, "sex": pl.String, "age_years": pl.Int64, "threshold": pl.Float64}, orient="row")
    readings = (_aged(facts.filter(pl.col("code").is_in(list(measures)) & pl.col("numeric_value").is_not_null()), people)
                .with_columns(sex=pl.when("female").then(pl.lit("F")).otherwise(pl.lit("M")),
                              age_years=pl.col("age").floor().cast(pl.Int64))
                .join(thresholds, on=["code", "sex", "age_years"])
                .filter(pl.col("numeric_value") >= pl.col("threshold")))
    hypertension = knowledge.conditions["hypertension"]
    found = _unexplained(readings, _condition_spells(facts, knowledge), facts, [hypertension.code, hypertension.icd10cm])
    return violation(found, "child_bp_stage2_without_hypertension", pl.format(
        "{} mm Hg at age {}; stage 2 from {}", "numeric_value", "age_years", "threshold"))


def _duplicates(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    measured = facts.filter(pl.col("code").is_in(list(knowledge.measurements)) & pl.col("encounter_id").is_not_null())
    again = measured.with_columns(
        order=pl.int_range(pl.len()).over("subject_id", "encounter_id", "time", "code"),
        first=pl.col("numeric_value").first().over("subject_id", "encounter_id", "time", "code"),
    ).filter(pl.col("order") > 0)
    return violation(again, "duplicate_measurement", pl.format("{} again; first {}", "numeric_value", "first"))
