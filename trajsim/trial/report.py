"""The trial's numbers and pictures: CSV/JSON tables for machines and one self-contained HTML page
(plots embedded as PNG) that sets the synthetic arm beside the real one built with the same criteria."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from trajsim.clock import DAYS_PER_YEAR
from trajsim.atomic import atomic_writer, write_bytes_atomic
from trajsim.evaluate.plots import REAL, SYNTHETIC, overlaid_histograms, panels, png
from trajsim.evaluate.report import STYLE
from trajsim.trial.propensity import CONTROL, TREATED, Adjustment, adjust
from trajsim.trial.stats import PowerEstimate, event_rates, kaplan_meier, power_estimate, table_one
from trajsim.scenario import Trial

COLORS = {"synthetic": SYNTHETIC, "real": REAL}
SMALL_ARM = 30  # fewer patients than this and the intervals are too wide to read
RATE_COLUMNS = {"arm": "arm", "endpoint": "endpoint", "events": "events", "person_years": "person-years",
                "rate_per_100py": "rate per 100 person-years", "lower": "95% CI lower", "upper": "95% CI upper"}


@dataclass
class TrialReport:
    """Everything the page shows; `arms` maps an arm's name (synthetic, real) to its arm table."""

    title: str
    trial: Trial
    arms: dict[str, pl.DataFrame]
    notes: list[str]  # where each arm came from, how long it took
    table_one: pl.DataFrame
    km: pl.DataFrame  # arm, endpoint, years, survival, lower, upper
    rates: pl.DataFrame  # arm, endpoint, events, person_years, rate_per_100py, lower, upper
    power: dict[str, PowerEstimate]  # by arm
    attrition: dict[str, dict[str, int]]  # by arm: patients left after each eligibility step
    warnings: list[str]
    adjustment: Adjustment | None = None  # the propensity-adjusted comparison, when asked for and possible


def summarise(title: str, trial: Trial, arms: dict[str, pl.DataFrame], notes: list[str],
              attrition: dict[str, dict[str, int]] | None = None) -> TrialReport:
    """Table 1, Kaplan-Meier curves, event rates and power for every non-empty arm, with a warning
    for an arm too small to read."""
    horizon = trial.follow_up_days / DAYS_PER_YEAR
    filled = {name: arm for name, arm in arms.items() if arm.height}
    km = [kaplan_meier(arm, e.name, horizon).with_columns(pl.lit(name).alias("arm"))
          for name, arm in filled.items() for e in trial.endpoints if e.kind == "time_to_event"]
    rates = [event_rates(arm, trial).with_columns(pl.lit(name).alias("arm")) for name, arm in filled.items()]
    power = {name: power_estimate(arm, trial.power, horizon) for name, arm in filled.items()} if trial.power else {}
    first = ["arm", "endpoint"]
    warnings = [f"The {name} arm has only {arm.height} patient{'s' * (arm.height != 1)}: its curves, rates and "
                f"Table 1 are too uncertain to compare (at least {SMALL_ARM} are needed to read them)."
                for name, arm in arms.items() if arm.height < SMALL_ARM]
    adjusted = None
    if trial.adjustment != "none" and {TREATED, CONTROL} <= set(arms):
        adjusted = adjust(arms, trial, trial.adjustment, horizon)
        if isinstance(adjusted, str):
            warnings.append(adjusted)
            adjusted = None
    elif trial.adjustment != "none":
        warnings.append(f"trial.adjustment = {trial.adjustment!r} compares a real arm with the synthetic one; "
                        "without real records (--real) the arm is reported as built.")
    return TrialReport(title, trial, arms, notes, table_one(arms, trial),
                       pl.concat(km).select(*first, pl.exclude(first)) if km else pl.DataFrame(),
                       pl.concat(rates).select(*first, pl.exclude(first)) if rates else pl.DataFrame(), power,
                       attrition or {}, warnings, adjusted)


def write_report(report: TrialReport, out_dir: Path) -> list[Path]:
    """table1.csv, km.csv, rates.csv, power.json and report.html in `out_dir` (with an adjustment also
    propensity.csv, balance.csv, hazard_ratios.csv and km_adjusted.csv); returns their paths."""
    out_dir = Path(out_dir)
    written = []
    tables = [("table1", report.table_one), ("km", report.km), ("rates", report.rates)]
    if report.adjustment is not None:
        a = report.adjustment
        tables += [("propensity", a.scores), ("balance", a.balance), ("hazard_ratios", a.hazard_ratios),
                   ("km_adjusted", a.km)]
    for name, frame in tables:
        path = out_dir / f"{name}.csv"
        with atomic_writer(path) as handle:
            frame.write_csv(handle)
        written.append(path)
    power = {name: estimate.as_dict() for name, estimate in report.power.items()}
    write_bytes_atomic(out_dir / "power.json", orjson.dumps(power, option=orjson.OPT_INDENT_2))
    write_bytes_atomic(out_dir / "report.html", render_html(report).encode("utf-8"))
    return [*written, out_dir / "power.json", out_dir / "report.html"]


def _html_table(frame: pl.DataFrame, caption: str | None = None) -> str:
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    head = "".join(f"<th>{escape(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{'' if v is None else escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.iter_rows())
    return f"<table>{title}<tr>{head}</tr>{body}</table>"


def _figure(data: bytes, caption: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{encoded}"><figcaption>{escape(caption)}</figcaption></figure>'


def km_plot(trial: Trial, km: pl.DataFrame, arms: dict[str, pl.DataFrame]) -> bytes | None:
    """One panel per time-to-event endpoint on one probability scale, every arm's curve (from `km`)
    with its shaded 95% band and a tick where a patient of `arms` was censored."""
    endpoints = [e for e in trial.endpoints if e.kind == "time_to_event"]
    if km.is_empty() or not endpoints:
        return None
    lowest = max(0.0, float(km["lower"].min()) - 0.05)  # zoomed: control-arm curves sit near 1
    figure, axes = panels(len(endpoints), columns=2, size=(5.0, 3.6))
    for ax, endpoint in zip(axes, endpoints):
        for arm, color in COLORS.items():
            curve = km.filter((pl.col("arm") == arm) & (pl.col("endpoint") == endpoint.name))
            if curve.is_empty():
                continue
            years, survival = curve["years"].to_numpy(), curve["survival"].to_numpy()
            ax.step(years, survival, where="post", color=color, label=f"{arm} (n={arms[arm].height})")
            ax.fill_between(years, curve["lower"], curve["upper"], step="post", color=color, alpha=0.2)
            table = arms[arm]
            censored = np.unique(table.filter(~pl.col(f"{endpoint.name}_event"))[f"{endpoint.name}_years"].to_numpy())
            censored = censored[censored <= years[-1]]
            at = np.clip(np.searchsorted(years, censored, side="right") - 1, 0, None)
            ax.plot(censored, survival[at], "|", color=color, markersize=6)
        ax.set_title(f"Free of {endpoint.title}")
        ax.set_xlabel("years since index")
        ax.set_ylabel("probability")
        ax.set_ylim(lowest, 1.01)
        ax.legend(fontsize=8)
    return png(figure)


def at_risk(report: TrialReport) -> pl.DataFrame:
    """Patients still followed and free of each endpoint at every whole year since index, per arm."""
    horizon = int(report.trial.follow_up_days // DAYS_PER_YEAR)
    rows = []
    for endpoint in (e for e in report.trial.endpoints if e.kind == "time_to_event"):
        for arm, table in report.arms.items():
            durations = table[f"{endpoint.name}_years"].to_numpy()
            rows.append({"endpoint": endpoint.title, "arm": arm,
                         **{f"year {t}": int((durations >= t).sum()) for t in range(horizon + 1)}})
    return pl.DataFrame(rows)


def attrition_table(report: TrialReport) -> pl.DataFrame:
    """The CONSORT flow: each eligibility step and the patients left in every arm after it."""
    steps = list(dict.fromkeys(step for flow in report.attrition.values() for step in flow))
    return pl.DataFrame({"step": steps, **{f"{arm} patients": [flow.get(step) for step in steps]
                                           for arm, flow in report.attrition.items()}})


def lab_plot(report: TrialReport) -> bytes | None:
    """Distribution of each lab endpoint's change, real and synthetic overlaid."""
    labs = [e for e in report.trial.endpoints if e.kind == "lab_change"]
    if not labs:
        return None
    figure, axes = panels(len(labs), columns=2, size=(5.0, 3.6))
    for ax, endpoint in zip(axes, labs):
        real, synthetic = (report.arms[arm][f"{endpoint.name}_change"].drop_nulls().to_numpy().astype(np.float64)
                           if arm in report.arms else np.array([]) for arm in ("real", "synthetic"))
        overlaid_histograms(ax, real, synthetic, f"{endpoint.title}: change at {endpoint.at_days} days", "change")
    return png(figure)


def _adjustment_html(report: TrialReport) -> list[str]:
    """The propensity section: the model and what was done, balance before and after, hazard ratios
    as built and adjusted, and the adjusted Kaplan-Meier curves."""
    a = report.adjustment
    titles = {e.name: e.title for e in report.trial.endpoints}
    ratios = a.hazard_ratios.with_columns(pl.col("endpoint").replace(titles)).rename(
        {"hazard_ratio": "hazard ratio (real vs synthetic)", "lower": "95% CI lower", "upper": "95% CI upper"})
    parts = [f"<h2>Propensity-score {'matching' if a.method == 'match' else 'weighting'}</h2>",
             f"<p>{escape(a.summary)}</p>", _html_table(a.balance, "Balance: SMD before and after"),
             _html_table(ratios, "Cox hazard ratios with 95% intervals (robust on the adjusted sample"
                         + (", clustered on the matched pair)" if a.method == "match" else ")"))]
    km = km_plot(report.trial, a.km, a.arms)
    if km is not None:
        sample = "matched patients" if a.method == "match" else "weighted patients (bands approximate)"
        parts.append(_figure(km, f"Kaplan-Meier curves of the {sample}."))
    return parts


def render_html(report: TrialReport) -> str:
    """The report page: inputs, Table 1, Kaplan-Meier curves, event rates, lab changes, power."""
    trial = report.trial
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(report.title)}</title>", f"<style>{STYLE}</style></head><body>",
             f"<h1>{escape(report.title)}</h1>",
             *(f'<p class="inputs">{escape(note)}</p>' for note in report.notes),
             *(f'<p class="note">Warning: {escape(warning)}</p>' for warning in report.warnings),
             "<h2>Eligibility and attrition</h2>"]
    if report.attrition:
        parts.append(_html_table(attrition_table(report)))
    loss = (f", or after {trial.loss_to_follow_up_days} days without any record (lost to follow-up)"
            if trial.loss_to_follow_up_days else "")
    parts += [f"<p>Follow-up from the index date for up to {trial.follow_up_days / DAYS_PER_YEAR:.1f} years; it ends "
              f"at death or at the end of the data{escape(loss)}.</p>",
              f"<details><summary>The criteria as written</summary><pre>{escape(trial.model_dump_json(indent=2))}</pre></details>",
              "<h2>Baseline characteristics (Table 1)</h2>", _html_table(report.table_one)]
    if len(report.arms) > 1:
        parts.append("<p>SMD: standardised mean difference between the two arms; |SMD| below 0.1 is usually read as balanced.</p>")
    if report.adjustment is not None:
        parts += _adjustment_html(report)
    parts.append("<h2>Time to event</h2>")
    km = km_plot(trial, report.km, report.arms)
    if km is not None:
        parts += [_figure(km, "Kaplan-Meier curves with 95% confidence bands (exponential Greenwood); ticks mark "
                              "censored patients."), _html_table(at_risk(report), "Number at risk")]
    lab = lab_plot(report)
    if lab is not None:
        parts.append(_figure(lab, "Change of each lab endpoint from baseline."))
    if not report.rates.is_empty():
        titles = {e.name: e.title for e in trial.endpoints}
        parts += ["<h2>Event rates per 100 person-years</h2>", _html_table(report.rates.with_columns(pl.col("endpoint").replace(titles)).rename(RATE_COLUMNS, strict=False)),
                  "<p>Exact Poisson 95% intervals.</p>"]
    if report.power:
        parts.append("<h2>Power</h2>")
        for arm, p in report.power.items():
            sized = f"{p.patients_needed:,} patients in total" if p.patients_needed else "no estimate (no events expected)"
            reached = "n/a" if p.power_at_twice_arm is None else f"{100 * p.power_at_twice_arm:.1f}%"
            parts.append(f"<p><b>{escape(arm)} arm</b>: to detect a hazard ratio of {p.hazard_ratio:g} on {escape(p.endpoint)} "
                         f"(two-sided alpha {p.alpha:g}, power {p.power:g}, 1:1, {p.follow_up_years:.1f} years of follow-up) "
                         f"a trial needs {p.events_needed:,} events, so {sized} at an event probability of "
                         f"{p.event_probability:.3f}; a trial of this arm plus an equal treated arm would have power {reached}.</p>")
        parts.append("<p>Schoenfeld, Biometrika 1981;68:316-9.</p>")
    parts += ["</body></html>", ""]
    return "\n".join(parts)

