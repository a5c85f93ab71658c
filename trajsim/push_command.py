"""`trajsim push`: load a generated cohort into a FHIR server and say what it accepted, and for
what it refused, what the server said."""

from __future__ import annotations

from pathlib import Path

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from fhir_export.push import PushError, PushSummary, find_bundles, push_bundles
from fhir_export.server import TOKEN_VARIABLE, ServerAddressError, fhir_server
from trajsim.atomic import write_bytes_atomic

LISTED_REJECTIONS = 5
REJECTED_FILE = "push-rejected.ndjson"


def push_command(
    directory: Path = typer.Argument(..., help="Output folder of `trajsim generate` (or a folder of transaction bundles)."),
    server: str = typer.Option(..., "--server", help="FHIR base URL, e.g. http://localhost:8090/fhir."),
    concurrency: int = typer.Option(4, "--concurrency", "-c", help="Bundles in flight at once."),
    retries: int = typer.Option(3, "--retries", help="Retries of a bundle after a 5xx, 429, timeout or dropped connection."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for the server's answer to one bundle."),
    token: str = typer.Option(None, "--token", envvar=TOKEN_VARIABLE, show_envvar=True,
                              help="Bearer token for the server (user:password in the URL is sent as basic auth)."),
    max_entries: int = typer.Option(None, "--max-entries", help="Split each patient into ordered transactions of at most N entries, for servers that cap them (Medplum: 50)."),
    batch: bool = typer.Option(False, "--batch", help="Post batch bundles instead of transactions: entries independent, references as Type/id, a refused entry costs only itself."),
    rejected_file: Path = typer.Option(None, "--rejected", help=f"Where to list the bundles the server did not accept, one JSON line each [default: DIR/{REJECTED_FILE}]."),
) -> None:
    """Post every patient's transaction bundle to a FHIR server; exit 1 if the server rejects any."""
    from trajsim.console import console, errors, fail, progress_bar

    try:
        bundles = find_bundles(directory)
        shown = fhir_server(server).base
        with progress_bar() as bar:
            task = bar.add_task(f"Posting to {shown}", total=len(bundles))
            summary = push_bundles(bundles, server, token=token, max_entries=max_entries, batch=batch,
                                   concurrency=concurrency, retries=retries,
                                   timeout=timeout, on_bundle=lambda _: bar.advance(task))
    except (PushError, ServerAddressError) as exc:
        raise fail(str(exc)) from None
    console.print(_summary_table(summary))
    _list_rejected(summary, rejected_file or directory / REJECTED_FILE)
    for outcome in summary.rejected[:LISTED_REJECTIONS]:
        status = f"HTTP {outcome.status}" if outcome.status else "no answer"
        errors.print(f"[red]rejected:[/] {escape(f'{outcome.path} ({status}): {outcome.diagnostics}')}", highlight=False,
                     soft_wrap=True)
    if summary.rejected:
        more = len(summary.rejected) - LISTED_REJECTIONS
        if more > 0:
            errors.print(f"... and {more} more rejected bundle(s)", highlight=False)
        raise fail(f"{len(summary.rejected)} of {len(summary.outcomes)} bundle(s) were not accepted by {summary.server}"
                   f" (listed in {rejected_file or directory / REJECTED_FILE})", code=1)
    console.print(f"[green]{escape(summary.server)} accepted all {len(summary.outcomes)} bundles.[/]", highlight=False)


def _list_rejected(summary: PushSummary, path: Path) -> None:
    """Every bundle not accepted, with the last status and the server's words, so a user can fix and
    re-push exactly those; a run that had none removes an older list."""
    if not summary.rejected:
        path.unlink(missing_ok=True)
        return
    lines = (orjson.dumps({"bundle": str(o.path), "status": o.status, "attempts": o.attempts,
                           "diagnostics": o.diagnostics}) + b"\n" for o in summary.rejected)
    write_bytes_atomic(path, b"".join(lines))


def _summary_table(summary: PushSummary) -> Table:
    resources = sum(o.resources for o in summary.accepted)
    rate = len(summary.outcomes) / max(summary.seconds, 1e-9)
    table = Table(title=escape(summary.server), caption=f"{summary.seconds:.1f} s, {rate:,.1f} bundles/s")
    table.add_column("outcome")
    table.add_column("bundles", justify="right")
    table.add_column("resources", justify="right")
    table.add_row("accepted", f"{len(summary.accepted):,}", f"{resources:,}")
    table.add_row("[red]rejected[/]" if summary.rejected else "rejected", f"{len(summary.rejected):,}", "")
    table.add_row("retried attempts", f"{summary.retried:,}", "")
    return table
