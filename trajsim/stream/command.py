"""`trajsim stream`: play a hospital scenario against a FHIR server in (scaled) real time, with a
live dashboard, and leave a summary and a dead-letter file behind."""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from rich.live import Live
from rich.table import Table

from fhir_export.server import TOKEN_VARIABLE
from trajsim.scenario import ScenarioError, StreamScenario, load_stream_scenario, with_overrides
from trajsim.stream.dashboard import dashboard
from trajsim.stream.run import StreamError, StreamOptions, StreamRun, run_stream
from trajsim.stream.summary import stream_summary, write_dead_letter, write_summary

STOPPED_BY = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}  # exit code: 128 + the signal's number (130, 143)
DEFAULT_SPEED = 60.0


def stream_command(
    server: str = typer.Option(..., "--server", help="FHIR base URL, e.g. http://localhost:8090/fhir "
                                                            "(user:password@ in it is sent as basic auth, never shown)."),
    token: str | None = typer.Option(None, "--token", envvar=TOKEN_VARIABLE, show_envvar=True,
                                     help="Bearer token for the server."),
    scenario_file: Path | None = typer.Option(None, "--scenario", help="Stream scenario TOML (default: an ordinary "
                                                                        "day at a mid-sized hospital)."),
    speed: float | None = typer.Option(None, "--speed", help="Simulated seconds per wall second "
                                                             f"(default {DEFAULT_SPEED:g}: one simulated hour a minute)."),
    rate: float | None = typer.Option(None, "--rate", help="Instead of a speed: send this many requests per second "
                                                           "(0: as fast as the server answers)."),
    hours: float | None = typer.Option(None, "--hours", help="Simulated hours to stream (overrides the scenario's)."),
    seed: int | None = typer.Option(None, "--seed", "-s", help="Random seed (overrides the scenario's)."),
    in_flight: int = typer.Option(8, "--in-flight", help="Requests in flight at once."),
    retries: int = typer.Option(3, "--retries", help="Retries of a request after a 5xx, 429, timeout or dropped connection."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the server's answer to one request."),
    out: Path = typer.Option(Path("stream-out"), "--out", "-o", help="Folder for summary.json, summary.html and "
                                                                     "dead-letter.ndjson."),
    mllp: str | None = typer.Option(None, "--mllp", help="Also send HL7v2 ADT messages (A04, A08, A02, A01, A03) "
                                                         "to this MLLP listener, HOST:PORT."),
    hl7_simulated_time: bool = typer.Option(False, "--hl7-simulated-time", help="Put the simulated time in MSH-7 "
                                            "instead of the wall-clock send time (EVN-2 and EVN-6 always carry it)."),
    live: bool | None = typer.Option(None, "--dashboard/--no-dashboard", help="Live console view (default: on in a terminal)."),
) -> None:
    """Send a simulated hospital's clinical traffic (ADT, vitals, results, orders) to a FHIR server as it happens."""
    from trajsim.console import console, fail

    try:
        scenario = load_stream_scenario(scenario_file) if scenario_file else StreamScenario()
        scenario = with_overrides(scenario, "command line", hours=hours, seed=seed)
    except ScenarioError as exc:
        raise fail(str(exc)) from None
    options = StreamOptions(server, speed=DEFAULT_SPEED if speed is None and rate is None else speed, rate=rate,
                            in_flight=in_flight, retries=retries, timeout=timeout, mllp=mllp,
                            hl7_simulated_time=hl7_simulated_time, token=token)
    view: list[Live] = []

    def show(run: StreamRun) -> None:
        if live if live is not None else console.is_terminal:
            view.append(Live(get_renderable=lambda: dashboard(run), console=console, refresh_per_second=4))
            view[0].start()

    try:
        run = run_stream(scenario, options, on_start=show)
    except StreamError as exc:
        raise fail(str(exc)) from None
    finally:
        for shown in view:
            shown.stop()
    summary = stream_summary(run)
    write_summary(summary, out)
    write_dead_letter(run, out / "dead-letter.ndjson")
    console.print(_closing_table(summary, out))
    if run.stopped_by is not None:
        console.print(f"Stopped by {STOPPED_BY[run.stopped_by]} after {summary['simulated_hours']} simulated hours.",
                      highlight=False)
        raise typer.Exit(128 + run.stopped_by)
    dead = summary["requests"]["dead_lettered"] + summary.get("hl7v2", {}).get("dead_lettered", 0)
    if dead:
        raise fail(f"{dead} request(s) or message(s) were not acknowledged; they are in {out / 'dead-letter.ndjson'}",
                   code=1)


def _closing_table(summary: dict, out: Path) -> Table:
    requests, hospital = summary["requests"], summary["hospital"]
    latency = requests["latency_ms"]
    table = Table(title=f"{summary['scenario']}: {summary['simulated_hours']} simulated hours in "
                        f"{summary['wall_seconds']} s ({requests['per_second']:,} acknowledged/s)")
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, value in (("requests sent", requests["submitted"]), ("acknowledged", requests["acknowledged"]),
                         ("dead-lettered", requests["dead_lettered"]), ("retries", requests["retries"]),
                         ("latency p50 / p90 / p99 (ms)", f"{latency['p50']} / {latency['p90']} / {latency['p99']}"),
                         ("ED arrivals", hospital["arrivals"]), ("admissions", hospital["admissions"]),
                         ("door-to-room wait, mean / p90 (min)",
                          f"{hospital['door_to_room_minutes']['mean']} / {hospital['door_to_room_minutes']['p90']}"),
                         ("boarding wait, mean (min)", hospital["boarding_minutes"]["mean"]),
                         *((f"HL7v2 ADT {what}", summary["hl7v2"][key]) for what, key in (
                             ("messages sent", "submitted"), ("acknowledged", "acknowledged"),
                             ("dead-lettered", "dead_lettered")) if "hl7v2" in summary)):
        table.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    for surge in hospital["surges"]:
        during, outside = surge["during"], surge["outside"]
        table.add_row(f"'{surge['name']}' during / outside: arrivals per hour",
                      f"{during['arrivals_per_hour']} / {outside['arrivals_per_hour']}")
        table.add_row(f"'{surge['name']}' during / outside: door-to-room (min)",
                      f"{during['door_to_room_minutes']['mean']} / {outside['door_to_room_minutes']['mean']}")
    table.add_row("written", f"{out}/summary.json, summary.html, dead-letter.ndjson")
    return table
