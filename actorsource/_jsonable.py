"""States and events as JSON-ready data, for responses: the form the stores keep them in."""

from __future__ import annotations

from typing import Any

import orjson

from ._codec import Codec, event_type_name
from ._errors import CodecError
from ._records import RecordedEvent

_codec: Codec | None = None


def jsonable(value: object) -> Any:
    """Return ``value`` as JSON-ready data: dicts with str keys, lists, str, int, float, bool
    and None, ready for ``json.dumps`` or any web framework's JSON response.

    The value goes through the codec that stores events and snapshots, so a response shows
    what the store holds: datetimes as ISO 8601 strings, dates likewise, enums as their values,
    UUIDs as strings, sets and tuples as lists, classes (attrs, and what else the codec takes)
    as objects of their fields. A :class:`RecordedEvent` (what ``ask`` returns) becomes an
    object with its stored ``type`` name, its ``data`` and where and when it was recorded; a
    list or tuple of them, a list of those objects.

    :param value: an aggregate state, an event, a :class:`RecordedEvent`, or plain data
    :raises CodecError: if the codec cannot turn the value into JSON data
    """
    if isinstance(value, RecordedEvent):
        return _recorded(value)
    if isinstance(value, list | tuple) and any(isinstance(v, RecordedEvent) for v in value):
        return [jsonable(item) for item in value]
    codec = _shared_codec()
    try:
        data = codec.encode_state(value)["state"]
        # the stores' own JSON encoder finishes the job (datetimes, UUIDs, enums): its output
        # read back is exactly the stored form
        return orjson.loads(orjson.dumps(data))
    except (CodecError, TypeError) as exc:
        cause = exc.__cause__ if isinstance(exc, CodecError) and exc.__cause__ else exc
        msg = (
            f"cannot turn {type(value).__qualname__} into JSON data: "
            f"{type(cause).__name__}: {cause}"
        )
        raise CodecError(msg, type_name=type(value).__name__) from exc


def _recorded(recorded: RecordedEvent[Any]) -> dict[str, Any]:
    return {
        "type": event_type_name(type(recorded.event)),
        "data": jsonable(recorded.event),
        "stream_id": recorded.stream_id,
        "version": recorded.version,
        "position": recorded.position,
        "event_id": recorded.event_id,
        "recorded_at": jsonable(recorded.recorded_at),
        "metadata": jsonable(recorded.metadata),
    }


def _shared_codec() -> Codec:
    # one converter for the process: it builds and caches a hook per class on first use
    global _codec  # noqa: PLW0603  # made on first use, not at import
    if _codec is None:
        _codec = Codec()
    return _codec
