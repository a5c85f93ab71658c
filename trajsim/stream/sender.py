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
from typing import Protocol

import httpx
import numpy as np

from fhir_export.push import retry_delay, operation_outcome_text
from trajsim.stream.messages import Interaction

BACKLOG_PER_SLOT = 8  # requests due but waiting for a slot, per slot, before the simulation waits too


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
    acknowledged or undelivered: `submitted == acknowledged + len(undelivered)` once finished."""

    submitted: int = 0
    attempts: int = 0
    acknowledged: int = 0
    retries: int = 0
    in_flight: int = 0
    waiting: int = 0  # due, but waiting for a free slot or for the same patient's earlier request
    errors: Counter = field(default_factory=Counter)  # failed attempts by kind ("HTTP 503", "timeout", ...)
    acknowledged_by_kind: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, of attempts the server answered
    undelivered: list[Undelivered] = field(default_factory=list)

    def latency_percentiles(self) -> dict[str, float]:
        """p50, p90, p99 and max latency in milliseconds (zeros before the first answer)."""
        if not self.latencies:
            return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
        values = np.percentile(np.asarray(self.latencies) * 1000, [50, 90, 99, 100])
        return {name: round(float(v), 2) for name, v in zip(("p50", "p90", "p99", "max"), values)}


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
    """Each interaction as one HTTP request to a FHIR server's base URL."""

    def __init__(self, client: httpx.AsyncClient, server: str) -> None:
        self.client = client
        self.server = server

    async def attempt(self, interaction: Interaction) -> Attempt:
        request = interaction.request
        url = f"{self.server}/{request.url}" if request.url else self.server
        try:
            response = await self.client.request(request.method, url, content=request.body)
        except httpx.TimeoutException:
            return Attempt(f"timeout: no answer within {self.client.timeout.read} s")
        except httpx.TransportError as exc:
            return Attempt(f"connection failed: {exc.__class__.__name__}: {exc}")
        if response.is_success:
            return Attempt(status=response.status_code)
        status = response.status_code
        return Attempt(f"HTTP {status}: {operation_outcome_text(response.content)}", status,
                       final=status < 500 and status != 429, response=response)


class Sender:
    """Delivers interactions through a channel as they are submitted; `finish()` waits for the last answers."""

    def __init__(self, channel: Channel, in_flight: int, retries: int, backoff: float, stats: DeliveryStats) -> None:
        self.channel = channel
        self.retries = retries
        self.backoff = backoff
        self.stats = stats
        self._slots = asyncio.Semaphore(in_flight)
        self._backlog = asyncio.Semaphore(in_flight * BACKLOG_PER_SLOT)
        self._last_of_patient: dict[int, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, interaction: Interaction) -> None:
        """Start delivering; waits only while the backlog is full (the receiver is falling behind)."""
        await self._backlog.acquire()
        self.stats.submitted += 1
        self.stats.waiting += 1
        earlier = self._last_of_patient.get(interaction.patient)
        task = asyncio.create_task(self._deliver(interaction, earlier))
        self._last_of_patient[interaction.patient] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._done(interaction.patient, done))

    async def finish(self, grace: float | None) -> None:
        """Wait up to `grace` seconds (None: as long as it takes) for outstanding interactions; those
        still unanswered are cancelled and recorded as undelivered."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def _done(self, patient: int, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._backlog.release()
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
                            self.stats.acknowledged += 1
                            self.stats.acknowledged_by_kind[interaction.kind] += 1
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
        attempt = await self.channel.attempt(interaction)
        if attempt.reason is None or attempt.status is not None:  # an answer came
            self.stats.latencies.append(time.perf_counter() - started)
        return attempt
