"""`trajsim trial`: build a scenario's synthetic control arm (and, given real records, the same arm
from them), then write the arm tables, FHIR records, statistics and an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from trajsim.trial.report import TrialReport


def trial_command(
    scenario_file: Path = typer.Option(..., "--scenario", help="Scenario TOML file with a `trial` table (see docs/trial.md)."),
    real: Path | None = typer.Option(None, "--real", "-r", help="Real records to build the same arm from (any format "
                                                                "`trajsim ingest` reads, or canonical events Parquet)."),
    real_format: str | None = typer.Option(None, "--real-format", help="Format of --real (detected if omitted): "
                                                                      "events, meds, omop, fhir, synthea-csv."),
    vocabulary: Path | None = typer.Option(None, "--vocabulary", help="OMOP vocabulary folder or zip (CONCEPT, "
                                                                     "CONCEPT_ANCESTOR): code sets include descendants."),
    target: int | None = typer.Option(None, "--target", "-n", help="Arm size (overrides trial.target_size)."),
    adjust: str | None = typer.Option(None, "--adjust", help="With --real: none, match (1:1 on the propensity score) "
                                                             "or weight (stabilised IPTW); overrides trial.adjustment."),
    seed: int | None = typer.Option(None, "--seed", "-s", help="Random seed (overrides seed)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (overrides output.dir)."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Processes (local) or Ray CPUs simulating batches "
                                                                    "in parallel (the arm is the same for any number)."),
    backend: str = typer.Option("local", "--backend", help="Where batches run: local (this machine) or ray."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Existing Ray cluster, e.g. ray://head:10001."),
) -> None:
    """Build a synthetic control arm: Table 1, Kaplan-Meier curves, event rates, power and an HTML report."""
    from trajsim.console import console, fail, progress_bar
    from trajsim.ingest import IngestError, load_events
    from trajsim.scenario import ScenarioError, load_scenario, with_overrides
    from trajsim.trial import TrialError
    from trajsim.trial.arm import build_arm
    from trajsim.trial.criteria import attrition
    from trajsim.trial.export import write_records, write_table
    from trajsim.trial.report import summarise, write_report
    from trajsim.trial.synthetic import require_trial, synthetic_arm
    from trajsim.trial.vocabulary import omop_descendants

    try:
        scenario = load_scenario(scenario_file)
        require_trial(scenario)
        scenario = with_overrides(scenario, "command line", **{
            "trial.target_size": target, "trial.adjustment": adjust, "seed": seed, "output.dir": out})
        trial = require_trial(scenario)
        descendants = omop_descendants(vocabulary) if vocabulary else None
        real_events = load_events(real, real_format) if real else None
    except (ScenarioError, TrialError, IngestError) as exc:
        raise fail(str(exc)) from None
    out_dir = scenario.output.dir
    with progress_bar() as bar:
        task = bar.add_task(f"Building the {scenario.name} arm", total=trial.target_size)
        try:
            synthetic = synthetic_arm(scenario, descendants=descendants,
                                      on_batch=lambda screened, found: bar.update(task, completed=found),
                                      workers=workers, backend=backend, ray_address=ray_address)
        except (TrialError, ValueError) as exc:
            raise fail(str(exc)) from None
    arms = {"synthetic": synthetic.table}
    flows = {"synthetic": synthetic.attrition}
    notes = [f"Synthetic: {synthetic.table.height:,} eligible of {synthetic.screened:,} simulated patients "
             f"({100 * synthetic.table.height / synthetic.screened:.1f}%) from scenario {scenario.name} "
             f"(seed {scenario.seed}) in {synthetic.seconds:.1f} s."]
    written = write_table(synthetic.table, out_dir / "arm")
    records = write_records(synthetic.events, synthetic.scenario, out_dir)
    if real_events is not None:
        data_end = real_events["time"].max()
        arms["real"] = build_arm(real_events, trial, data_end, descendants)
        flows["real"] = attrition(real_events, trial, descendants)
        notes.append(f"Real: {arms['real'].height:,} eligible of {real_events['subject_id'].n_unique():,} patients in "
                     f"{real} (data end {data_end:%Y-%m-%d}).")
        written += write_table(arms["real"], out_dir / "real_arm")
    report = summarise(f"{scenario.name}: synthetic control arm", trial, arms, notes, flows)
    written += write_report(report, out_dir)
    _print_summary(console, report)
    console.print(f"Wrote the records of {records.patients:,} patients ({records.bytes_written / 1e6:,.1f} MB) and "
                  f"{len(written):,} tables and reports to {out_dir} (open {out_dir / 'report.html'}).", highlight=False)
    if records.violations:
        rules = ", ".join(f"{rule} ({count:,})" for rule, count in sorted(records.violations.items()))
        raise fail(f"{sum(records.violations.values())} clinical rule violation(s) in the arm's records: {rules}", code=1)


def _print_summary(console: Console, report: TrialReport) -> None:
    """Event rates per arm and endpoint, the hazard ratios of a propensity adjustment, then the
    sample size each arm implies."""
    table = Table(title=report.notes[0])
    table.add_column("arm")
    table.add_column("patients", justify="right")
    for column in ("endpoint", "events", "person-years", "per 100 PY (95% CI)"):
        table.add_column(column, justify="right" if column != "endpoint" else "left")
    for row in report.rates.iter_rows(named=True):
        table.add_row(row["arm"], f"{report.arms[row['arm']].height:,}", row["endpoint"], f"{row['events']:,}",
                      f"{row['person_years']:,.1f}", f"{row['rate_per_100py']:.2f} ({row['lower']:.2f}-{row['upper']:.2f})")
    console.print(table)
    if report.adjustment is not None:
        titles = {e.name: e.title for e in report.trial.endpoints}
        for row in report.adjustment.hazard_ratios.iter_rows(named=True):
            ratio = ("no estimate (no events)" if row["hazard_ratio"] is None
                     else f"{row['hazard_ratio']:.2f} ({row['lower']:.2f}-{row['upper']:.2f})")
            console.print(f"hazard ratio real vs synthetic, {titles[row['endpoint']]}, {row['sample']}: {ratio}",
                          highlight=False)
    for arm, p in report.power.items():
        console.print(f"{arm}: detecting HR {p.hazard_ratio:g} on {p.endpoint} needs {p.events_needed:,} events"
                      + (f", about {p.patients_needed:,} patients (1:1)" if p.patients_needed else ""), highlight=False)
