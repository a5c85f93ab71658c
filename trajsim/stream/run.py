"""One stream run: step the hospital, wait until each request is due, hand it to the sender, and on
the scenario's end or Ctrl-C let the outstanding requests finish (or give up) before returning."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from fhir_export.push import FHIR_JSON, PushError, check_server
from trajsim.engine.hospital import Hospital
from trajsim.scenario import StreamScenario
from trajsim.stream.clock import Pacer
from trajsim.stream.hl7v2 import AdtFeed, MllpChannel
from trajsim.stream.messages import interactions
from trajsim.stream.sender import DeliveryStats, FhirChannel, Sender


@dataclass(frozen=True)
class StreamOptions:
    server: str
    speed: float | None = 60.0  # simulated seconds per wall second; None with no rate: as fast as possible
    rate: float | None = None  # target requests per second (instead of a speed)
    in_flight: int = 8
    retries: int = 3
    timeout: float = 10.0  # seconds to wait for one answer
    backoff: float = 0.5  # first retry delay; doubles per retry (capped, or the server's Retry-After)
    mllp: str | None = None  # HOST:PORT of an HL7v2 listener to send ADT messages to as well


@dataclass
class StreamRun:
    """A run in progress or finished: the hospital, the delivery counts and how it ended."""

    scenario: StreamScenario
    options: StreamOptions
    hospital: Hospital
    stats: DeliveryStats = field(default_factory=DeliveryStats)
    adt_stats: DeliveryStats | None = None  # the HL7v2 ADT feed's, when there is one
    pacer: Pacer = field(default_factory=Pacer)
    minute: float = 0.0  # simulated time of the latest request handed to the sender
    behind: float = 0.0  # seconds the stream ran behind its schedule at the latest request
    seconds: float = 0.0
    interrupted: bool = False


class StreamError(Exception):
    """A mistake in what the user asked for (a bad URL, a server or listener that does not answer)."""


def check_options(options: StreamOptions) -> None:
    if not options.server.startswith(("http://", "https://")):
        raise StreamError(f"{options.server}: the server must be an http:// or https:// FHIR base URL")
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
    """Stream the scenario to `options.server` until its simulated window ends or SIGINT arrives;
    returns the finished run. Raises StreamError when the server cannot be reached at all."""
    check_options(options)
    options = StreamOptions(**{**options.__dict__, "server": options.server.rstrip("/")})
    run = StreamRun(scenario, options, Hospital(scenario), adt_stats=DeliveryStats() if options.mllp else None)
    started = time.perf_counter()
    try:
        asyncio.run(_stream(run, transport, on_start))
    finally:
        run.seconds = time.perf_counter() - started
    return run


async def _stream(run: StreamRun, transport: httpx.AsyncBaseTransport | None,
                  on_start: Callable[[StreamRun], None] | None) -> None:
    options = run.options
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=minimal"}
    limits = httpx.Limits(max_connections=options.in_flight, max_keepalive_connections=options.in_flight)
    try:
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(httpx.AsyncClient(
                headers=headers, timeout=options.timeout, limits=limits, transport=transport))
            try:
                await check_server(client, options.server)
            except PushError as exc:
                raise StreamError(str(exc)) from None
            sender = Sender(FhirChannel(client, options.server), options.in_flight, options.retries, options.backoff,
                            run.stats)
            adt: tuple[AdtFeed, Sender] | None = None
            if run.adt_stats is not None:
                channel = await _open_mllp(options)
                stack.callback(channel.close)
                adt = AdtFeed(run.scenario.start, run.scenario.name), Sender(channel, 1, options.retries,
                                                                               options.backoff, run.adt_stats)
            run.pacer = Pacer(options.speed, options.rate)
            if on_start is not None:
                on_start(run)
            for index, interaction in enumerate(interactions(run.hospital)):
                await run.pacer.wait(interaction.minute, index, stop)
                if stop.is_set():
                    break
                run.minute, run.behind = interaction.minute, run.pacer.behind(interaction.minute, index)
                await sender.submit(interaction)
                if adt is not None and (message := adt[0].message(interaction)) is not None:
                    await adt[1].submit(message)
            run.interrupted = stop.is_set()
            # After Ctrl-C, answers already on their way get one timeout's worth of time; at the
            # scenario's end every request runs its course (each is bounded by its retries).
            senders = [sender] if adt is None else [sender, adt[1]]
            await asyncio.gather(*(s.finish(options.timeout if run.interrupted else None) for s in senders))
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _open_mllp(options: StreamOptions) -> MllpChannel:
    host, port = mllp_address(options.mllp or "")
    channel = MllpChannel(host, port, options.timeout)
    try:
        await channel.connect()
    except (OSError, TimeoutError) as exc:
        raise StreamError(f"cannot reach the HL7v2 listener at {host}:{port} ({exc.__class__.__name__}: {exc}); "
                          f"is it running?") from None
    return channel
