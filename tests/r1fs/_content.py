"""Deterministic test content: byte i of a file is (i mod 251), the rule the vectors were made with."""

from __future__ import annotations

_PERIOD = bytes(range(251))


def mod251(size: int, start: int = 0) -> bytes:
    """Bytes start .. start+size-1 of the stream (i mod 251)."""
    if size <= 0:
        return b""
    offset = start % 251
    reps = (offset + size) // 251 + 1
    return (_PERIOD * reps)[offset : offset + size]
