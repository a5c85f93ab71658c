"""Batched next-visit requests: every patient waiting at the same simulated instant is answered
by one call to the source, so a model can serve them in a single forward pass."""

from __future__ import annotations

import simpy

from trajsim.engine.source import PatientState, TrajectorySource


class VisitSampler:
    """Collects next-visit requests and answers them in batches, one batch per simulated instant."""

    def __init__(self, env: simpy.Environment, source: TrajectorySource) -> None:
        self.env = env
        self.source = source
        self._waiting: list[tuple[PatientState, simpy.Event]] = []
        self.batch_sizes: list[int] = []

    def next_visit(self, patient: PatientState) -> simpy.Event:
        """An event that succeeds with the patient's next proposed visit (or None)."""
        answer = self.env.event()
        if not self._waiting:  # every patient due at this instant joins the batch before it is answered
            self.env.timeout(0).callbacks.append(self._answer_batch)
        self._waiting.append((patient, answer))
        return answer

    def _answer_batch(self, _: simpy.Event) -> None:
        batch, self._waiting = self._waiting, []
        self.batch_sizes.append(len(batch))
        visits = self.source.next_visits([patient for patient, _ in batch])
        for (_, answer), visit in zip(batch, visits, strict=True):
            answer.succeed(visit)
