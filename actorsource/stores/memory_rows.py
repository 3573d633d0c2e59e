"""How the memory store holds an event: a frozen row of JSON text."""

from __future__ import annotations

from datetime import datetime

import attrs


@attrs.frozen(slots=True)
class _Row:
    """An event held as JSON text, so that callers can never mutate what is stored."""

    stream_id: str
    version: int
    position: int
    type: str
    data: str
    metadata: str
    event_id: str
    recorded_at: datetime


def _position(row: _Row) -> int:
    return row.position
