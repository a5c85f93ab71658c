"""Fidelity: does the synthetic table look like the real one, code by code, visit by visit and
patient by patient?

Rates are compared with R² (1 - squared error over the real rates' variance, so 1 means identical
and values below 0 mean worse than predicting the mean); distributions with the two-sample
Kolmogorov-Smirnov statistic (largest gap between the two cumulative curves, 0 = identical) and the
Wasserstein distance (how far, in the variable's own unit, mass has to move to turn one into the other).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl
from scipy import stats

from trajsim.evaluate import plots
from trajsim.evaluate.section import Headline, Listing, Plot, Section, rounded
from trajsim.evaluate.trajectories import Views, code_matrix, row_index, vocabulary, years_between
from trajsim.vocab import load_vocabulary

PAIR_CODES = 1000  # co-occurrence and bigram matrices use the most frequent codes, bounding memory
TOP_LABS = 8
MOST_DIVERGENT = 20  # codes listed by the largest gap in prevalence
PYRAMID_BAND_YEARS = 10
PYRAMID_TOP = 90  # last band is 90+


def r_squared(real: np.ndarray, synthetic: np.ndarray) -> float | None:
    """How well synthetic rates reproduce real ones: 1 identical, 0 no better than the real mean."""
    if real.size == 0:
        return None
    residual = float(np.square(real - synthetic).sum())
    total = float(np.square(real - real.mean()).sum())
    if total == 0:
        return 1.0 if residual == 0 else 0.0
    return 1.0 - residual / total


def distribution_gap(real: np.ndarray, synthetic: np.ndarray) -> dict[str, float | None]:
    """KS statistic, Wasserstein distance and both means of two samples (None when one is empty)."""
    if real.size == 0 or synthetic.size == 0:
        return {"ks": None, "wasserstein": None, "real_mean": rounded(real.mean() if real.size else None),
                "synthetic_mean": rounded(synthetic.mean() if synthetic.size else None)}
    return {"ks": rounded(stats.ks_2samp(real, synthetic).statistic),
            "wasserstein": rounded(stats.wasserstein_distance(real, synthetic)),
            "real_mean": rounded(real.mean()), "synthetic_mean": rounded(synthetic.mean())}


def display(code: str, names: Mapping[str, str] | None = None) -> str:
    """A code's name: the source's own (`names`, from its codes table), else the shipped vocabulary's."""
    if names and code in names:
        return names[code]
    concept = load_vocabulary().get(code)
    return concept.display if concept else code


# --- code rates -----------------------------------------------------------------------------------

def prevalence(views: Views) -> pl.DataFrame:
    """Share of patients with each clinical code at least once."""
    patients = max(views.patients.height, 1)
    return (views.facts.unique(["subject_id", "code"]).group_by("code").len()
            .select("code", prevalence=pl.col("len") / patients))


def most_divergent(real: pl.DataFrame, synthetic: pl.DataFrame, limit: int = MOST_DIVERGENT,
                   names: Mapping[str, str] | None = None) -> list[dict]:
    """The codes whose prevalence differs most between the tables, with names and both rates."""
    joined = (real.join(synthetic, on="code", how="full", coalesce=True, suffix="_synthetic").fill_null(0)
              .with_columns(gap=(pl.col("prevalence_synthetic") - pl.col("prevalence")))
              .sort([pl.col("gap").abs(), "code"], descending=[True, False]).head(limit))
    return [{"code": row["code"], "display": display(row["code"], names), "real": rounded(row["prevalence"]),
             "synthetic": rounded(row["prevalence_synthetic"])} for row in joined.iter_rows(named=True)]


def aligned(real: pl.DataFrame, synthetic: pl.DataFrame, key: str, value: str) -> tuple[np.ndarray, np.ndarray]:
    """The value columns of two keyed tables over the union of keys (absent keys count as 0)."""
    joined = real.join(synthetic, on=key, how="full", coalesce=True, suffix="_synthetic").sort(key).fill_null(0)
    return joined[value].to_numpy(), joined[f"{value}_synthetic"].to_numpy()


def pair_rates(views: Views, vocab: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(within-visit co-occurrence, next-visit bigram) rate matrices over `vocab`.

    Co-occurrence [i, j] is the share of visits recording both codes; bigram [i, j] is the share of
    consecutive visit pairs with code i in the first visit and code j in the next.
    """
    visits = views.visits
    in_visit = views.facts.filter(pl.col("encounter_id").is_not_null())
    rows = row_index(visits["encounter_id"], in_visit["encounter_id"])
    known = rows.is_not_null()
    matrix = code_matrix(rows.filter(known), in_visit["code"].filter(known), visits.height, vocab)
    cooccurrence = (matrix.T @ matrix).toarray() / max(visits.height, 1)
    subject = visits["subject_id"].to_numpy()
    follows = np.flatnonzero(subject[1:] == subject[:-1])
    bigram = (matrix[follows].T @ matrix[follows + 1]).toarray() / max(follows.size, 1)
    return cooccurrence, bigram


def matrix_r_squared(real: np.ndarray, synthetic: np.ndarray, mask: np.ndarray) -> tuple[float | None, np.ndarray, np.ndarray]:
    """R² over the cells that are non-zero in either table (within `mask`), and those cells."""
    cells = mask & ((real > 0) | (synthetic > 0))
    return r_squared(real[cells], synthetic[cells]), real[cells], synthetic[cells]


# --- distributions --------------------------------------------------------------------------------

def visits_per_patient(views: Views) -> np.ndarray:
    counts = views.visits.group_by("subject_id").len()
    return (views.patients.select("subject_id").join(counts, on="subject_id", how="left", maintain_order="left")
            .fill_null(0)["len"].to_numpy().astype(float))


def codes_per_visit(views: Views) -> np.ndarray:
    counts = (views.facts.filter(pl.col("encounter_id").is_not_null()).unique(["encounter_id", "code"])
              .group_by("encounter_id").len())
    return (views.visits.select("encounter_id").join(counts, on="encounter_id", how="left", maintain_order="left")
            .fill_null(0)["len"].to_numpy().astype(float))


def visit_gaps_days(views: Views) -> np.ndarray:
    return (views.visits.select(gap=pl.col("start").diff().over("subject_id").dt.total_seconds() / 86_400)
            .drop_nulls()["gap"].to_numpy())


def top_labs(views: Views) -> list[str]:
    """The most often measured numeric codes (labs and vitals), most frequent first."""
    measured = views.facts.filter(pl.col("numeric_value").is_not_null())["code"]
    return vocabulary(measured, limit=TOP_LABS)


def lab_values(views: Views, code: str) -> np.ndarray:
    return (views.facts.filter((pl.col("code") == code) & pl.col("numeric_value").is_not_null())
            ["numeric_value"].to_numpy())


def pyramid(views: Views) -> pl.DataFrame:
    """Share of patients in each (sex, ten-year age band at the end of the record)."""
    known = views.patients.filter(pl.col("sex").is_not_null() & pl.col("age_at_end").is_not_null())
    band = (pl.col("age_at_end") // PYRAMID_BAND_YEARS * PYRAMID_BAND_YEARS).clip(0, PYRAMID_TOP).cast(pl.Int64)
    return (known.group_by("sex", band.alias("band")).len()
            .select(pl.concat_str("sex", pl.lit(":"), "band").alias("cell"),
                    share=pl.col("len") / max(known.height, 1)))


def ages_at_death(views: Views) -> np.ndarray:
    return (views.patients.filter(pl.col("death").is_not_null() & pl.col("birth").is_not_null())
            .select(years_between("birth", "death").alias("age"))["age"].to_numpy())


def mortality(views: Views) -> float | None:
    return views.patients["death"].is_not_null().mean() if views.patients.height else None


def subgroup_rates(views: Views, group: str) -> pl.DataFrame:
    """Per value of `group` (sex or age band): patient share, mortality and visits per patient."""
    per_patient = views.patients.select("subject_id", group, dead=pl.col("death").is_not_null()).with_columns(
        visits=pl.Series(visits_per_patient(views)))
    return (per_patient.filter(pl.col(group).is_not_null()).group_by(group)
            .agg(share=pl.len() / max(views.patients.height, 1), mortality=pl.col("dead").mean(),
                 visits_per_patient=pl.col("visits").mean())
            .rename({group: "subgroup"}))


def subgroup_prevalence(views: Views, group: str) -> pl.DataFrame:
    """Code prevalence within each subgroup: (subgroup, code, prevalence)."""
    sizes = views.patients.group_by(group).len().rename({"len": "size"})
    return (views.facts.unique(["subject_id", "code"]).join(views.patients.select("subject_id", group), on="subject_id")
            .group_by(group, "code").len().join(sizes, on=group)
            .select(pl.col(group).alias("subgroup"), "code", prevalence=pl.col("len") / pl.col("size"))
            .filter(pl.col("subgroup").is_not_null()))


def subgroups(real: Views, synthetic: Views) -> list[dict]:
    """Rates by sex and by age band, side by side, with the prevalence R² within each subgroup."""
    rows = []
    for group in ("sex", "age_band"):
        rates = subgroup_rates(real, group).join(subgroup_rates(synthetic, group), on="subgroup", how="full",
                                                 coalesce=True, suffix="_synthetic").sort("subgroup")
        real_prevalence, synthetic_prevalence = subgroup_prevalence(real, group), subgroup_prevalence(synthetic, group)
        for rate in rates.iter_rows(named=True):
            pick = pl.col("subgroup") == rate["subgroup"]
            r2 = r_squared(*aligned(real_prevalence.filter(pick).drop("subgroup"),
                                    synthetic_prevalence.filter(pick).drop("subgroup"), "code", "prevalence"))
            rows.append({"group": group, **{k: rounded(v) if isinstance(v, float) else v for k, v in rate.items()},
                         "prevalence_r2": rounded(r2)})
    return rows


# --- the section ----------------------------------------------------------------------------------

def fidelity(real: Views, synthetic: Views, names: Mapping[str, str] | None = None) -> Section:
    """Every fidelity metric of `synthetic` against `real`, with plots."""
    real_rates, synthetic_rates = prevalence(real), prevalence(synthetic)
    prevalence_real, prevalence_synthetic = aligned(real_rates, synthetic_rates, "code", "prevalence")
    vocab = vocabulary(real.facts["code"], synthetic.facts["code"], limit=PAIR_CODES)
    co_real, bigram_real = pair_rates(real, vocab)
    co_synthetic, bigram_synthetic = pair_rates(synthetic, vocab)
    upper = np.triu(np.ones_like(co_real, dtype=bool), k=1)
    co_r2, co_x, co_y = matrix_r_squared(co_real, co_synthetic, upper)
    bigram_r2, bigram_x, bigram_y = matrix_r_squared(bigram_real, bigram_synthetic, np.ones_like(upper))
    prevalence_r2 = r_squared(prevalence_real, prevalence_synthetic)

    shapes = {name: (measure(real), measure(synthetic)) for name, measure in (
        ("visits_per_patient", visits_per_patient), ("codes_per_visit", codes_per_visit),
        ("inter_visit_gap_days", visit_gaps_days))}
    labs = {code: (lab_values(real, code), lab_values(synthetic, code)) for code in top_labs(real)}
    lab_gaps = {code: {"display": display(code, names), **distribution_gap(*values)} for code, values in labs.items()}
    lab_ks = [gap["ks"] for gap in lab_gaps.values() if gap["ks"] is not None]
    pyramid_real, pyramid_synthetic = aligned(pyramid(real), pyramid(synthetic), "cell", "share")
    pyramid_tvd = 0.5 * float(np.abs(pyramid_real - pyramid_synthetic).sum())
    deaths = (ages_at_death(real), ages_at_death(synthetic))
    groups = subgroups(real, synthetic)

    metrics = {
        "code_prevalence_r2": rounded(prevalence_r2),
        "codes_compared": int(prevalence_real.size),
        "cooccurrence_r2": rounded(co_r2),
        "sequential_bigram_r2": rounded(bigram_r2),
        "pair_codes": len(vocab),
        **{name: distribution_gap(*values) for name, values in shapes.items()},
        "labs": lab_gaps,
        "mean_lab_ks": rounded(float(np.mean(lab_ks))) if lab_ks else None,
        "age_sex_pyramid_tvd": rounded(pyramid_tvd),
        "mortality": {"real": rounded(mortality(real)), "synthetic": rounded(mortality(synthetic)),
                      "age_at_death": distribution_gap(*deaths)},
        "subgroups": groups,
        "most_divergent_codes": most_divergent(real_rates, synthetic_rates, names=names),
    }
    headlines = [
        Headline("Code prevalence R²", metrics["code_prevalence_r2"], "1 = identical"),
        Headline("Within-visit co-occurrence R²", metrics["cooccurrence_r2"], "1 = identical"),
        Headline("Next-visit bigram R²", metrics["sequential_bigram_r2"], "1 = identical"),
        Headline("Mean KS of top labs", metrics["mean_lab_ks"], "0 = identical"),
        Headline("Age/sex pyramid total variation", metrics["age_sex_pyramid_tvd"], "0 = identical"),
    ]
    section = Section("fidelity", __doc__, metrics, headlines)
    section.listings.append(Listing(
        f"The {MOST_DIVERGENT} codes whose share of patients differs most", ("code", "name", "real", "synthetic"),
        [(row["code"], row["display"], f"{row['real']:.1%}", f"{row['synthetic']:.1%}")
         for row in metrics["most_divergent_codes"]]))
    section.plots = [
        _rates_plot([("Patients with code", prevalence_real, prevalence_synthetic, prevalence_r2),
                     ("Visits with code pair", co_x, co_y, co_r2),
                     ("Consecutive visits with code i then j", bigram_x, bigram_y, bigram_r2)]),
        _shapes_plot(shapes, metrics),
        _labs_plot(labs, lab_gaps),
        _pyramid_plot(pyramid(real), pyramid(synthetic)),
        _mortality_plot(deaths, metrics["mortality"], groups),
    ]
    if not lab_ks:
        section.notes.append("The real table has no numeric measurements, so lab distributions were not compared.")
    return section


def _rates_plot(rates: list[tuple[str, np.ndarray, np.ndarray, float | None]]) -> Plot:
    figure, axes = plots.panels(len(rates))
    for ax, (title, real, synthetic, r2) in zip(axes, rates):
        plots.identity_scatter(ax, real, synthetic, title, r2)
    return Plot("Code rates", "Each dot is one code (left), one pair of codes recorded in the same visit (middle) "
                "or one ordered pair of codes in consecutive visits (right): its rate in the real table on the x axis "
                "and in the synthetic table on the y axis. Dots on the dashed diagonal are reproduced exactly; R² "
                "summarises how close they lie to it.", plots.png(figure))


def _shapes_plot(shapes: dict[str, tuple[np.ndarray, np.ndarray]], metrics: dict) -> Plot:
    figure, axes = plots.panels(3)
    for ax, (name, (real, synthetic)) in zip(axes, shapes.items()):
        gap = metrics[name]
        title = name.replace("_", " ")
        if gap["ks"] is not None:
            title += f"\nKS = {gap['ks']:.3f}, Wasserstein = {gap['wasserstein']:.2f}"
        plots.overlaid_histograms(ax, real, synthetic, title, name.rsplit("_", 1)[-1] if "days" in name else "count")
    return Plot("Record shape", "How many visits a patient has, how many distinct codes a visit records and how many "
                "days pass between a patient's consecutive visits, as overlaid densities. KS is the largest gap between "
                "the two cumulative distributions (0 = identical, 1 = disjoint); Wasserstein is how far, in the "
                "variable's unit, the synthetic distribution would have to move to match the real one.", plots.png(figure))


def _labs_plot(labs: dict[str, tuple[np.ndarray, np.ndarray]], gaps: dict[str, dict]) -> Plot:
    figure, axes = plots.panels(max(len(labs), 1), columns=4, size=(3.6, 3.0))
    for ax, (code, (real, synthetic)) in zip(axes, labs.items()):
        ks = gaps[code]["ks"]
        label = gaps[code]["display"]
        plots.overlaid_histograms(ax, real, synthetic, f"{label[:34]}\nKS = {ks:.3f}" if ks is not None else label[:34], code)
    return Plot("Measured values", f"Value distributions of the {len(labs)} most often measured labs and vitals in the "
                "real table, with the KS statistic of each (0 = identical distributions).", plots.png(figure))


def _pyramid_plot(real: pl.DataFrame, synthetic: pl.DataFrame) -> Plot:
    figure, (ax,) = plots.panels(1, size=(6.5, 4.2))
    bands = np.arange(0, PYRAMID_TOP + 1, PYRAMID_BAND_YEARS)
    for table, style in ((synthetic, {"color": plots.SYNTHETIC, "alpha": 0.6, "label": "synthetic"}),
                         (real, {"fill": False, "edgecolor": plots.REAL, "linewidth": 2, "label": "real"})):
        shares = dict(table.iter_rows())
        for sex, sign in (("F", -1), ("M", 1)):
            values = [sign * shares.get(f"{sex}:{band}", 0.0) for band in bands]
            ax.barh(bands, values, height=PYRAMID_BAND_YEARS * 0.9, **(style if sex == "F" else {**style, "label": None}))
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(bands, [f"{b}-{b + 9}" if b < PYRAMID_TOP else f"{b}+" for b in bands])
    ax.xaxis.set_major_formatter(lambda value, _: f"{abs(value):.0%}")
    ax.set_xlabel("share of patients (women left, men right)")
    ax.set_title("Age at end of record by sex")
    ax.legend(fontsize=8)
    return Plot("Age/sex pyramid", "Share of patients in each ten-year age band (age at death or at the end of the "
                "record), women to the left and men to the right. The total variation distance is the share of "
                "patients that would have to change cell to make the pyramids equal (0 = identical).", plots.png(figure))


def _mortality_plot(deaths: tuple[np.ndarray, np.ndarray], mortality_metrics: dict, groups: list[dict]) -> Plot:
    figure, axes = plots.panels(3)
    gap = mortality_metrics["age_at_death"]
    plots.overlaid_histograms(axes[0], *deaths, f"Age at death\nreal {mortality_metrics['real']:.1%} died, "
                              f"synthetic {(mortality_metrics['synthetic'] or 0):.1%}"
                              if mortality_metrics["real"] is not None else "Age at death", "years", bins=20)
    labels = [row["subgroup"] for row in groups]
    for ax, rate, title in ((axes[1], "mortality", "Mortality by subgroup"),
                            (axes[2], "visits_per_patient", "Visits per patient by subgroup")):
        plots.paired_bars(ax, labels, [row[rate] or 0 for row in groups], [row[f"{rate}_synthetic"] or 0 for row in groups],
                          title, rate.replace("_", " "))
    return Plot("Mortality and subgroups", f"Left: age at death of those who died (KS = {gap['ks']}). Middle and right: "
                "do rates match within each sex and age band (age at the end of the record)? A fair synthetic table "
                "reproduces them in every subgroup, not only on average; metrics.json also lists the code prevalence "
                "R² within each subgroup.", plots.png(figure))
