"""`trajsim evaluate`: compare a synthetic event table with real records and write metrics.json and
report.html, printing the headline numbers."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table


def evaluate_command(
    real: Path = typer.Option(..., "--real", "-r", help="Real records: events Parquet (file or folder of parts) or "
                                                        "any format `trajsim ingest` reads."),
    synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic records, e.g. out/events/ of `trajsim generate`."),
    train: Path | None = typer.Option(None, "--train", "-t", help="The real records the generator learned from "
                                                                  "(enables the privacy metrics)."),
    out: Path = typer.Option(Path("report"), "--out", "-o", help="Folder for metrics.json and report.html."),
) -> None:
    """Measure fidelity, privacy, utility and clinical validity of synthetic records against real ones."""
    from trajsim.console import console, fail, progress_bar
    from trajsim.evaluate import FAMILIES, EvaluationError, evaluate
    from trajsim.evaluate.report import write_report
    from trajsim.atomic import folder_problem
    from trajsim.ingest import IngestError, load_records

    if problem := folder_problem(out):
        raise fail(problem)
    paths = {"real": real, "synthetic": synthetic, **({"train": train} if train is not None else {})}
    with progress_bar() as bar:
        task = bar.add_task("Evaluating", total=len(paths) + 1 + len(FAMILIES))
        try:
            tables, names = {}, {}
            for name, path in paths.items():
                bar.update(task, description=f"Reading {name} records")
                tables[name], codes = load_records(path)
                names |= {code: text for code, text in codes.select("code", "description").iter_rows() if text}
                bar.advance(task)
            evaluation = evaluate(**tables, sources={name: str(path) for name, path in paths.items()},
                                  on_family=lambda name, _: bar.update(task, advance=1, description=f"Measured {name}"),
                                  names=names)
        except (IngestError, EvaluationError) as exc:
            raise fail(str(exc)) from None
        json_path, html_path = write_report(evaluation, out)
        bar.advance(task)
    table = Table(title=escape(f"{synthetic} against {real}"))
    for column in ("family", "metric", "value", "how to read it"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for section in evaluation.sections:
        for headline in section.headlines:
            table.add_row(section.name, headline.label, "n/a" if headline.value is None else f"{headline.value:.4g}",
                          headline.reading)
        for note in section.notes:
            table.add_row(section.name, f"[yellow]{escape(note)}[/]", "", "")
    console.print(table)
    console.print(f"Wrote {json_path} and {html_path}", markup=False)
