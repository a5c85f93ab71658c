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


class IdMinter:
    """The n-th resource of a patient always gets the same id for the same namespace."""

    def __init__(self, patient_key: str) -> None:
        self._key = patient_key
        self._count = 0

    def next(self) -> str:
        self._count += 1
        return stable_uuid(f"{self._key}/{self._count}")
