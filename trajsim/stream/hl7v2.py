"""The same hospital events as HL7 v2.5.1 ADT messages over MLLP, for systems that still listen for
ADT feeds: A04 when a patient registers at the ED, A08 when triage updates the visit, A02 when they
move to an ED bed, A01 on admission, A03 on discharge. Messages are derived from the FHIR
resources the stream sends (so both feeds tell the same story) and sent one at a time per
connection, each waiting for its MSH-10-matched ACK.

Times follow HL7 v2.5's meanings: MSH-7 is when the message was sent (the wall clock), EVN-2
(recorded) and EVN-6 (occurred) are when the event happened in the simulated hospital.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from trajsim.stream.messages import Interaction, Request, stream_namespace
from trajsim.scenario import StreamScenario
from trajsim.stream.sender import Attempt

START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\r"  # MLLP framing (HL7 v2 Implementation Guide, appendix C)
ADT_EVENTS = {"arrive": "A04", "triage": "A08", "room": "A02", "admit": "A01", "discharge": "A03"}
STRUCTURES = {"A01": "ADT_A01", "A04": "ADT_A01", "A08": "ADT_A01", "A02": "ADT_A02", "A03": "ADT_A03"}  # MSH-9.3
PATIENT_CLASS = {"EMER": "E", "IMP": "I"}
# PV1-10 hospital service (HL7 table 0069 is user-defined): MED is one of its suggested values;
# EMR, emergency medicine, is this hospital's own.
HOSPITAL_SERVICE = {"EMER": "EMR", "IMP": "MED"}
POINT_OF_CARE = {"ED beds": "ED", "ward beds": "WARD"}  # PV1-3.1, by the engine's unit
SEX = {"female": "F", "male": "M"}
PV1_FIELDS = 45


def _timestamp(moment: datetime) -> str:
    """HL7 DTM to the second, in UTC (the simulated clock's zone too)."""
    return moment.strftime("%Y%m%d%H%M%S") + "+0000"


def _from_fhir(moment: str) -> str:
    """FHIR dateTime (UTC, `...Z`) -> HL7 DTM."""
    return _timestamp(datetime.fromisoformat(moment.removesuffix("Z")))


def _escape(text: str) -> str:
    """HL7 escape sequences for the delimiters |^~\\& inside a value."""
    for char, escaped in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("~", "\\R\\"), ("&", "\\T\\")):
        text = text.replace(char, escaped)
    return text


def _identifier(value: str, namespace: str) -> str:
    """A stream identifier (`<namespace>/<patient>[/<encounter>]`) as a clean HL7 ID: its last number."""
    return _escape(value.removeprefix(f"{namespace}/").rpartition("/")[2])


class AdtFeed:
    """Turns stream interactions into ADT messages; remembers each patient's PID and their care
    team from their registration so later events can carry them. Control ids (MSH-10) are
    `run_id`-number, unique within the run and across runs. MRNs and visit numbers are the
    stream's own numbers, assigned by the stream's namespace (slashes as dashes), so two
    scenarios' patients never share an MRN."""

    def __init__(self, scenario: StreamScenario, run_id: str, *, simulated_send_time: bool = False) -> None:
        self.start = scenario.start
        self.facility = _escape(scenario.name)
        self.namespace = stream_namespace(scenario)
        self.authority = _escape(self.namespace.replace("/", "-"))
        self.run_id = run_id
        self.simulated_send_time = simulated_send_time
        self.sent = 0
        self._pid: dict[str, str] = {}
        self._doctors: dict[str, str] = {}  # Practitioner/id -> XCN

    def message(self, interaction: Interaction) -> Interaction | None:
        """The ADT message for this interaction, as an interaction to send over MLLP, or None when
        the event has no ADT counterpart (vitals, results, orders)."""
        request = interaction.request
        if interaction.kind == "register":
            self._remember(orjson.loads(request.body))
            return None
        event = ADT_EVENTS.get(interaction.kind)
        if event is None or not request.url.startswith("Encounter/"):
            return None
        body = orjson.loads(request.body)
        happened = _timestamp(self.start + timedelta(minutes=interaction.minute))
        sent = happened if self.simulated_send_time else _timestamp(datetime.now(UTC))
        self.sent += 1
        segments = [
            (f"MSH|^~\\&|TRAJSIM|{self.facility}|ADT_RECEIVER|{self.facility}|{sent}||ADT^{event}^{STRUCTURES[event]}|"
             f"{self.run_id}-{self.sent}|P|2.5.1"),
            f"EVN|{event}|{happened}||||{happened}",
            self._pid[body["subject"]["reference"]],
            self._pv1(body, interaction.place),
        ]
        return replace(interaction, kind=f"ADT^{event}", request=Request("MLLP", f"ADT^{event}",
                                                                         "\r".join(segments).encode() + b"\r"))

    def _remember(self, bundle: dict[str, Any]) -> None:
        resources = [entry["resource"] for entry in bundle["entry"]]
        for doctor in (r for r in resources if r["resourceType"] == "Practitioner"):
            name = doctor["name"][0]
            self._doctors[f"Practitioner/{doctor['id']}"] = (
                f"{_escape(doctor['identifier'][0]['value'])}^{_escape(name['family'])}^"
                f"{_escape(' '.join(name.get('given', [])))}^^^{_escape(' '.join(name.get('prefix', [])))}^^^NPI")
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        name = patient["name"][0]
        mrn = _identifier(patient["identifier"][0]["value"], self.namespace)
        self._pid[f"Patient/{patient['id']}"] = (
            f"PID|1||{mrn}^^^{self.authority}^MR||{_escape(name['family'])}^{_escape(' '.join(name.get('given', [])))}||"
            f"{patient['birthDate'].replace('-', '')}|{SEX[patient['gender']]}")

    def _pv1(self, encounter: dict[str, Any], place: tuple[str, int] | None) -> str:
        fields = [""] * (PV1_FIELDS + 1)
        visit_class = encounter["class"]["code"]
        fields[0], fields[1] = "PV1", "1"
        fields[2] = PATIENT_CLASS[visit_class]
        # Assigned location, point of care^room^bed: the engine numbers a unit's places (beds), each
        # given here as a room of its own; a patient still waiting for an ED bed is in the ED.
        fields[3] = f"{POINT_OF_CARE[place[0]]}^{place[1]}^1" if place else "ED"
        attending = [p["individual"]["reference"] for p in encounter.get("participant", []) if "individual" in p]
        fields[7] = self._doctors.get(attending[0], "") if attending else ""
        fields[10] = HOSPITAL_SERVICE[visit_class]
        fields[19] = f"{_identifier(encounter['identifier'][0]['value'], self.namespace)}^^^{self.authority}^VN"
        period = encounter["period"]
        fields[44] = _from_fhir(period["start"])
        if "end" in period:
            fields[36] = "01"  # discharged to home or self care (HL7 table 0112)
            fields[45] = _from_fhir(period["end"])
        return "|".join(fields)


class MllpChannel:
    """One MLLP connection, reopened after a failure; one message in flight at a time, as MLLP's
    request-acknowledge exchange requires."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._lock = asyncio.Lock()
        self._connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def attempt(self, interaction: Interaction) -> Attempt:
        message = interaction.request.body
        control_id = message.split(b"|", 10)[9].decode()  # MSH-10
        async with self._lock:
            try:  # the whole exchange within the timeout, however the listener stalls
                ack = await asyncio.wait_for(self._exchange(message), self.timeout)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                    OSError) as exc:
                self.close()
                what = "timeout" if isinstance(exc, TimeoutError) else "connection failed"
                return Attempt(f"{what}: {exc.__class__.__name__} talking to {self.host}:{self.port}")
        return _acknowledgement(ack.strip(START_BLOCK + END_BLOCK).decode(errors="replace"), control_id)

    async def _exchange(self, message: bytes) -> bytes:
        reader, writer = await self.connect()
        writer.write(START_BLOCK + message + END_BLOCK)
        await writer.drain()
        return await reader.readuntil(END_BLOCK)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The open connection, opened first if need be."""
        if self._connection is None:
            self._connection = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection[1].close()
            self._connection = None


def _acknowledgement(ack: str, control_id: str) -> Attempt:
    """AA accepts; AE (the message is wrong) is final; AR (the receiver cannot take it now) is retried."""
    msa = next((s.split("|") for s in ack.split("\r") if s.startswith("MSA|")), None)
    if msa is None or len(msa) < 3 or msa[2] != control_id:
        return Attempt(f"bad ACK: no MSA segment for message {control_id} in {ack[:120]!r}")
    code, text = msa[1], msa[3] if len(msa) > 3 else ""
    if code in ("AA", "CA"):
        return Attempt()
    return Attempt(f"NAK {code}: {text or 'no reason given'}", final=code in ("AE", "CE"))
