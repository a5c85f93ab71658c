"""Finite places of care (beds, clinic slots) as SimPy resources, so queues and waits emerge from
demand meeting capacity instead of being drawn from a distribution.

A patient process asks for a place with `yield from unit.admit()`, holds the returned request while
occupying it, and gives it back with `unit.discharge(request)`. Every wait is recorded, so a run can
report how long patients queued and how deep the queue got.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import simpy


@dataclass
class Waits:
    """Queueing statistics of one care unit, in simulated minutes."""

    waits: list[float] = field(default_factory=list)
    longest_queue: int = 0

    def mean(self) -> float:
        return sum(self.waits) / len(self.waits) if self.waits else 0.0


class CareUnit:
    """A named pool of identical places (e.g. 20 ED beds) that patients queue for, first come first
    served, or by priority when `priority` is given (lower is served first, as in ED triage)."""

    def __init__(self, env: simpy.Environment, name: str, places: int) -> None:
        self.env = env
        self.name = name
        self.places = simpy.PriorityResource(env, capacity=places)
        self.stats = Waits()

    @property
    def occupied(self) -> int:
        return self.places.count

    @property
    def queued(self) -> int:
        return len(self.places.queue)

    def admit(self, priority: int = 0) -> Generator[simpy.Event, None, simpy.resources.resource.Request]:
        """Wait for a free place; returns the request that holds it (pass it to `discharge`)."""
        request = self.places.request(priority=priority)
        asked = self.env.now
        self.stats.longest_queue = max(self.stats.longest_queue, self.queued)
        yield request
        self.stats.waits.append(self.env.now - asked)
        return request

    def discharge(self, request: simpy.resources.resource.Request) -> None:
        """Free the place held by `request` for the next patient in the queue."""
        self.places.release(request)
