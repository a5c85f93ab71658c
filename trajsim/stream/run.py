"""One stream run: step the hospital, wait until each request is due, hand it to the sender, and on
the scenario's end, Ctrl-C or SIGTERM let the outstanding requests finish (or give up) before
returning."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import httpx

from fhir_export.push import FHIR_JSON, PushError, check_server
from fhir_export.server import FhirServer, ServerAddressError, fhir_server
from trajsim.engine.hospital import Hospital
from trajsim.scenario import StreamScenario
from trajsim.stream.clock import Pacer
from trajsim.stream.hl7v2 import AdtFeed, MllpChannel
from trajsim.stream.messages import interactions
from trajsim.stream.sender import DeliveryStats, FhirChannel, Sender

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; what `timeout`, systemd and Kubernetes send
STOP_GRACE_S = 3.0  # after a stop signal, answers in flight get at most this long (or --timeout if shorter)


@dataclass(frozen=True)
class StreamOptions:
    server: str  # FHIR base URL; user:password in it is sent as basic auth
    speed: float | None = 60.0  # simulated seconds per wall second; None with no rate: as fast as possible
    rate: float | None = None  # target requests per second (instead of a speed)
    in_flight: int = 8
    retries: int = 3
    timeout: float = 10.0  # seconds to wait for one answer
    backoff: float = 0.5  # first retry delay; doubles per retry (capped, or the server's Retry-After)
    mllp: str | None = None  # HOST:PORT of an HL7v2 listener to send ADT messages to as well
    hl7_simulated_time: bool = False  # MSH-7 carries the simulated time instead of the wall-clock send time
    token: str | None = field(default=None, repr=False)  # bearer token (else TRAJSIM_FHIR_TOKEN, if set)


@dataclass
class StreamRun:
    """A run in progress or finished: the hospital, the delivery counts and how it ended. Its
    options hold the server's bare base URL: credentials never reach a summary or the dashboard."""

    scenario: StreamScenario
    options: StreamOptions
    hospital: Hospital
    stats: DeliveryStats = field(default_factory=DeliveryStats)
    adt_stats: DeliveryStats | None = None  # the HL7v2 ADT feed's, when there is one
    pacer: Pacer = field(default_factory=Pacer)
    minute: float = 0.0  # simulated time of the latest request handed to the sender; the window's end once streamed
    behind: float = 0.0  # seconds the stream ran behind its schedule at the latest request
    seconds: float = 0.0
    stopped_by: signal.Signals | None = None  # the signal that cut the run short
    run_id: str = field(default_factory=lambda: secrets.token_hex(3).upper())  # prefixes HL7v2 control ids

    @property
    def interrupted(self) -> bool:
        return self.stopped_by is not None


class StreamError(Exception):
    """A mistake in what the user asked for (a bad URL, a server or listener that does not answer)."""


def check_options(options: StreamOptions) -> None:
    if options.speed is not None and options.rate is not None:
        raise StreamError("give either --speed or --rate, not both")
    if (options.speed or 1) <= 0 or (options.rate or 1) <= 0:
        raise StreamError("--speed and --rate cannot be negative (0 means as fast as the server answers)")
    if options.in_flight < 1 or options.retries < 0 or options.timeout <= 0:
        raise StreamError("--in-flight must be at least 1, --retries at least 0 and --timeout above 0")
    if options.mllp is not None:
        mllp_address(options.mllp)


def mllp_address(address: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port), or StreamError saying what is wrong."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StreamError(f"--mllp {address}: give the HL7v2 listener as HOST:PORT, e.g. localhost:2575")
    return host, int(port)


def run_stream(scenario: StreamScenario, options: StreamOptions, *,
               transport: httpx.AsyncBaseTransport | None = None,
               on_start: Callable[[StreamRun], None] | None = None) -> StreamRun:
    """Stream the scenario to `options.server` until its simulated window ends or SIGINT or SIGTERM
    arrives; returns the finished run. Raises StreamError when the server cannot be reached at all."""
    check_options(options)
    try:
        server = fhir_server(options.server, options.token)
    except ServerAddressError as exc:
        raise StreamError(str(exc)) from None
    options = replace(options, server=server.base, token=None)
    run = StreamRun(scenario, options, Hospital(scenario), adt_stats=DeliveryStats() if options.mllp else None)
    started = time.perf_counter()
    try:
        asyncio.run(_stream(run, server, transport, on_start))
    finally:
        run.seconds = time.perf_counter() - started
    return run


async def _stream(run: StreamRun, server: FhirServer, transport: httpx.AsyncBaseTransport | None,
                  on_start: Callable[[StreamRun], None] | None) -> None:
    options = run.options
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop_by(received: signal.Signals) -> None:
        run.stopped_by = run.stopped_by or received
        stop.set()

    for received in STOP_SIGNALS:
        loop.add_signal_handler(received, stop_by, received)
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=minimal", **server.headers}
    limits = httpx.Limits(max_connections=options.in_flight, max_keepalive_connections=options.in_flight)
    try:
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(httpx.AsyncClient(
                headers=headers, auth=server.auth, timeout=options.timeout, limits=limits, transport=transport))
            try:
                await check_server(client, options.server)
            except PushError as exc:
                raise StreamError(str(exc)) from None
            sender = Sender(FhirChannel(client, options.server, options.timeout), options.in_flight, options.retries,
                            options.backoff, run.stats, stop)
            adt: tuple[AdtFeed, Sender] | None = None
            if run.adt_stats is not None:
                channel = await _open_mllp(options)
                stack.callback(channel.close)
                feed = AdtFeed(run.scenario, run.run_id, simulated_send_time=options.hl7_simulated_time)
                adt = feed, Sender(channel, 1, options.retries, options.backoff, run.adt_stats, stop)
            run.pacer = Pacer(options.speed, options.rate)
            for stats in (run.stats, run.adt_stats):
                if stats is not None:
                    stats.started = run.pacer.started
            if on_start is not None:
                on_start(run)
            index = 0
            for index, interaction in enumerate(interactions(run.hospital)):
                await run.pacer.wait(interaction.minute, index, stop)
                if stop.is_set():
                    break
                run.minute, run.behind = interaction.minute, run.pacer.behind(interaction.minute, index)
                if not await sender.submit(interaction):
                    break
                if adt is not None and (message := adt[0].message(interaction)) is not None:
                    adt[1].offer(message)  # never waits: a slow HL7v2 listener must not slow the FHIR stream
            else:  # the window ends at its end, not at its last request
                await run.pacer.wait(run.scenario.hours * 60, index + 1, stop)
                if not stop.is_set():
                    run.minute = run.scenario.hours * 60
            # At the scenario's end every request runs its course (each is bounded by its retries);
            # after a stop signal, answers already on their way get a short grace.
            senders = [sender] if adt is None else [sender, adt[1]]
            await asyncio.gather(*(s.finish(min(options.timeout, STOP_GRACE_S)) for s in senders))
    finally:
        for received in STOP_SIGNALS:
            loop.remove_signal_handler(received)


async def _open_mllp(options: StreamOptions) -> MllpChannel:
    host, port = mllp_address(options.mllp or "")
    channel = MllpChannel(host, port, options.timeout)
    try:
        await channel.connect()
    except (OSError, TimeoutError) as exc:
        raise StreamError(f"cannot reach the HL7v2 listener at {host}:{port} ({exc.__class__.__name__}: {exc}); "
                          f"is it running?") from None
    return channel
