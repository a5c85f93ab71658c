"""`trajsim ingest`: real records in, one canonical events Parquet file out, with a report of what
was kept and what was dropped and why."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from trajsim.ingest import CANONICAL, FORMATS, IngestError, IngestReport, detect_format, ingest


def ingest_command(
    source: Path = typer.Argument(..., help="Input file or folder (FHIR bundles/NDJSON, OMOP CSV folder or zip, "
                                            "Synthea CSV folder, MEDS Parquet)."),
    format: str | None = typer.Option(None, "--format", "-f", help=f"One of {', '.join(FORMATS)} (default: detect)."),
    out: Path = typer.Option(Path("events.parquet"), "--out", "-o", help="Output events Parquet file."),
) -> None:
    """Turn MEDS, OMOP CDM, FHIR R4 or Synthea CSV records into the canonical event table."""
    from trajsim.console import console, fail, progress_bar

    try:
        format = format or detect_format(source)
        if format == CANONICAL:
            raise IngestError(f"{source}: already a canonical event table; nothing to ingest")
        with progress_bar() as bar:
            task = bar.add_task(f"Reading {format}", total=None)
            report = ingest(format, source, out,
                            progress=lambda done, total, label: bar.update(task, completed=done, total=total))
    except IngestError as exc:
        raise fail(str(exc)) from None
    console.print(_summary(report, out))
    console.print(_prefixes(report))


def _summary(report: IngestReport, out: Path) -> Table:
    rate = report.rows_read / max(report.seconds, 1e-9)
    table = Table(title=f"{report.source} ({report.format}): {report.events:,} events of {report.subjects:,} "
                        f"patients in {report.seconds:.1f} s ({rate:,.0f} rows/s) -> {out}")
    for column in ("table", "read", "kept", "dropped (why)"):
        table.add_column(column, justify="left" if column in ("table", "dropped (why)") else "right")
    for name, counts in report.tables.items():
        why = ", ".join(f"{n:,} {reason}" for reason, n in counts.dropped.most_common())
        table.add_row(name, f"{counts.read:,}", f"{counts.kept:,}", why)
    return table


def _prefixes(report: IngestReport) -> Table:
    """Events kept per code system (local codes per scheme), so a user sees where the rows went."""
    table = Table(title="events per code system (LOCAL: per source scheme)")
    table.add_column("code prefix")
    table.add_column("events", justify="right")
    for prefix, count in report.prefixes.items():
        table.add_row(prefix, f"{count:,}")
    return table
