"""Canonical JSON: sorted keys, no whitespace, UTF-8; floats are not allowed in entries."""

from __future__ import annotations

import json
from typing import Any

# One encoder for every entry: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _reject_floats(value: Any) -> None:
    # Iterative, with exact-type fast paths: this runs on every audit entry a job writes.
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if isinstance(item, float):
            raise TypeError("audit entries may not contain floats (not canonical)")
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)


def canonical_text(value: Any) -> str:
    """The canonical JSON text of ``value`` (its UTF-8 bytes are what the log hashes)."""
    _reject_floats(value)
    return _ENCODER.encode(value)


def canonical_json(value: Any) -> bytes:
    return canonical_text(value).encode()
