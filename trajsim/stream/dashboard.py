"""The live console view of a stream: the simulated clock, what was sent and acknowledged, errors,
latency percentiles and queue depths, in the sender and in the hospital."""

from __future__ import annotations

import time
from datetime import timedelta

from rich.console import Group
from rich.table import Table
from rich.text import Text

from trajsim.stream.run import StreamRun
from trajsim.stream.sender import RATE_WINDOW_S


def dashboard(run: StreamRun) -> Group:
    """A renderable for `rich.live.Live(get_renderable=...)`, read from the run as it goes."""
    stats, hospital = run.stats, run.hospital
    elapsed = max(time.monotonic() - run.pacer.started, 1e-9)
    moment = run.scenario.start + timedelta(minutes=run.minute)
    header = Text(f"{run.scenario.name} → {run.options.server}   simulated {moment:%a %Y-%m-%d %H:%M}"
                  f"   wall {elapsed:,.0f} s", style="bold")
    if run.behind > 1:
        header.append(f"   {run.behind:,.0f} s behind schedule", style="yellow")

    delivery = Table(title="requests", title_justify="left", show_header=False, min_width=34)
    latency = stats.latency_percentiles()
    for label, value in (("sent", stats.submitted), ("acknowledged", stats.acknowledged),
                         ("dead-lettered", len(stats.undelivered)), ("retries", stats.retries),
                         ("in flight", stats.in_flight), ("queued", stats.waiting),
                         (f"rate (ack/s, last {RATE_WINDOW_S:g} s)", f"{stats.current_rate():,.1f}"),
                         ("latency p50 / p90 / p99", f"{latency['p50']:.0f} / {latency['p90']:.0f} / "
                                                     f"{latency['p99']:.0f} ms")):
        delivery.add_row(label, f"{value:,}" if isinstance(value, int) else value)
    for kind, count in sorted(dict(stats.errors).items()):
        delivery.add_row(Text(f"failed: {kind}", style="red"), f"{count:,}")
    adt = run.adt_stats
    if adt is not None:
        delivery.add_row("HL7v2 ADT sent / acknowledged", f"{adt.submitted:,} / {adt.acknowledged:,}")
        delivery.add_row("HL7v2 ADT dead-lettered", f"{len(adt.undelivered):,}")

    ward = Table(title="hospital", title_justify="left", min_width=34)
    for column in ("unit", "busy", "queue"):
        ward.add_column(column, justify="left" if column == "unit" else "right")
    for unit in hospital.units:
        ward.add_row(unit.name, f"{unit.occupied}/{unit.capacity}",
                     Text(f"{unit.queued}", style="yellow" if unit.queued else ""))
    surges = ", ".join(s.name for s in run.scenario.surges_at(run.minute / 60))
    header.append(f"\nED arrivals {sum(hospital.stats.arrivals_by_hour):,}, admissions {hospital.stats.admissions:,}")
    if surges:
        header.append(f"   surge: {surges}", style="bold red")
    grid = Table.grid(padding=(0, 4))
    grid.add_row(delivery, ward)
    return Group(header, grid)
