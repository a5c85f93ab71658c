"""The same hospital events as HL7 v2.5.1 ADT messages over MLLP, for systems that still listen for
ADT feeds: A04 when a patient registers at the ED, A08 when triage updates the visit, A02 when they
move to an ED bed, A01 on admission, A03 on discharge. Messages are derived from the FHIR
resources the stream sends (so both feeds tell the same story) and sent one at a time per
connection, each waiting for its MSH-10-matched ACK.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import orjson

from trajsim.stream.messages import Interaction, Request
from trajsim.stream.sender import Attempt

START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\r"  # MLLP framing (HL7 v2 Implementation Guide, appendix C)
ADT_EVENTS = {"arrive": "A04", "triage": "A08", "room": "A02", "admit": "A01", "discharge": "A03"}
STRUCTURES = {"A01": "ADT_A01", "A04": "ADT_A01", "A08": "ADT_A01", "A02": "ADT_A02", "A03": "ADT_A03"}  # MSH-9.3
PATIENT_CLASS = {"EMER": "E", "IMP": "I"}
SEX = {"female": "F", "male": "M"}
PV1_FIELDS = 45


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


def _from_fhir(moment: str) -> str:
    """FHIR dateTime (UTC, `...Z`) -> HL7 DTM."""
    return moment.removesuffix("Z").replace("-", "").replace(":", "").replace("T", "")


def _escape(text: str) -> str:
    """HL7 escape sequences for the delimiters |^~\\& inside a value."""
    for char, escaped in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("~", "\\R\\"), ("&", "\\T\\")):
        text = text.replace(char, escaped)
    return text


class AdtFeed:
    """Turns stream interactions into ADT messages; remembers each patient's PID from their
    registration so later events can carry it."""

    def __init__(self, start: datetime, facility: str) -> None:
        self.start = start
        self.facility = _escape(facility)
        self._pid: dict[str, str] = {}

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
        when = _timestamp(self.start + timedelta(minutes=interaction.minute))
        segments = [
            f"MSH|^~\\&|TRAJSIM|{self.facility}|ADT_RECEIVER|{self.facility}|{when}||ADT^{event}^{STRUCTURES[event]}|"
            f"{interaction.number}|P|2.5.1",
            f"EVN|{event}|{when}",
            self._pid[body["subject"]["reference"]],
            self._pv1(body),
        ]
        return replace(interaction, kind=f"ADT^{event}", request=Request("MLLP", f"ADT^{event}",
                                                                         "\r".join(segments).encode() + b"\r"))

    def _remember(self, bundle: dict[str, Any]) -> None:
        patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        name = patient["name"][0]
        mrn = _escape(patient["identifier"][0]["value"])
        self._pid[f"Patient/{patient['id']}"] = (
            f"PID|1||{mrn}^^^TRAJSIM^MR||{_escape(name['family'])}^{_escape(' '.join(name.get('given', [])))}||"
            f"{patient['birthDate'].replace('-', '')}|{SEX[patient['gender']]}")

    @staticmethod
    def _pv1(encounter: dict[str, Any]) -> str:
        fields = [""] * (PV1_FIELDS + 1)
        fields[0], fields[1] = "PV1", "1"
        fields[2] = PATIENT_CLASS[encounter["class"]["code"]]
        fields[3] = "ED" if encounter["class"]["code"] == "EMER" else "WARD"
        fields[19] = encounter["identifier"][0]["value"].rsplit("/", 1)[-1]
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
        async with self._lock:
            try:
                reader, writer = await self.connect()
                writer.write(START_BLOCK + interaction.request.body + END_BLOCK)
                await writer.drain()
                ack = await asyncio.wait_for(reader.readuntil(END_BLOCK), self.timeout)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
                self.close()
                what = "timeout" if isinstance(exc, TimeoutError) else "connection failed"
                return Attempt(f"{what}: {exc.__class__.__name__} talking to {self.host}:{self.port}")
        return _acknowledgement(ack.strip(START_BLOCK + END_BLOCK).decode(errors="replace"), interaction.number)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The open connection, opened first if need be."""
        if self._connection is None:
            self._connection = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection[1].close()
            self._connection = None


def _acknowledgement(ack: str, control_id: int) -> Attempt:
    """AA accepts; AE (the message is wrong) is final; AR (the receiver cannot take it now) is retried."""
    msa = next((s.split("|") for s in ack.split("\r") if s.startswith("MSA|")), None)
    if msa is None or len(msa) < 3 or msa[2] != str(control_id):
        return Attempt(f"bad ACK: no MSA segment for message {control_id} in {ack[:120]!r}")
    code, text = msa[1], msa[3] if len(msa) > 3 else ""
    if code in ("AA", "CA"):
        return Attempt()
    return Attempt(f"NAK {code}: {text or 'no reason given'}", final=code in ("AE", "CE"))
