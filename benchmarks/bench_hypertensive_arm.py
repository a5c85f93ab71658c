"""The treated-hypertensive arm a cardiovascular trial would draw, read against published figures:
adults 40-75 on an antihypertensive without a prior myocardial infarction or stroke, their
comorbidity at index and their 5-year risk of a first myocardial infarction or stroke.

    python benchmarks/bench_hypertensive_arm.py [PATIENTS] [MODEL ...]   (defaults: 300, reference default)

Published (US adults with treated hypertension): diabetes about 25-30% and hypercholesterolaemia
(high cholesterol or on a lipid-lowering drug) about 50-60% (NHANES; Fang et al., Hypertension 2021;
Egan et al., Circulation 2011); 5-year MI or stroke about 5-10% (the pooled cohort equations'
10-year ASCVD risk of such adults, Goff et al., Circulation 2014, is about 10-20%).
Index: the first antihypertensive order in 2015-2019 (or the window's start if one came before).
"""

from __future__ import annotations

import math
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import polars as pl

from trajsim.events import BIRTH, DEATH, SEX_FEMALE
from trajsim.generate import generate
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.acute import event_rate
from trajsim.scenario import Scenario, with_overrides

START, INDEX_END, END = datetime(2015, 1, 1), datetime(2020, 1, 1), datetime(2025, 1, 1)
FOLLOW_UP = pl.duration(days=1826)
# Ages on the window's end that can be 40-75 at an index date in 2015-2019.
AGE_MIX = [{"min": 45, "max": 65, "weight": 0.55}, {"min": 65, "max": 85, "weight": 0.45}]


def arm_events(patients: int, model: str, out: Path) -> pl.DataFrame:
    scenario = with_overrides(Scenario(), "hypertensive arm", **{
        "population.size": patients, "population.age_mix": AGE_MIX, "model": model, "output.formats": ["events"]})
    generate(scenario, out)
    return pl.read_parquet(out / "events" / "*.parquet")


def arm_summary(events: pl.DataFrame) -> dict[str, float]:
    """Size of the arm, comorbidity at index and the 5-year share with a first MI or stroke."""
    k, code, time = load_knowledge(), pl.col("code"), pl.col("time")
    codes = {key: [k.conditions[key].code, k.conditions[key].icd10cm] for key in
             ("hypertension", "type2_diabetes", "hyperlipidemia", "myocardial_infarction", "stroke",
              "coronary_disease", "atrial_fibrillation")}
    antihypertensives = [m.code for m in k.medications.get("hypertension", ())]
    lipid_lowering = sorted({m.code for ms in k.medications.values() for m in ms if m.group == "statin"})
    first = {key: events.filter(code.is_in(c)).group_by("subject_id").agg(time.min().alias(key))
             for key, c in codes.items()}
    index = (events.filter(code.is_in(antihypertensives)).group_by("subject_id").agg(index=time.min())
             .with_columns(index=pl.max_horizontal("index", pl.lit(START)))
             .filter(pl.col("index") < INDEX_END))
    statin = events.filter(code.is_in(lipid_lowering)).group_by("subject_id").agg(statin=time.min())
    born = events.filter(code == BIRTH).select("subject_id", born=time)
    died = events.filter(code == DEATH).select("subject_id", died=time)
    arm = index.join(born, on="subject_id")
    for frame in [*first.values(), statin, died]:
        arm = arm.join(frame, on="subject_id", how="left")
    age = (pl.col("index") - pl.col("born")).dt.total_days() / 365.25
    before = lambda column: pl.col(column).is_not_null() & (pl.col(column) <= pl.col("index"))  # noqa: E731
    arm = arm.filter(age.is_between(40, 75) & before("hypertension")
                     & ~before("myocardial_infarction") & ~before("stroke"))
    event = pl.min_horizontal("myocardial_infarction", "stroke")
    horizon = pl.col("index") + FOLLOW_UP
    with_event = event.is_not_null() & (event > pl.col("index")) & (event <= horizon)
    # Who can be judged at 5 years: an event, or followed the whole time (alive at 5 years inside the window).
    judged = with_event | ((horizon <= END) & (pl.col("died").is_null() | (pl.col("died") > horizon)))
    n = max(arm.height, 1)
    judged_arm = arm.filter(judged)
    factors = ["hypertension", "type2_diabetes", "hyperlipidemia", "coronary_disease", "atrial_fibrillation"]
    at_index = arm.with_columns(age=age, female=pl.col("subject_id").is_in(
        events.filter(code == SEX_FEMALE)["subject_id"].implode()), **{f"has_{f}": before(f) for f in factors})
    return {
        "arm size": float(arm.height),
        "diabetes at index": arm.filter(before("type2_diabetes")).height / n,
        "hyperlipidemia at index": arm.filter(before("hyperlipidemia")).height / n,
        "hyperlipidemia or on a statin at index": arm.filter(before("hyperlipidemia") | before("statin")).height / n,
        "judged at 5 years": float(judged_arm.height),
        "5-year MI or stroke": judged_arm.filter(with_event).height / max(judged_arm.height, 1),
        "5-year MI or stroke the rates imply": implied_risk(k, at_index, factors),
    }


def implied_risk(k, arm: pl.DataFrame, factors: list[str]) -> float:
    """Mean 5-year risk of a first MI or stroke from the engine's rates (engine/acute.py) for the
    arm's ages, sexes and risk factors at index: the observed share without its sampling noise."""
    risks = []
    for row in arm.iter_rows(named=True):
        sex, active = ("F" if row["female"] else "M"), {f for f in factors if row[f"has_{f}"]}
        hazard = 0.0
        for year in range(5):
            a = row["age"] + year + 0.5
            for key in ("myocardial_infarction", "stroke"):
                excess = sum(r - 1.0 for parent, r in k.risk_ratios.get(key, {}).items() if parent in active)
                hazard += event_rate(key, sex, a) * (1.0 + excess) / k.risk_normaliser(key, sex, a)
        risks.append(1 - math.exp(-hazard))
    return sum(risks) / max(len(risks), 1)


def main(patients: int, models: list[str]) -> None:
    summaries = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            summaries[model] = arm_summary(arm_events(patients, model, Path(tmp) / model))
    print(f"treated hypertensives 40-75 without prior MI/stroke, from {patients} adults per source")
    print(f"{'':40}" + "".join(f"{model:>12}" for model in models) + "   published")
    published = {"diabetes at index": "25-30%", "hyperlipidemia or on a statin at index": "50-60%",
                 "5-year MI or stroke": "5-10%", "5-year MI or stroke the rates imply": "5-10%"}
    for metric in summaries[models[0]]:
        values = [summaries[m][metric] for m in models]
        cells = "".join(f"{v:>12.0f}" if metric in ("arm size", "judged at 5 years") else f"{v:>12.1%}" for v in values)
        print(f"{metric:40}{cells}   {published.get(metric, '')}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300, sys.argv[2:] or ["reference", "default"])
