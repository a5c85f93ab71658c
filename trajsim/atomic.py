"""Atomic file output: write beside the target, then rename, so a crash never leaves half a file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def temporary_path(path: Path) -> Path:
    """The in-progress name of `path` (same directory, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _open_partial(partial: Path) -> BinaryIO:
    """`partial` opened for writing, its folder made first if missing (asked only when the open
    fails: an export writes thousands of files into folders that exist)."""
    try:
        return open(partial, "wb")
    except FileNotFoundError:
        partial.parent.mkdir(parents=True, exist_ok=True)
        return open(partial, "wb")


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file that appears at `path` only if the block completes."""
    partial = temporary_path(path)
    try:
        with _open_partial(partial) as handle:
            yield handle
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


def folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot hold a command's output (it is a file, or lies under one), or None; asked
    before any work starts, so a long run never fails at its last step."""
    if folder.exists() and not folder.is_dir():
        return f"{folder}: is a file; pass --out a folder"
    blocking = next((parent for parent in folder.parents if parent.exists() and not parent.is_dir()), None)
    return None if blocking is None else f"{folder}: {blocking} is a file, not a folder"
