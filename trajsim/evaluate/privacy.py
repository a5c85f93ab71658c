"""Privacy: does the synthetic table give away the records the generator learned from?

Compared with the training records (--train), using the real table as held-out records the generator
never saw, so every number has a baseline: a synthetic table that merely resembles the population is
as close to the training records as fresh real patients are.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.neighbors import NearestNeighbors

from trajsim.evaluate import plots
from trajsim.evaluate.section import Headline, Plot, Section, rounded
from trajsim.evaluate.trajectories import IS_CLINICAL, Views, code_matrix, row_index, vocabulary
from trajsim.events import DEATH, SEX_FEMALE, SEX_MALE

FEATURE_CODES = 1000  # record vectors use the training records' most frequent codes
SAME_RECORD = 1e-3  # distances below this are float round-off of identical vectors
RECORD_CODES = pl.col("code").is_in([SEX_FEMALE, SEX_MALE, DEATH]) | IS_CLINICAL


def signatures(views: Views) -> pl.Series:
    """One hash per patient of what identifies a trajectory regardless of ids and dates: sex, birth
    year and the ordered sequence of recorded codes."""
    sequences = (views.events.filter(RECORD_CODES).sort("subject_id", "time", "code")
                 .group_by("subject_id", maintain_order=True).agg(pl.col("code").str.join("|")))
    born = views.patients.select("subject_id", year=pl.col("birth").dt.year().cast(pl.String).fill_null("?"))
    return (born.join(sequences, on="subject_id", how="left").fill_null("")
            .select(pl.concat_str("year", pl.lit("|"), "code").hash(seed=0))
            .to_series())


def record_vectors(views: Views, vocab: list[str]) -> np.ndarray:
    """Patients x codes: log2(1 + times the code is recorded), so a patient's hundred blood pressure
    readings do not outweigh a rare diagnosis (sex and death count as codes)."""
    facts = views.events.filter(RECORD_CODES)
    rows = row_index(views.patients["subject_id"], facts["subject_id"])
    counts = code_matrix(rows, facts["code"], views.patients.height, vocab, binary=False).toarray()
    return np.log2(1 + counts)


def distance_to_closest(reference: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query record, the Euclidean distance to the closest reference record (0 = same
    code counts; distances below float round-off are reported as 0)."""
    neighbours = NearestNeighbors(n_neighbors=1, algorithm="brute", metric="euclidean").fit(reference)
    distance = neighbours.kneighbors(queries, return_distance=True)[0][:, 0]
    return np.where(distance < SAME_RECORD, 0.0, distance)


def privacy(real: Views, synthetic: Views, train: Views | None) -> Section:
    """Exact copies, distance to closest training record and membership inference, or a skipped
    section saying why when no training records were given."""
    if train is None:
        reason = "Pass --train (the records the generator learned from) to measure privacy."
        return Section("privacy", __doc__, {"skipped": reason}, notes=[reason])
    if min(real.patients.height, synthetic.patients.height, train.patients.height) == 0:
        reason = "Privacy needs at least one patient in each of the real, synthetic and training tables."
        return Section("privacy", __doc__, {"skipped": reason}, notes=[reason])

    train_signatures = signatures(train)
    copy_rate = signatures(synthetic).is_in(train_signatures.implode()).mean()
    copy_baseline = signatures(real).is_in(train_signatures.implode()).mean()

    vocab = vocabulary(train.events.filter(RECORD_CODES)["code"], limit=FEATURE_CODES)
    train_vectors, real_vectors, synthetic_vectors = (record_vectors(v, vocab) for v in (train, real, synthetic))
    synthetic_to_train = distance_to_closest(train_vectors, synthetic_vectors)
    holdout_to_train = distance_to_closest(train_vectors, real_vectors)
    # Membership inference: an attacker who holds a real record guesses "it was in the training set"
    # the closer it lies to some synthetic record. AUC 0.5 means the guess is a coin toss.
    member_distance = distance_to_closest(synthetic_vectors, train_vectors)
    holdout_distance = distance_to_closest(synthetic_vectors, real_vectors)
    is_member = np.r_[np.ones(member_distance.size), np.zeros(holdout_distance.size)]
    attack_score = -np.r_[member_distance, holdout_distance]
    auc = roc_auc_score(is_member, attack_score)

    metrics = {
        "exact_copy_rate": rounded(copy_rate),
        "exact_copy_rate_holdout_baseline": rounded(copy_baseline),
        "dcr_median_synthetic": rounded(float(np.median(synthetic_to_train))),
        "dcr_median_holdout": rounded(float(np.median(holdout_to_train))),
        "dcr_zero_share_synthetic": rounded(float(np.mean(synthetic_to_train == 0))),
        "dcr_zero_share_holdout": rounded(float(np.mean(holdout_to_train == 0))),
        "membership_inference_auc": rounded(auc),
        "feature_codes": len(vocab),
        "train_patients": train.patients.height,
    }
    headlines = [
        Headline("Exact copies of training records", metrics["exact_copy_rate"],
                 f"share of synthetic patients; held-out real baseline {metrics['exact_copy_rate_holdout_baseline']}"),
        Headline("Median distance to closest training record", metrics["dcr_median_synthetic"],
                 f"held-out real baseline {metrics['dcr_median_holdout']}; lower than baseline = copying"),
        Headline("Membership-inference AUC", metrics["membership_inference_auc"], "0.5 = no leak, 1 = full leak"),
    ]
    figure, (left, right) = plots.panels(2)
    plots.overlaid_histograms(left, holdout_to_train, synthetic_to_train, "Distance to closest training record",
                              "distance between log code counts", bins=25)
    false_positive, true_positive, _ = roc_curve(is_member, attack_score)
    right.plot(false_positive, true_positive, color=plots.SYNTHETIC)
    right.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    right.set_title(f"Membership-inference attack\nAUC = {auc:.3f}")
    right.set_xlabel("held-out records flagged as members")
    right.set_ylabel("training records flagged as members")
    plot = Plot("Distance to closest record and membership inference",
                "Left: for each synthetic patient (orange) and each held-out real patient (blue), the distance to "
                "the most similar training record, comparing how often each code is recorded (log scale). A synthetic table that copies its training data piles "
                "up at 0, left of the held-out curve. Right: an attacker ranks real records by how close they lie to "
                "a synthetic record and guesses the closest were training members; the ROC curve shows how well that "
                "works (diagonal, AUC 0.5 = no better than chance).", plots.png(figure))
    return Section("privacy", __doc__, metrics, headlines, [plot])
