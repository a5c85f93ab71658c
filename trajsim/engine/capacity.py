"""Finite places of care (beds, clinicians) as SimPy resources, so queues and waits emerge from
demand meeting capacity instead of being drawn from a distribution.

A patient process holds a place for as long as it stays in a `with` block:

    with unit.request(priority=esi) as place:
        yield place
        ...  # occupying the place

Every wait is recorded, so a run can report how long patients queued and how deep the queue got.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import simpy
from simpy.resources.resource import PriorityRequest


@dataclass
class Waits:
    """Queueing statistics of one care unit, in the environment's time unit (days in the engine)."""

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
    def capacity(self) -> int:
        return self.places.capacity

    @property
    def occupied(self) -> int:
        return self.places.count

    @property
    def queued(self) -> int:
        return len(self.places.queue)

    def request(self, priority: int = 0) -> PriorityRequest:
        """Ask for a place: yield the request to wait for it; leaving its `with` block frees it."""
        request = self.places.request(priority=priority)
        asked = self.env.now
        request.callbacks.append(lambda _: self.stats.waits.append(self.env.now - asked))
        self.stats.longest_queue = max(self.stats.longest_queue, self.queued)
        return request
