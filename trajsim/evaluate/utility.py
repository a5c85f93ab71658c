"""Utility: can a model trained on the synthetic table predict outcomes in real patients?

Train-on-synthetic, test-on-real (TSTR) against train-on-real, test-on-real (TRTR), with the same
simple model (logistic regression on the codes seen so far, age and sex) and the same real test
patients. TSTR close to TRTR means the synthetic table carries the signal a real study would use.

Each task is asked at yearly landmarks (1 January of the last five years with a full year of
follow-up in the table): of the patients alive and on record at the landmark, who has the outcome
within the next year?
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from trajsim.evaluate import plots
from trajsim.evaluate.section import Headline, Plot, Section, rounded
from trajsim.evaluate.trajectories import Views, code_matrix, vocabulary, years_between
from trajsim.events import DEATH

LANDMARK_YEARS = 5
HORIZON = timedelta(days=365)
FEATURE_CODES = 1000
REGULARISATION = 0.1  # logistic regression C: strong, since outcomes are rare and codes many
SPLIT_SEED = 0
# Diabetes mellitus in SNOMED CT (type 2, type 1, unspecified) and ICD-10-CM E08-E13.
DIABETES = (pl.col("code").is_in(["SNOMED/44054006", "SNOMED/46635009", "SNOMED/73211009"])
            | pl.col("code").str.contains(r"^ICD10CM/E(0[89]|1[0-3])"))


@dataclass(frozen=True)
class Task:
    """A yes/no outcome within a year of a landmark; `new_only` drops patients who already had it."""

    name: str
    title: str
    outcome: pl.Expr
    new_only: bool


TASKS = (
    Task("diabetes_next_year", "New diabetes diagnosis within a year", DIABETES, new_only=True),
    Task("death_next_year", "Death within a year", pl.col("code") == DEATH, new_only=False),
)


def landmarks(views: Views) -> list[datetime]:
    """1 January of the last LANDMARK_YEARS years that the table follows for a whole year."""
    if views.events.height == 0:
        return []
    last = (views.events["time"].max() - HORIZON).year
    return [datetime(year, 1, 1) for year in range(last - LANDMARK_YEARS + 1, last + 1)]


def samples(views: Views, task: Task) -> pl.DataFrame:
    """One row per (patient, landmark) at risk: born, alive and on record before the landmark (and
    without the outcome yet for a new-diagnosis task); `label` says whether the outcome follows
    within a year."""
    dates = landmarks(views)
    if not dates:
        return pl.DataFrame(schema={"subject_id": pl.UInt64, "landmark": pl.Datetime("us"), "label": pl.Boolean,
                                    "age": pl.Float64, "female": pl.Float64})
    outcome = views.events.filter(task.outcome).group_by("subject_id").agg(outcome=pl.col("time").min())
    on_record = views.facts.group_by("subject_id").agg(first_fact=pl.col("time").min())
    at_risk = (views.patients.join(on_record, on="subject_id").join(outcome, on="subject_id", how="left")
               .join(pl.DataFrame({"landmark": dates}, schema={"landmark": pl.Datetime("us")}), how="cross")
               .filter((pl.col("first_fact") < pl.col("landmark"))
                       & (pl.col("birth").is_null() | (pl.col("birth") < pl.col("landmark")))
                       & (pl.col("death").is_null() | (pl.col("death") >= pl.col("landmark")))))
    if task.new_only:
        at_risk = at_risk.filter(pl.col("outcome").is_null() | (pl.col("outcome") >= pl.col("landmark")))
    return (at_risk.select(
        "subject_id", "landmark",
        label=(pl.col("outcome") >= pl.col("landmark")) & (pl.col("outcome") < pl.col("landmark") + HORIZON),
        age=years_between("birth", "landmark").fill_null(0) / 100,
        female=(pl.col("sex") == "F").cast(pl.Float64).fill_null(0.5),
    ).with_columns(pl.col("label").fill_null(False)).sort("subject_id", "landmark"))


def first_seen(views: Views) -> pl.DataFrame:
    return views.facts.group_by("subject_id", "code").agg(first=pl.col("time").min())


def design(views: Views, rows: pl.DataFrame, vocab: list[str]) -> sparse.csr_matrix:
    """Features of each sample: every code recorded before its landmark, then age/100 and sex."""
    indexed = rows.with_row_index("row")
    seen = (indexed.select("row", "subject_id", "landmark").join(first_seen(views), on="subject_id")
            .filter(pl.col("first") < pl.col("landmark")))
    codes = code_matrix(seen["row"], seen["code"], rows.height, vocab)
    return sparse.hstack([codes, sparse.csr_matrix(rows.select("age", "female").to_numpy())], format="csr")


def auroc(fit: Views, test: Views, task: Task) -> dict:
    """AUROC on `test` of a logistic regression fitted on `fit`, with both sample counts; AUROC is
    None (with a reason) when either side lacks positive or negative samples."""
    fit_rows, test_rows = samples(fit, task), samples(test, task)
    counts = {"fit_samples": fit_rows.height, "fit_positives": int(fit_rows["label"].sum()),
              "test_samples": test_rows.height, "test_positives": int(test_rows["label"].sum())}
    for side, rows in (("training", fit_rows), ("test", test_rows)):
        if rows["label"].n_unique() < 2:
            return {"auroc": None, **counts, "reason": f"the {side} samples have only one outcome class"}
    vocab = vocabulary(first_seen(fit)["code"], limit=FEATURE_CODES)
    model = LogisticRegression(C=REGULARISATION, max_iter=2000)
    model.fit(design(fit, fit_rows, vocab), fit_rows["label"].to_numpy())
    predicted = model.predict_proba(design(test, test_rows, vocab))[:, 1]
    return {"auroc": rounded(roc_auc_score(test_rows["label"].to_numpy(), predicted)), **counts}


def split(views: Views) -> tuple[Views, Views]:
    """Two halves of a table's patients (fixed seed), for training and testing on real data."""
    subjects = views.patients["subject_id"].to_numpy()
    shuffled = np.random.default_rng(SPLIT_SEED).permutation(subjects)
    half = shuffled[: subjects.size // 2]
    return views.subset(half, keep=True), views.subset(half, keep=False)


def utility(real: Views, synthetic: Views, train: Views | None) -> Section:
    """TSTR and TRTR AUROC for each task. Real training records are `train` when given, else half
    of the real table (the other half is then the test set)."""
    real_fit, real_test = (train, real) if train is not None else split(real)
    tasks = {}
    for task in TASKS:
        trtr, tstr = auroc(real_fit, real_test, task), auroc(synthetic, real_test, task)
        tasks[task.name] = {"title": task.title, "trtr": trtr, "tstr": tstr}
    metrics = {"real_training_records": "--train" if train is not None else "half of --real",
               "landmark_years": LANDMARK_YEARS, "tasks": tasks}
    headlines = [Headline(f"{result['title']}: TSTR AUROC", result["tstr"]["auroc"],
                          f"TRTR {result['trtr']['auroc']}; 0.5 = chance, close to TRTR = useful")
                 for result in tasks.values()]
    section = Section("utility", __doc__, metrics, headlines)
    for result in tasks.values():
        for side in ("trtr", "tstr"):
            if result[side]["auroc"] is None:
                section.notes.append(f"{result['title']} ({side.upper()}): no AUROC because {result[side]['reason']}.")
    figure, (ax,) = plots.panels(1, size=(6.0, 3.8))
    plots.paired_bars(ax, [textwrap.fill(result["title"], 22) for result in tasks.values()],
                      [result["trtr"]["auroc"] or 0 for result in tasks.values()],
                      [result["tstr"]["auroc"] or 0 for result in tasks.values()], "AUROC on real test patients", "AUROC",
                      legend=("TRTR: trained on real", "TSTR: trained on synthetic"))
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1.15)
    section.plots.append(Plot("Train on synthetic, test on real", "Blue: the model trained on real records (TRTR); "
                              "orange: the same model trained on the synthetic table (TSTR); both tested on the same "
                              "real patients. The dashed line is chance (0.5).",
                              plots.png(figure)))
    return section
