"""Deliver the hospital's requests to a FHIR server: asynchronously, with a bounded number in
flight, one patient's requests in the order they happened, and bounded retries (with the backoff of
`trajsim push`) for failures that are the network's or the server's. Whatever the server did not
acknowledge ends up in the dead-letter list with the reason, so nothing is silently lost.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np

from fhir_export.push import _retry_after, operation_outcome_text
from trajsim.stream.hospital import Interaction

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


class Sender:
    """Sends interactions as they are submitted; `finish()` waits for the last answers."""

    def __init__(self, client: httpx.AsyncClient, server: str, in_flight: int, retries: int, backoff: float,
                 stats: DeliveryStats) -> None:
        self.client = client
        self.server = server
        self.retries = retries
        self.backoff = backoff
        self.stats = stats
        self._slots = asyncio.Semaphore(in_flight)
        self._backlog = asyncio.Semaphore(in_flight * BACKLOG_PER_SLOT)
        self._last_of_patient: dict[int, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, interaction: Interaction) -> None:
        """Start delivering; waits only while the backlog is full (the server is falling behind)."""
        await self._backlog.acquire()
        self.stats.submitted += 1
        self.stats.waiting += 1
        earlier = self._last_of_patient.get(interaction.patient)
        task = asyncio.create_task(self._deliver(interaction, earlier))
        self._last_of_patient[interaction.patient] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._done(interaction.patient, done))

    async def finish(self, grace: float) -> None:
        """Wait up to `grace` seconds for outstanding requests; those still unanswered are cancelled
        and recorded as undelivered."""
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
        attempts, status, reason = 0, None, "cancelled before it was sent"
        queued = True
        try:
            if earlier is not None:
                await asyncio.wait([earlier])  # a patient's updates in order, whatever became of the earlier one
            async with self._slots:
                self.stats.waiting -= 1
                queued, reason = False, "sent, no answer yet"
                self.stats.in_flight += 1
                try:
                    for attempts in range(1, self.retries + 2):
                        response, status, reason = await self._attempt(interaction)
                        if reason is None:
                            self.stats.acknowledged += 1
                            self.stats.acknowledged_by_kind[interaction.kind] += 1
                            return
                        self.stats.errors[reason.split(":")[0]] += 1
                        if status is not None and status < 500 and status != 429:
                            break  # the server has judged the request; sending it again changes nothing
                        if attempts <= self.retries:
                            self.stats.retries += 1
                            await asyncio.sleep(_retry_after(response, attempts - 1, self.backoff))
                finally:
                    self.stats.in_flight -= 1
            self.stats.undelivered.append(Undelivered(interaction, attempts, status, f"gave up after {attempts} "
                                                      f"attempt(s): {reason}"))
        except asyncio.CancelledError:
            if queued:
                self.stats.waiting -= 1
            self.stats.undelivered.append(Undelivered(
                interaction, attempts, status, f"stopped before the server acknowledged it (last: {reason})"))
            raise

    async def _attempt(self, interaction: Interaction) -> tuple[httpx.Response | None, int | None, str | None]:
        """One try: (response, status, None) when acknowledged, else the reason it failed."""
        request = interaction.request
        url = f"{self.server}/{request.url}" if request.url else self.server
        self.stats.attempts += 1
        started = time.perf_counter()
        try:
            response = await self.client.request(request.method, url, content=request.body)
        except httpx.TimeoutException:
            return None, None, f"timeout: no answer within {self.client.timeout.read} s"
        except httpx.TransportError as exc:
            return None, None, f"connection failed: {exc.__class__.__name__}: {exc}"
        self.stats.latencies.append(time.perf_counter() - started)
        if response.is_success:
            return response, response.status_code, None
        return response, response.status_code, f"HTTP {response.status_code}: {operation_outcome_text(response.content)}"
