"""Deliver the hospital's requests to a receiver (a FHIR server, an HL7v2 MLLP endpoint):
asynchronously, with a bounded number in flight, one patient's requests in the order they happened,
and bounded retries (with the backoff of `trajsim push`) for failures that are the network's or the
receiver's. Whatever was not acknowledged ends up in the dead-letter list with the reason, so
nothing is silently lost.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from typing import Protocol

import httpx
import numpy as np
import orjson

from fhir_export.push import NoAnswer, exchange, judge_response, operation_outcome_text, retry_delay
from trajsim.stream.messages import Interaction, Request

BACKLOG_PER_SLOT = 8  # requests due but waiting for a slot, per slot, before the simulation waits too
MAX_ANSWER_BYTES = 1024 * 1024  # a PUT answer is empty or one resource; a registration's is a few KB
RATE_WINDOW_S = 10.0  # the dashboard's current rate is over this many wall seconds


@dataclass
class Undelivered:
    """An interaction the server did not acknowledge, and why."""

    interaction: Interaction
    attempts: int
    status: int | None
    reason: str


@dataclass
class DeliveryStats:
    """Running counts for the dashboard and the summary. Every submitted interaction ends up either
    acknowledged or undelivered: `submitted == acknowledged + len(undelivered)` once finished.
    Acknowledgements and latencies are kept by wall second since `started`, for rates over time."""

    submitted: int = 0
    attempts: int = 0
    acknowledged: int = 0
    retries: int = 0
    in_flight: int = 0
    waiting: int = 0  # due, but waiting for a free slot or for the same patient's earlier request
    errors: Counter = field(default_factory=Counter)  # failed attempts by kind ("HTTP 503", "timeout", ...)
    acknowledged_by_kind: Counter = field(default_factory=Counter)
    undelivered: list[Undelivered] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    acknowledged_per_second: list[int] = field(default_factory=list)
    latencies_per_second: list[list[float]] = field(default_factory=list)  # seconds, of attempts that were answered

    def record_acknowledged(self, kind: str) -> None:
        self.acknowledged += 1
        self.acknowledged_by_kind[kind] += 1
        self._second(self.acknowledged_per_second, 0)[-1] += 1

    def record_latency(self, seconds: float) -> None:
        self._second(self.latencies_per_second, None)[-1].append(seconds)

    def _second(self, series: list, empty: int | None) -> list:
        """`series` grown to the current wall second, new seconds starting at `empty` (None: a new list)."""
        while len(series) <= time.monotonic() - self.started:
            series.append([] if empty is None else empty)
        return series

    def current_rate(self, window: float = RATE_WINDOW_S) -> float:
        """Acknowledgements per second over the last `window` wall seconds (since the start, if sooner)."""
        elapsed = time.monotonic() - self.started
        first = max(int(elapsed - window), 0)
        return sum(self.acknowledged_per_second[first:]) / max(elapsed - first, 1e-9)

    def latency_percentiles(self) -> dict[str, float]:
        """p50, p90, p99 and max latency in milliseconds (zeros before the first answer)."""
        return _percentiles(list(chain.from_iterable(self.latencies_per_second)), ("p50", "p90", "p99", "max"))

    def series(self) -> dict[str, list]:
        """Per wall second since the start: acknowledgements, and the p50 and p90 latency (ms) of the
        answers that came in that second (None in a second without one)."""
        seconds = max(len(self.acknowledged_per_second), len(self.latencies_per_second))
        acknowledged = self.acknowledged_per_second + [0] * (seconds - len(self.acknowledged_per_second))
        latencies = self.latencies_per_second + [[]] * (seconds - len(self.latencies_per_second))
        percentiles = [_percentiles(values, ("p50", "p90")) if values else None for values in latencies]
        return {"acknowledged": acknowledged,
                **{f"latency_{name}_ms": [None if p is None else p[name] for p in percentiles] for name in ("p50", "p90")}}


PERCENTILES = {"p50": 50, "p90": 90, "p99": 99, "max": 100}


def _percentiles(seconds: list[float], names: tuple[str, ...]) -> dict[str, float]:
    if not seconds:
        return dict.fromkeys(names, 0.0)
    values = np.percentile(np.asarray(seconds) * 1000, [PERCENTILES[name] for name in names])
    return {name: round(float(v), 2) for name, v in zip(names, values)}


@dataclass(frozen=True)
class Attempt:
    """How one try went: acknowledged (`reason` None) or why not. `final` when sending the same
    thing again cannot help (the receiver has judged it); `response` carries a Retry-After."""

    reason: str | None = None
    status: int | None = None
    final: bool = False
    response: httpx.Response | None = None


class Channel(Protocol):
    """Something that can try to deliver one interaction: a FHIR server, an MLLP endpoint."""

    async def attempt(self, interaction: Interaction) -> Attempt: ...


class FhirChannel:
    """Each interaction as one HTTP request to a FHIR server's base URL, answered within `deadline`
    seconds (the whole answer, however slowly it trickles in). A 2xx acknowledges only when its body
    is a valid answer to the request: the server may have said "200" without storing anything."""

    def __init__(self, client: httpx.AsyncClient, server: str, deadline: float) -> None:
        self.client = client
        self.server = server
        self.deadline = deadline

    async def attempt(self, interaction: Interaction) -> Attempt:
        request = interaction.request
        url = f"{self.server}/{request.url}" if request.url else self.server
        try:
            response = await exchange(self.client, request.method, url, request.body, self.deadline, MAX_ANSWER_BYTES)
        except NoAnswer as exc:
            return Attempt(str(exc))
        status = response.status_code
        if response.is_success:
            wrong = answer_problem(request, response.content)
            # As for `trajsim push`: a server that answers 2xx wrongly would answer a retry the same way.
            return Attempt(status=status) if wrong is None else Attempt(f"invalid answer: {wrong}", status,
                                                                       final=True)
        return Attempt(f"HTTP {status}: {operation_outcome_text(response.content)}", status,
                       final=status < 500 and status != 429, response=response)


def answer_problem(request: Request, body: bytes) -> str | None:
    """What is wrong with a 2xx answer to `request`, or None when it acknowledges it: a transaction
    needs its transaction-response with a 2xx entry per entry; a PUT an empty body, the resource
    itself or an OperationOutcome without errors."""
    if request.method == "POST":
        accepted, _, why = judge_response(body, "transaction", len(orjson.loads(request.body)["entry"]))
        return None if accepted else why
    if not body.strip():
        return None
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"answered 2xx but not with JSON (starts {body[:80]!r})"
    resource_type, _, resource_id = request.url.partition("/")
    kind = answer.get("resourceType") if isinstance(answer, dict) else None
    if kind == resource_type and answer.get("id", resource_id) == resource_id:
        return None
    if kind != "OperationOutcome":
        return f"answered 2xx with {f'{kind}/' + str(answer.get('id')) if kind else 'something else'}, not {request.url}"
    issues = answer.get("issue", [])
    if not isinstance(issues, list) or not all(isinstance(issue, dict) for issue in issues):
        return f"answered 2xx with a malformed OperationOutcome: {operation_outcome_text(body)}"
    if any(issue.get("severity") in ("error", "fatal") for issue in issues):
        return f"answered 2xx with an OperationOutcome of errors: {operation_outcome_text(body)}"
    return None


class Sender:
    """Delivers interactions through a channel as they are submitted, at most `in_flight` at once and
    `in_flight * BACKLOG_PER_SLOT` waiting or in flight; `finish()` waits for the last answers.
    Once `stop` is set, nothing waits for room any more."""

    def __init__(self, channel: Channel, in_flight: int, retries: int, backoff: float, stats: DeliveryStats,
                 stop: asyncio.Event) -> None:
        self.channel = channel
        self.retries = retries
        self.backoff = backoff
        self.stats = stats
        self.stop = stop
        self.backlog = in_flight * BACKLOG_PER_SLOT
        self._slots = asyncio.Semaphore(in_flight)
        self._last_of_patient: dict[int, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, interaction: Interaction) -> bool:
        """Start delivering; waits while the backlog is full (the receiver is falling behind), which
        holds the simulation back with it. False, and nothing submitted, when stopped first."""
        while len(self._tasks) >= self.backlog and not self.stop.is_set():
            stopping = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait({*self._tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
        if self.stop.is_set():
            return False
        self._start(interaction)
        return True

    def offer(self, interaction: Interaction) -> None:
        """Start delivering without ever waiting: when the backlog is full the interaction is
        dead-lettered at once, so a slow receiver holds nothing else back."""
        if len(self._tasks) >= self.backlog:
            self.stats.submitted += 1
            self.stats.undelivered.append(Undelivered(
                interaction, 0, None, f"not sent: the backlog was full ({self.backlog} waiting for the receiver)"))
            return
        self._start(interaction)

    def _start(self, interaction: Interaction) -> None:
        self.stats.submitted += 1
        self.stats.waiting += 1
        earlier = self._last_of_patient.get(interaction.patient)
        task = asyncio.create_task(self._deliver(interaction, earlier))
        self._last_of_patient[interaction.patient] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._done(interaction.patient, done))

    async def finish(self, grace: float) -> None:
        """Wait for the outstanding interactions to run their course, or once `stop` is set (before
        or meanwhile) for `grace` seconds more; those still unanswered then are cancelled and
        recorded as undelivered."""
        if not self.stop.is_set() and self._tasks:
            stopping = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait({asyncio.gather(*self._tasks, return_exceptions=True), stopping},
                               return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def _done(self, patient: int, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if self._last_of_patient.get(patient) is task:
            del self._last_of_patient[patient]

    async def _deliver(self, interaction: Interaction, earlier: asyncio.Task | None) -> None:
        attempts, last = 0, Attempt("cancelled before it was sent")
        queued = True
        try:
            if earlier is not None:
                await asyncio.wait([earlier])  # a patient's updates in order, whatever became of the earlier one
            async with self._slots:
                self.stats.waiting -= 1
                queued, last = False, Attempt("sent, no answer yet")
                self.stats.in_flight += 1
                try:
                    for attempts in range(1, self.retries + 2):
                        last = await self._attempt(interaction)
                        if last.reason is None:
                            self.stats.record_acknowledged(interaction.kind)
                            return
                        self.stats.errors[last.reason.split(":")[0]] += 1
                        if last.final:
                            break
                        if attempts <= self.retries:
                            self.stats.retries += 1
                            await asyncio.sleep(retry_delay(last.response, attempts - 1, self.backoff))
                finally:
                    self.stats.in_flight -= 1
            self.stats.undelivered.append(Undelivered(interaction, attempts, last.status,
                                                      f"gave up after {attempts} attempt(s): {last.reason}"))
        except asyncio.CancelledError:
            if queued:
                self.stats.waiting -= 1
            self.stats.undelivered.append(Undelivered(
                interaction, attempts, last.status, f"stopped before it was acknowledged (last: {last.reason})"))
            raise

    async def _attempt(self, interaction: Interaction) -> Attempt:
        self.stats.attempts += 1
        started = time.perf_counter()
        try:
            attempt = await self.channel.attempt(interaction)
        except Exception as exc:  # noqa: BLE001 - a receiver's answer we failed to foresee still ends dead-lettered
            attempt = Attempt(f"unexpected answer: {exc.__class__.__name__}: {exc}", final=True)
        if attempt.reason is None or attempt.status is not None:  # an answer came
            self.stats.record_latency(time.perf_counter() - started)
        return attempt
