"""The `trajsim` command line: `generate` and `validate` live here; every other command lives in its
own package, named in `COMMANDS` and imported only when it runs.

User mistakes (a bad scenario, a missing folder) end with one sentence on stderr and exit code 2;
failed validation ends with exit code 1.
"""

from __future__ import annotations

import sys
from importlib import import_module
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from trajsim.console import console, errors, fail, progress_bar, set_verbosity
from trajsim.scenario import Scenario, ScenarioError, has_population_summary, load_scenario, with_overrides

if TYPE_CHECKING:
    from fhir_export.profiles import ProfileTally

# The commands of other packages, imported only when run (or listed by --help): the training
# command alone imports torch, and all of them together take seconds `generate` does not need.
COMMANDS = {"ingest": ("trajsim.ingest.command", "ingest_command"), "push": ("trajsim.push_command", "push_command"),
            "train": ("trajsim.model.command", "train_command"),
            "evaluate": ("trajsim.evaluate.command", "evaluate_command"),
            "trial": ("trajsim.trial.command", "trial_command"), "stream": ("trajsim.stream.command", "stream_command")}


class _Commands(TyperGroup):
    """The command group, loading a command of `COMMANDS` when it is first asked for."""

    def get_command(self, ctx: typer.Context, cmd_name: str) -> TyperCommand | TyperGroup | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module, function = COMMANDS[cmd_name]
            one = typer.Typer()
            one.command(cmd_name)(getattr(import_module(module), function))
            self.add_command(typer.main.get_command(one), cmd_name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return [*self.commands, *(name for name in COMMANDS if name not in self.commands)]


app = typer.Typer(help="Simulate longitudinal patient trajectories and export them as FHIR R4.", cls=_Commands,
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"trajsim {version('trajsim')}")
        raise typer.Exit()


@app.callback()
def main(
    show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="Print the version and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors (no progress, no summary)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="When output is a log, a progress line every second."),
) -> None:
    """Simulate longitudinal patient trajectories and export them as FHIR R4."""
    set_verbosity(quiet, verbose)


def _age_range(age: str | None) -> list[dict] | None:
    """`--age 30-40` as an age mix: every age from 30 to 40 included, weighted alike."""
    if age is None:
        return None
    low, _, high = age.partition("-")
    if not (low.strip().isdigit() and high.strip().isdigit()) or int(high) < int(low):
        raise fail(f"--age: expected MIN-MAX in whole years such as 30-40, got {age!r}")
    return [{"min": int(low), "max": int(high) + 1, "weight": 1.0}]


def _female_fraction(gender: str | None) -> float | None:
    if gender is None:
        return None
    if gender.upper() not in ("F", "M"):
        raise fail(f"--gender: expected F or M, got {gender!r}")
    return 1.0 if gender.upper() == "F" else 0.0


@app.command()
def generate(
    scenario_file: Path | None = typer.Option(None, "--scenario", help="Scenario TOML file (default: built-in default scenario)."),
    patients: int | None = typer.Option(None, "--patients", "-n", "-p", help="Cohort size (overrides population.size)."),
    seed: int | None = typer.Option(None, "--seed", "-s", help="Random seed (overrides seed)."),
    age: str | None = typer.Option(None, "--age", "-a", help="Ages MIN-MAX in years, both included, at the period's end, "
                                   "e.g. 30-40 (overrides population.age_mix)."),
    gender: str | None = typer.Option(None, "--gender", "-g", help="F or M: only women or only men (overrides "
                                      "population.female_fraction)."),
    model: str | None = typer.Option(None, "--model", help="Trajectory source (overrides model): default, reference "
                                     "or a `trajsim train` folder; without --scenario a trained folder's patients "
                                     "look like its training population."),
    state: str | None = typer.Option(None, "--state", help="Two-letter state code patients live in (overrides population.state)."),
    city: str | None = typer.Option(None, "--city", help="City patients live in, e.g. 'St. Louis' (overrides population.city)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (overrides output.dir)."),
    formats: list[str] | None = typer.Option(None, "--format", "-f", help="Output format, repeatable: bundle "
                                             "(transaction), collection, ndjson, events (overrides output.formats)."),
    backend: str = typer.Option("local", "--backend", help="Where shards run: local (this machine) or ray."),
    workers: int = typer.Option(1, "--workers", "-w", help="Worker processes (local) or Ray CPUs to use."),
    shard_size: int | None = typer.Option(None, "--shard-size", help="Patients per shard, a multiple of 256 (default 1024)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Existing Ray cluster, e.g. ray://head:10001."),
) -> None:
    """Generate a synthetic cohort as FHIR R4 bundles, bulk NDJSON and canonical events."""
    from trajsim.generate import generate as run

    try:
        scenario = load_scenario(scenario_file) if scenario_file else Scenario()
        like_source = model is not None and scenario_file is None and has_population_summary(model)
        scenario = with_overrides(scenario, "command line", **{
            "population.size": patients, "seed": seed, "output.dir": out, "output.formats": formats or None,
            "model": model, "population.drawn_from": "model" if like_source else None,
            "population.state": state, "population.city": city, "population.age_mix": _age_range(age),
            "population.female_fraction": _female_fraction(gender)})
    except ScenarioError as exc:
        raise fail(str(exc)) from None
    with progress_bar() as bar:
        task = bar.add_task(f"Simulating {scenario.name}", total=scenario.population.size)
        try:
            summary = run(scenario, on_progress=lambda n: bar.advance(task, n), backend=backend, workers=workers,
                          shard_size=shard_size, ray_address=ray_address)
        except ValueError as exc:
            raise fail(str(exc)) from None
    rate = summary.patients / max(summary.seconds, 1e-9)
    per_worker = f", {rate / workers:.0f} per worker" if workers > 1 else ""
    table = Table(title=f"{escape(scenario.name)}: {summary.patients} patients in {summary.seconds:.1f} s "
                        f"({rate:.0f} patients/s{per_worker})")
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in (("deaths", summary.deaths), ("encounters", summary.encounters), ("events", summary.events)):
        table.add_row(label, f"{value:,}")
    for resource_type, count in sorted(summary.resources.items()):
        table.add_row(f"{resource_type} resources", f"{count:,}")
    for plan, count in sorted(summary.plans.items()):
        table.add_row(f"plan at record end: {plan}", f"{count:,}")
    if summary.costs["billed"]:
        table.add_row("billed (payer paid / patients paid)", f"${summary.costs['billed'] / 100:,.0f} "
                      f"(${summary.costs['payer_paid'] / 100:,.0f} / ${summary.costs['patient_paid'] / 100:,.0f})")
    for rule, count in sorted(summary.violations.items()):
        table.add_row(f"[red]rule violations: {rule}[/]", f"{count:,}")
    table.add_row("written", f"{summary.bytes_written / 1e6:,.1f} MB to {escape(str(scenario.output.dir))}")
    console.print(table)
    if summary.violations:
        raise fail(f"{sum(summary.violations.values())} clinical rule violation(s) in the generated cohort", code=1)


@app.command()
def validate(directory: Path = typer.Argument(..., help="Folder of FHIR bundles (*.json) and/or bulk NDJSON (*.ndjson)."),
             profile: str | None = typer.Option(None, help="Also check the US Core profiles each resource claims: "
                                                           "us-core-6.1 or us-core-7.0.")) -> None:
    """Validate every FHIR resource against the R4 models and check that references resolve."""
    from fhir_export.profiles import ProfileSet
    from fhir_export.validate import validate_directory

    if not directory.is_dir():
        raise fail(f"{directory}: no such folder")
    try:
        profiles = ProfileSet.load(profile) if profile else None
    except ValueError as exc:
        raise fail(str(exc)) from None
    with progress_bar() as bar:
        task = bar.add_task("Validating", total=None)
        report = validate_directory(directory, on_file=lambda _: bar.advance(task), profiles=profiles)
    if report.files == 0:
        raise fail(f"{directory}: no FHIR files (*.json bundles or *.ndjson) found")
    table = Table(title=f"{escape(str(directory))}: {report.files} files, {sum(report.resources.values()):,} valid resources")
    table.add_column("resource type")
    table.add_column("valid", justify="right")
    for resource_type, count in sorted(report.resources.items()):
        table.add_row(resource_type, f"{count:,}")
    console.print(table)
    if profiles is not None:
        _print_must_support(report.profile_tally, profiles.label)
    console.print(f"Checked by {report.findings}.", markup=False, highlight=False, soft_wrap=True)
    for failure in report.failures:
        errors.print(f"[red]invalid:[/] {escape(failure)}", highlight=False, soft_wrap=True)
    if report.failure_count:
        raise fail(f"{report.failure_count} problem(s) found", code=1)
    console.print("[green]All resources are valid FHIR R4 and every reference resolves.[/]")


def _print_must_support(tally: ProfileTally, label: str) -> None:
    """How often each must-support element is filled where its parent exists, and the required
    bindings whose value sets are not shipped."""
    table = Table(title=f"{label} must-support elements")
    for column, justify in (("profile", "left"), ("element", "left"), ("filled", "right"), ("of", "right"),
                            ("%", "right")):
        table.add_column(column, justify=justify)
    for profile_name, element, present, possible in tally.rows():
        share = 100 * present / possible
        style = "red" if present == 0 else "yellow" if share < 50 else ""
        table.add_row(profile_name, escape(element), f"{present:,}", f"{possible:,}", f"{share:.0f}", style=style)
    console.print(table)
    for value_set, count in sorted(tally.bindings_not_checked.items()):
        console.print(f"not judged: {count:,} value(s) of the required value set {value_set} (not shipped)",
                      markup=False, highlight=False, soft_wrap=True)


def run() -> None:
    """The console entry point. A file-system fault the user can fix (a file where a folder is needed,
    a folder where a file is, no permission, a full disk) ends with one line naming the path, exit 2."""
    try:
        app()
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{exc.strerror or exc}")
        sys.exit(2)


if __name__ == "__main__":
    run()
