"""Deterministic identity: resource ids and per-patient choices derived from names, never from a
global random state, so the same scenario and seed give the same bytes in any process."""

from __future__ import annotations

import hashlib
import random
import uuid


def stable_uuid(key: str) -> str:
    """A version-4-shaped UUID that depends only on `key`."""
    return str(uuid.UUID(bytes=hashlib.blake2b(key.encode(), digest_size=16).digest(), version=4))


def stable_random(key: str) -> random.Random:
    """A random stream that depends only on `key` (for names, addresses, note wording)."""
    return random.Random(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big"))


_GOLDEN = 0x9E3779B97F4A7C15F39CC0605CEDC835  # odd 128-bit step: successive ids differ in every field
_MASK = 2**128 - 1
_VERSION_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & _MASK
_VERSION_SET = (0x4000 << 64) | (0x8000 << 48)


class IdMinter:
    """The n-th resource of a patient always gets the same id for the same namespace: one hash of
    the patient's key, then a cheap step per resource (ids are minted for every resource)."""

    def __init__(self, patient_key: str) -> None:
        self._state = int.from_bytes(hashlib.blake2b(patient_key.encode(), digest_size=16).digest(), "big")

    def next(self) -> str:
        self._state = state = (self._state + _GOLDEN) & _MASK
        text = "%032x" % ((state & _VERSION_CLEAR) | _VERSION_SET)
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
