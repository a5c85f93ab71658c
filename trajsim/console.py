"""What every `trajsim` command shares for talking to the user: the consoles, one-sentence errors
with their exit code, and the progress bar. Commands import it; it imports no command."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn

console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a user-facing error and return the exit to raise."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def progress_bar(*extra_columns: ProgressColumn) -> Progress:
    """The commands' progress bar; `extra_columns` (e.g. a loss readout) go before the time left."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra_columns,
                    TimeRemainingColumn(), console=console, transient=True)
