"""The FHIR interactions a hospital's systems make as things happen, from the engine's care steps.

Nothing clinical is written here: each step's events are rendered by the exporter's own
`ResourceBuilder` (the builder `generate` uses, kept open per patient), and a step becomes a PUT of
every resource it created or changed, as rendered. On registration the patient and their care team
go as one transaction, as in a `generate` bundle. The one thing stream adds is what the batch
exporter never needs: an Encounter's status as the visit moves along (arrived, triaged,
in-progress, finished). Every resource has the builder's deterministic id and is PUT, so a retried
request after a dropped connection updates instead of duplicating.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_export.resources import ResourceBuilder
from fhir_export.writers import patient_bundle
from trajsim.clock import MINUTES_PER_DAY
from trajsim.engine.hospital import CareStep, Hospital
from trajsim.output import default_builder, fhir_namespace
from trajsim.scenario import StreamScenario

Resource = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One FHIR interaction: `url` is relative to the server's base ("" for a transaction bundle)."""

    method: str
    url: str
    body: bytes


@dataclass(frozen=True)
class Interaction:
    """A request due at `minute` (simulated minutes from the scenario's start), made by a care step
    of `kind`; `patient` keeps one patient's requests in order; `place` is the bed the patient
    holds then (unit name and number), for the HL7v2 feed's PV1-3."""

    number: int
    minute: float
    patient: int
    kind: str
    request: Request
    place: tuple[str, int] | None = None


@dataclass
class _Chart:
    """One patient's open build and the body last sent for each of its resources."""

    build: Any  # the builder's open per-patient build (ResourceBuilder.start)
    sent: dict[str, bytes] = field(default_factory=dict)

    def changes(self) -> list[Resource]:
        """Resources never sent, then those whose rendering changed since it was sent (a new
        Condition before the Encounter that now gives it as a reason), each marked as sent."""
        out = self.build.out
        out.use_relative_references()
        new, changed = [], []
        for resource in out.resources:
            body = orjson.dumps(resource)
            previous = self.sent.get(resource["id"])
            if previous != body:
                (new if previous is None else changed).append(resource)
                self.sent[resource["id"]] = body
        return new + changed

    def encounter(self, key: str) -> Resource:
        """The Encounter whose identifier is `key` (patient key / encounter id)."""
        return next(r for r in reversed(self.build.out.resources) if r["resourceType"] == "Encounter"
                    and r["identifier"][0]["value"] == key)


class HospitalRecords:
    """Renders care steps as requests; resource ids depend only on the scenario's name and seed and
    on the patient's number, so the same run sends the same resources."""

    def __init__(self, builder: ResourceBuilder) -> None:
        self.builder = builder
        self._charts: dict[int, _Chart] = {}

    def requests(self, step: CareStep) -> list[Request]:
        """The step's requests: the registration transaction, or a PUT per resource it touched."""
        subject = step.record.subject_id
        if step.kind == "register":
            chart = self._charts[subject] = _Chart(self.builder.start(step.events))
            bundle = orjson.dumps(patient_bundle(chart.build.out))
            chart.changes()  # what the transaction sent, as later PUTs would render it
            return [Request("POST", "", bundle)]
        chart = self._charts[subject]
        for event in step.events:
            chart.build.apply(event)
        if step.status is not None:
            chart.encounter(f"{self.builder.namespace}/{subject}/{step.encounter_id}")["status"] = step.status
        if step.kind == "discharge":
            del self._charts[subject]
        return [Request("PUT", f"{r['resourceType']}/{r['id']}", orjson.dumps(r)) for r in chart.changes()]


def stream_namespace(scenario: StreamScenario) -> str:
    """The builder namespace of a stream's ids and identifiers: its own, so a stream's patients never
    take the ids of a cohort generated into the same server."""
    return fhir_namespace(f"stream-{scenario.name}", scenario.seed)



def interactions(hospital: Hospital) -> Iterator[Interaction]:
    """Every request of the hospital's scenario window, in simulated-time order."""
    records = HospitalRecords(default_builder(stream_namespace(hospital.scenario)))
    number = 0
    for step in hospital.steps():
        minute = (step.day - hospital.start_day) * MINUTES_PER_DAY
        for request in records.requests(step):
            number += 1
            yield Interaction(number, minute, step.record.subject_id, step.kind, request, step.place)
