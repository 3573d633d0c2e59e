"""JSON text in and out of stored rows, shared by the stores that keep JSON as text."""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from ..._errors import CodecError
from ..._records import JSONDict, NewEvent, SnapshotRecord, StoredEvent

logger = logging.getLogger("actorsource.stores")


def encode_json(value: JSONDict, what: str, event: NewEvent) -> str:
    """Return ``value`` as JSON text; a value JSON cannot hold raises a CodecError naming it."""
    if not value and type(value) is dict:
        return "{}"  # most metadata: spare the call
    try:
        text = orjson.dumps(value).decode()
    except TypeError as exc:
        msg = f"the {what} of event {event.type} ({event.event_id}) is not JSON-serializable: {exc}"
        raise CodecError(msg, type_name=event.type) from exc
    # orjson writes NaN and infinities as null; refuse them rather than change the data (the
    # search is on the str: on bytes it costs several times as much here, 300 ns an event)
    if "null" in text and _has_non_finite_float(value):
        msg = (
            f"the {what} of event {event.type} ({event.event_id}) holds NaN or an infinity, "
            "which JSON cannot hold (it would be stored as null)"
        )
        raise CodecError(msg, type_name=event.type)
    return text


_NOTHING: Final = object()


def encode_rows(events: Sequence[NewEvent]) -> list[tuple[str, str | bytes, str, str]]:
    """Return events as ``(type, data json, metadata json, event id)`` rows (a store may
    compress the data in place).

    One call per append, not two per event; the events of one command share their metadata
    dict, which is encoded once. What JSON cannot hold raises :func:`encode_json`'s CodecError.
    """
    rows: list[tuple[str, str | bytes, str, str]] = []
    encoded: object = _NOTHING  # the metadata dict meta_text holds
    meta_text = ""
    for e in events:
        data = e.data
        try:
            data_text = orjson.dumps(data).decode()
        except TypeError:
            data_text = encode_json(data, "data", e)  # raises, naming the event
        if "null" in data_text:
            data_text = encode_json(data, "data", e)  # raises for NaN or an infinity
        metadata = e.metadata
        if metadata is not encoded:
            try:
                meta_text = orjson.dumps(metadata).decode()
            except TypeError:
                meta_text = encode_json(metadata, "metadata", e)
            if "null" in meta_text:
                meta_text = encode_json(metadata, "metadata", e)
            encoded = metadata
        rows.append((e.type, data_text, meta_text, e.event_id))
    return rows


#: zlib's level for stored rows (see ``compress_over``; 1 is the fastest: on JSON events it
#: compresses almost as well as the default 6, measured in the docs' performance notes)
COMPRESSION_LEVEL: Final = 1


def check_compress_over(value: object) -> int | None:
    """Return a store's ``compress_over`` if it is None or an int >= 1, else raise."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        msg = (
            "compress_over must be an int >= 1 (the size in bytes above which stored JSON is "
            f"compressed) or None (never), got {value!r}"
        )
        raise ValueError(msg)
    return value


def compress_json(text: str) -> bytes:
    """Return JSON text compressed for storage; such a value is told from JSON text by its type
    (bytes, a BLOB) and by zlib's header, which no JSON text starts with."""
    return zlib.compress(text.encode(), COMPRESSION_LEVEL)


def _inflated(value: object, error: Exception) -> Any:
    """The value of a stored JSON value that did not parse: compressed JSON is decompressed and
    parsed; anything else raises ``error`` (or why decompressing failed)."""
    if type(value) is not bytes:
        raise error
    try:
        return orjson.loads(zlib.decompress(value))
    except zlib.error as exc:
        msg = f"{error}; not zlib-compressed JSON either ({exc})"
        raise orjson.JSONDecodeError(msg, "", 0) from exc


def stored_event(row: Any, recorded_at: datetime) -> StoredEvent:
    """The event of a row selected as ``stream_id, version, position, type, data, metadata,
    event_id, ...`` (data and metadata as stored JSON text; the commit time given by the
    caller, as each store keeps it its own way). Compressed data is in the data column, or,
    where a store keeps it in a column of its own, the data is NULL and it is column 8.

    :raises CodecError: if the row's data or metadata is not JSON (a damaged row), naming it
    """
    try:
        data = orjson.loads(row[4])
    except orjson.JSONDecodeError as exc:
        try:
            # a compressed row: parsing fails at its first byte (or at NULL)
            data = _inflated(row[8] if row[4] is None else row[4], exc)
        except orjson.JSONDecodeError as inner:
            raise damaged_event(row, "data", inner) from inner
    try:
        metadata = orjson.loads(row[5])
    except orjson.JSONDecodeError as exc:
        raise damaged_event(row, "metadata", exc) from exc
    return StoredEvent(row[0], row[1], row[2], row[3], data, metadata, row[6], recorded_at)


def event_data(
    stream_id: str, rows: Sequence[Any], first: int = 0
) -> list[tuple[int, str, JSONDict]]:
    """``(version, type, data)`` of a stream's rows selected as ``version, type, data,
    position`` from column ``first`` on (data as stored JSON text, or NULL and the compressed
    data in the next column): what replaying needs.

    :raises CodecError: if a row's data is not JSON (a damaged row), naming it
    """
    kind, data = first + 1, first + 2
    try:
        return [(row[first], row[kind], orjson.loads(row[data])) for row in rows]
    except orjson.JSONDecodeError:
        # compressed rows (or a damaged one, which raises naming it): row by row
        return [
            (row[first], row[kind], event_data_of(stream_id, row[first : first + 5]))
            for row in rows
        ]


def event_data_of(stream_id: str, row: Any) -> JSONDict:
    """The data of one row selected as in :func:`event_data`.

    :raises CodecError: if the row's data is not JSON (a damaged row), naming it
    """
    try:
        data: JSONDict = orjson.loads(row[2])
    except orjson.JSONDecodeError as exc:
        try:
            data = _inflated(row[4] if row[2] is None else row[2], exc)
        except orjson.JSONDecodeError as inner:
            raise damaged_event((stream_id, row[0], row[3], row[1]), "data", inner) from inner
    return data


def damaged_event(row: Any, what: str, error: Exception) -> CodecError:
    """The error for a stored event whose ``what`` (data or metadata) is not JSON; ``row``
    starts ``stream_id, version, position, type``."""
    stream_id, version, position, type_name = row[0], row[1], row[2], row[3]
    msg = (
        f"event {type_name} at version {version} of stream {stream_id!r} (position {position}) "
        f"cannot be read: its stored {what} is not valid JSON ({error}); the row is damaged, "
        "restore it from a backup"
    )
    return CodecError(
        msg, type_name=type_name, stream_id=stream_id, version=version, position=position
    )


def snapshot_record(
    stream_id: str,
    version: int,
    state: str | bytes,
    schema_version: int,
    recorded_at: datetime | None,
) -> SnapshotRecord | None:
    """The snapshot of a stored row (its state as JSON text), or None if the text is not JSON.

    A snapshot is a cache of what the stream's events give: one that cannot be read (a
    damaged row) is skipped with a warning, and the caller replays the events instead.
    """
    try:
        try:
            value = orjson.loads(state)
        except orjson.JSONDecodeError as exc:
            value = _inflated(state, exc)
    except orjson.JSONDecodeError as exc:
        logger.warning(
            "snapshot of stream %r at version %d cannot be read: its stored state is not valid "
            "JSON (%s); ignoring it, the stream's events are replayed instead",
            stream_id,
            version,
            exc,
            extra={"stream_id": stream_id, "version": version, "error": str(exc)},
        )
        return None
    return SnapshotRecord(stream_id, version, value, schema_version, recorded_at)


def encode_snapshot_state(snapshot: SnapshotRecord) -> str:
    """Return a snapshot's state as JSON text; a state JSON cannot hold raises a CodecError."""
    try:
        text = orjson.dumps(snapshot.state).decode()
    except TypeError as exc:
        msg = f"the snapshot state of {snapshot.stream_id!r} is not JSON-serializable: {exc}"
        raise CodecError(msg) from exc
    if "null" in text and _has_non_finite_float(snapshot.state):
        msg = (
            f"the snapshot state of {snapshot.stream_id!r} holds NaN or an infinity, which JSON "
            "cannot hold (it would be stored as null)"
        )
        raise CodecError(msg)
    return text


def _has_non_finite_float(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite_float(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite_float(v) for v in value)
    return False


def decode_json(text: str | bytes) -> Any:
    """Return the value of JSON text written by :func:`encode_json` (or compressed by
    :func:`compress_json`)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _inflated(text, exc)


def utc_now() -> datetime:
    """Return the current time in UTC (stores stamp commits with it)."""
    return datetime.now(UTC)
