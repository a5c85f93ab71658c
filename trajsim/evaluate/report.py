"""Write an evaluation to disk: metrics.json for machines, report.html for people.

The HTML page is a single file (plots embedded as base64 PNG, CSS inline) that opens offline: the
headline numbers first, then one section per metric family with its plots and how to read them.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

import orjson

from trajsim.atomic import write_bytes_atomic
from trajsim.evaluate import Evaluation, Section

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; } td, th { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left; }
td.value { font-variant-numeric: tabular-nums; text-align: right; font-weight: bold; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; max-width: 60em; margin-top: 0.4em; } .note { color: #8a5a00; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
.inputs { color: #555; } details pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def metrics_json(evaluation: Evaluation) -> bytes:
    return orjson.dumps(evaluation.metrics(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def write_report(evaluation: Evaluation, out_dir: Path) -> tuple[Path, Path]:
    """Write metrics.json and report.html into `out_dir` (each atomically); returns both paths."""
    out_dir = Path(out_dir)
    json_path, html_path = out_dir / "metrics.json", out_dir / "report.html"
    write_bytes_atomic(json_path, metrics_json(evaluation))
    write_bytes_atomic(html_path, render_html(evaluation).encode("utf-8"))
    return json_path, html_path


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if value != int(value) else f"{value:.0f}"


def _headline_rows(sections: list[Section], with_family: bool) -> str:
    rows = []
    for section in sections:
        for headline in section.headlines:
            family = f"<td>{escape(section.name)}</td>" if with_family else ""
            rows.append(f"<tr>{family}<td>{escape(headline.label)}</td><td class=value>{_number(headline.value)}</td>"
                        f"<td>{escape(headline.reading)}</td></tr>")
    return "\n".join(rows)


def _section_html(section: Section) -> str:
    parts = [f'<section id="{escape(section.name)}"><h2>{escape(section.name.capitalize())}</h2>',
             *(f"<p>{escape(paragraph)}</p>" for paragraph in section.summary.strip().split("\n\n"))]
    parts += [f'<p class="note">{escape(note)}</p>' for note in section.notes]
    if section.headlines:
        parts.append(f"<table>{_headline_rows([section], with_family=False)}</table>")
    for listing in section.listings:
        header = "".join(f"<th>{escape(column)}</th>" for column in listing.columns)
        rows = "".join("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in listing.rows)
        parts.append(f"<table><caption>{escape(listing.title)}</caption><tr>{header}</tr>{rows}</table>")
    for plot in section.plots:
        image = base64.b64encode(plot.png).decode("ascii")
        parts.append(f'<figure><img alt="{escape(plot.title)}" src="data:image/png;base64,{image}">'
                     f"<figcaption><b>{escape(plot.title)}.</b> {escape(plot.caption)}</figcaption></figure>")
    details = orjson.dumps(section.metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
    parts.append(f"<details><summary>All {escape(section.name)} metrics</summary><pre>{escape(details)}</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(evaluation: Evaluation) -> str:
    """The report page: what was compared, the headline numbers, then every section."""
    inputs = "; ".join(f"{name}: {escape(str(info['source']))} ({info['patients']:,} patients, "
                       f"{info['events']:,} events)" for name, info in evaluation.inputs.items())
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>trajsim evaluation report</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>trajsim evaluation report</h1>", f'<p class="inputs">{inputs}</p>',
        "<h2>Headline numbers</h2>",
        "<table><tr><th>family</th><th>metric</th><th>value</th><th>how to read it</th></tr>",
        _headline_rows(evaluation.sections, with_family=True), "</table>",
        *(_section_html(section) for section in evaluation.sections),
        "</body></html>", ""])
