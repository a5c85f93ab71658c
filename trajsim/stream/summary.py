"""What a stream run did, for people and for scripts: `summary.json` (delivery counts and latencies,
overall and second by second, for FHIR and for the HL7v2 feed when there is one, and the
hospital's arrivals, waits and admissions, overall and inside each surge), a small `summary.html`
of the same with charts, and
`dead-letter.ndjson` holding every request or message that was not acknowledged, ready to inspect
or replay."""

from __future__ import annotations

import html
from datetime import timedelta
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np
import orjson

from trajsim.atomic import write_bytes_atomic
from trajsim.scenario import Surge
from trajsim.stream.run import StreamRun
from trajsim.stream.sender import DeliveryStats


def _waits(minutes: list[float]) -> dict[str, float]:
    """Mean and 90th percentile of waits in minutes (zeros when nobody waited)."""
    if not minutes:
        return {"patients": 0, "mean": 0.0, "p90": 0.0}
    return {"patients": len(minutes), "mean": round(fmean(minutes), 1),
            "p90": round(float(np.percentile(minutes, 90)), 1)}


def _window(run: StreamRun, hours: list[int]) -> dict[str, Any]:
    """Arrivals per hour and door-to-room waits of patients who arrived in the given hours."""
    counted = [h for h in hours if h < len(run.hospital.stats.arrivals_by_hour)]
    arrivals = sum(run.hospital.stats.arrivals_by_hour[h] for h in counted)
    inside = set(counted)
    return {"hours": len(counted), "arrivals": arrivals,
            "arrivals_per_hour": round(arrivals / len(counted), 2) if counted else 0.0,
            "door_to_room_minutes": _waits([w for h, w in run.hospital.stats.door_to_room if h in inside])}


def _surge_hours(surge: Surge) -> list[int]:
    return list(range(int(surge.start_hour), int(np.ceil(surge.start_hour + surge.hours))))


def _delivery(stats: DeliveryStats, seconds: float) -> dict[str, Any]:
    return {"submitted": stats.submitted, "acknowledged": stats.acknowledged,
            "dead_lettered": len(stats.undelivered), "attempts": stats.attempts, "retries": stats.retries,
            "per_second": round(stats.acknowledged / seconds, 1) if seconds else 0.0,
            "errors": dict(sorted(stats.errors.items())),
            "acknowledged_by_kind": dict(sorted(stats.acknowledged_by_kind.items())),
            "latency_ms": stats.latency_percentiles(), "by_second": stats.series()}


def stream_summary(run: StreamRun) -> dict[str, Any]:
    """The run's summary as plain data (what summary.json holds)."""
    stats, hospital, scenario = run.stats, run.hospital.stats, run.scenario
    every_hour = range(len(hospital.arrivals_by_hour))
    return {
        "scenario": scenario.name, "seed": scenario.seed, "server": run.options.server,
        "pacing": ({"speed": run.options.speed} if run.options.speed else {"rate": run.options.rate}
                   if run.options.rate else {"as_fast_as_possible": True}),
        "interrupted": run.interrupted, "stopped_by": run.stopped_by.name if run.stopped_by else None,
        "simulated_hours": round(run.minute / 60, 2), "wall_seconds": round(run.seconds, 2),
        "requests": _delivery(stats, run.seconds) | {"behind_schedule_seconds": round(run.behind, 2)},
        **({"hl7v2": _delivery(run.adt_stats, run.seconds) | {"control_id_prefix": run.run_id}}
           if run.adt_stats is not None else {}),
        "hospital": {
            "arrivals": sum(hospital.arrivals_by_hour), "arrivals_by_hour": hospital.arrivals_by_hour,
            "arrivals_by_esi": {str(k): v for k, v in sorted(hospital.by_esi.items())},
            "admissions": hospital.admissions, "discharges": hospital.discharges,
            "door_to_room_minutes": _waits([w for _, w in hospital.door_to_room]),  # of those roomed in the window
            "waiting_for_ed_bed_at_end": run.hospital.ed.queued,
            "boarding_minutes": _waits(hospital.boarding),
            "longest_queue": {unit.name: unit.stats.longest_queue for unit in run.hospital.units},
            "surges": [{"name": surge.name, "during": _window(run, _surge_hours(surge)),
                        "outside": _window(run, [h for h in every_hour if h not in _surge_hours(surge)])}
                       for surge in scenario.surges],
        },
    }


def write_dead_letter(run: StreamRun, path: Path) -> None:
    """One JSON line per unacknowledged request: when it happened, what it was, why it failed, and
    the request itself (method, URL relative to the FHIR base, body)."""
    lines = []
    channels = [("fhir", run.stats)] + ([("hl7v2", run.adt_stats)] if run.adt_stats is not None else [])
    for channel, stats in channels:
        for item in sorted(stats.undelivered, key=lambda u: u.interaction.number):
            interaction, request = item.interaction, item.interaction.request
            when = run.scenario.start + timedelta(minutes=interaction.minute)
            lines.append(orjson.dumps({
                "channel": channel, "number": interaction.number, "simulated_time": when.isoformat(timespec="seconds"),
                "patient": interaction.patient, "kind": interaction.kind, "attempts": item.attempts,
                "status": item.status, "reason": item.reason, "method": request.method, "url": request.url,
                "body": orjson.Fragment(request.body) if channel == "fhir" else request.body.decode()}) + b"\n")
    write_bytes_atomic(path, b"".join(lines))


def write_summary(summary: dict[str, Any], out_dir: Path) -> None:
    write_bytes_atomic(out_dir / "summary.json", orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    write_bytes_atomic(out_dir / "summary.html", summary_html(summary).encode())


CHART = (600, 160, 60, 12, 40)  # plot width and height; left, top and bottom margins (px)
COLOURS = ("#4a7ebb", "#d9822b", "#3a9d5d")


def svg_chart(x_label: str, y_label: str, series: dict[str, list[float | None]], *, bars: bool = False) -> str:
    """An inline SVG chart with labelled axes and a legend: a line per series (broken where a value
    is None), or with `bars` the first series as bars, one per x."""
    width, height, left, top, bottom = CHART
    count = max((len(values) for values in series.values()), default=0)
    peak = max((v for values in series.values() for v in values if v is not None), default=0) or 1
    slots = max(count if bars else count - 1, 1)

    def x(i: float) -> float:
        return left + width * (i + (0.5 if bars else 0)) / slots

    def y(value: float) -> float:
        return top + height * (1 - value / peak)

    parts = [f'<line x1="{left}" y1="{top + height}" x2="{left + width}" y2="{top + height}" stroke="#333"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + height}" stroke="#333"/>',
             f'<text x="{left + width / 2}" y="{top + height + bottom - 4}" text-anchor="middle">{html.escape(x_label)}</text>',
             f'<text transform="translate(14 {top + height / 2}) rotate(-90)" text-anchor="middle">{html.escape(y_label)}</text>']
    for value in (0, peak / 2, peak):
        parts.append(f'<text x="{left - 4}" y="{y(value) + 4:.1f}" text-anchor="end">{value:,.4g}</text>')
    for i in sorted({0, count // 2, max(count - 1, 0)}) if count else ():
        parts.append(f'<text x="{x(i):.1f}" y="{top + height + 14}" text-anchor="middle">{i}</text>')
    for n, (name, values) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        if bars:
            bar = 0.9 * width / slots
            parts += [f'<rect x="{x(i) - bar / 2:.1f}" y="{y(v):.1f}" width="{bar:.1f}" height="{top + height - y(v):.1f}" '
                      f'fill="{colour}"><title>{i}: {v}</title></rect>' for i, v in enumerate(values) if v]
        else:
            runs = " ".join(f"{'L' if i and values[i - 1] is not None else 'M'}{x(i):.1f},{y(v):.1f}"
                            for i, v in enumerate(values) if v is not None)
            parts.append(f'<path d="{runs}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        parts.append(f'<text x="{left + width}" y="{top + 12 + 14 * n}" text-anchor="end" fill="{colour}">'
                     f'{html.escape(name)}</text>')
    return (f'<svg viewBox="0 0 {left + width + 10} {top + height + bottom}" width="{left + width + 10}" '
            f'role="img" style="font:11px system-ui,sans-serif">{"".join(parts)}</svg>')


def summary_html(summary: dict[str, Any]) -> str:
    """A one-page report: delivery, latency and the hospital's windows (surges against quiet hours)."""
    requests, hospital = summary["requests"], summary["hospital"]

    def rows(pairs: list[tuple[str, object]]) -> str:
        return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in pairs)

    window_rows = "".join(
        f"<tr><td>{html.escape(surge['name'])}</td><td>{part}</td><td>{w['hours']}</td><td>{w['arrivals_per_hour']}</td>"
        f"<td>{w['door_to_room_minutes']['mean']}</td><td>{w['door_to_room_minutes']['p90']}</td></tr>"
        for surge in hospital["surges"] for part, w in (("during", surge["during"]), ("outside", surge["outside"])))
    each_second = requests["by_second"]
    charts = (svg_chart("wall seconds since the start", "acknowledged per second",
                        {"acknowledged/s": each_second["acknowledged"]}),
              svg_chart("wall seconds since the start", "latency (ms)",
                        {"p50": each_second["latency_p50_ms"], "p90": each_second["latency_p90_ms"]}))
    title = f"trajsim stream: {summary['scenario']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}
th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{summary['simulated_hours']} simulated hours in {summary['wall_seconds']} s against {html.escape(summary['server'])}
{f"(stopped by {summary['stopped_by']})" if summary['interrupted'] else ''}</p>
<h2>Delivery</h2><table>{rows([(k, requests[k]) for k in ('submitted', 'acknowledged', 'dead_lettered', 'attempts',
                                                           'retries', 'per_second')])}
{rows([(f'latency {k} (ms)', v) for k, v in requests['latency_ms'].items()])}
{rows([(f'failed attempts: {k}', v) for k, v in requests['errors'].items()])}
{rows([(f'HL7v2 ADT {k}', v) for k, v in summary.get('hl7v2', {}).items() if isinstance(v, int)])}</table>
<h3>Acknowledged requests per second</h3>{charts[0]}
<h3>Latency per second (p50, p90)</h3>{charts[1]}
<h2>Hospital</h2><table>{rows([('arrivals', hospital['arrivals']), ('admissions', hospital['admissions']),
                               ('discharges', hospital['discharges']),
                               ('door-to-room wait, mean (min)', hospital['door_to_room_minutes']['mean']),
                               ('boarding wait, mean (min)', hospital['boarding_minutes']['mean'])])}</table>
<h3>Arrivals by hour</h3>{svg_chart("simulated hour", "ED arrivals", {"arrivals": hospital["arrivals_by_hour"]}, bars=True)}
<table><tr><th>surge</th><th>window</th><th>hours</th><th>arrivals per hour</th><th>door-to-room mean (min)</th>
<th>door-to-room p90 (min)</th></tr>{window_rows}</table>
</body></html>
"""
