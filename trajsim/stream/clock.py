"""When a request is due on the wall clock: simulated time scaled by a speed (`--speed 60` plays one
simulated hour per minute), or a steady target rate of requests per second regardless of simulated
time, or (neither) as fast as the server answers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class Pacer:
    speed: float | None = None  # simulated seconds per wall second
    rate: float | None = None  # requests per wall second

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    def due(self, minute: float, index: int) -> float:
        """Wall seconds after the start at which the `index`-th request, simulated at `minute`, is due."""
        if self.speed:
            return minute * 60 / self.speed
        if self.rate:
            return index / self.rate
        return 0.0

    def behind(self, minute: float, index: int) -> float:
        """Seconds the stream runs behind its schedule (0 when on time, or when there is none)."""
        if not (self.speed or self.rate):
            return 0.0
        return max(time.monotonic() - self.started - self.due(minute, index), 0.0)

    async def wait(self, minute: float, index: int, stop: asyncio.Event) -> None:
        """Sleep until the request is due, or until `stop` is set."""
        delay = self.started + self.due(minute, index) - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
