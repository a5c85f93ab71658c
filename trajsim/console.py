"""What every `trajsim` command shares for talking to the user: the consoles, one-sentence errors
with their exit code, and the progress display. Commands import it; it imports no command.

On a terminal progress is a live bar; in a log (stdout or stderr redirected, CI, systemd) it is one
plain line per task every few seconds on stderr, so a long run is never silent."""

from __future__ import annotations

import threading
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn,
)

console = Console()
errors = Console(stderr=True)
LOG_PERIOD_S = 5.0  # seconds between progress lines in a log
VERBOSE_LOG_PERIOD_S = 1.0
_log_period = LOG_PERIOD_S


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a user-facing error and return the exit to raise. The message is shown as written:
    brackets in a file name or scenario name are text, not styling."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def set_verbosity(quiet: bool, verbose: bool) -> None:
    """-q: errors only; -v: progress lines in a log every second instead of every few seconds."""
    global _log_period
    console.quiet = quiet
    _log_period = VERBOSE_LOG_PERIOD_S if verbose else LOG_PERIOD_S


def progress_bar(*extra_columns: ProgressColumn) -> Progress:
    """The commands' progress display; `extra_columns` (e.g. a loss readout) go before the time left."""
    if console.quiet:
        return Progress(console=console, disable=True)
    if not console.is_terminal or not errors.is_terminal:
        return ProgressLog(_log_period)
    return Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), *extra_columns,
                    TimeRemainingColumn(), console=console, transient=True)


class ProgressLog(Progress):
    """Progress for logs: a line per task on stderr every `period` seconds and one when it ends."""

    def __init__(self, period: float) -> None:
        super().__init__(console=errors, disable=True)  # tracks tasks and rates, draws nothing live
        self._period = period
        self._stopped = threading.Event()
        self._reporter: threading.Thread | None = None

    def start(self) -> None:
        self._reporter = threading.Thread(target=self._report, name="progress-log", daemon=True)
        self._reporter.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._reporter is not None:
            self._reporter.join()
            self._reporter = None
            self._print_lines()

    def _report(self) -> None:
        while not self._stopped.wait(self._period):
            self._print_lines()

    def _print_lines(self) -> None:
        with self._lock:
            lines = [progress_line(task) for task in self.tasks]
        for line in lines:
            errors.print(line, markup=False, highlight=False, soft_wrap=True)


def progress_line(task: Task) -> str:
    """`Simulating default: 512/1,000 (51%), 48.2/s, 10 s left` and the task's own fields."""
    done = f"{task.completed:,.0f}"
    if task.total:
        done += f"/{task.total:,.0f} ({100 * task.completed / task.total:.0f}%)"
    parts = [done]
    if task.speed:
        parts.append(f"{task.speed:,.1f}/s")
    if task.time_remaining is not None and not task.finished:
        parts.append(f"{task.time_remaining:,.0f} s left")
    parts += [f"{name} {_shown(value)}" for name, value in task.fields.items()]
    return f"{task.description}: {', '.join(parts)}"


def _shown(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
