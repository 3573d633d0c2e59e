"""Tracing metadata: command ids, correlation and causation, and the context that carries them.

Every event the runtime stores carries three ids in its metadata, next to the caller's own keys:

- ``command_id``: the id of the command that produced it (given to ``ask``, or a new one);
- ``correlation_id``: the conversation it belongs to. A command sent from outside any handler
  starts one (it correlates with itself); a command sent while an event is handled joins that
  event's conversation;
- ``causation_id``: the message that caused it: the event being handled, or else the command.

"While an event is handled" is a context variable: projection handlers run inside it, and
:func:`caused_by` sets it around a user's own handler code. A context variable, because it
follows the code that handles the event through ``await`` and into the tasks it starts, and no
further.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Final

from ._ids import new_event_id
from ._records import JSONDict, RecordedEvent, StoredEvent

COMMAND_ID: Final = "command_id"
CORRELATION_ID: Final = "correlation_id"
CAUSATION_ID: Final = "causation_id"
#: metadata keys the runtime writes; callers pass them as keyword arguments instead
RESERVED_KEYS: Final = (CORRELATION_ID, CAUSATION_ID, COMMAND_ID)

#: (correlation id, causation id) of the event being handled in this context, if any
current_cause: ContextVar[tuple[str, str] | None] = ContextVar(
    "actorsource_current_cause", default=None
)


def cause_of(event_id: str, metadata: JSONDict) -> tuple[str, str]:
    """Return the (correlation id, causation id) that commands caused by an event carry.

    An event stored without a correlation id (before this metadata existed, or appended through
    the raw store API) starts a conversation of its own: its id.
    """
    correlation = metadata.get(CORRELATION_ID)
    if not isinstance(correlation, str) or not correlation:
        correlation = event_id
    return correlation, event_id


@contextlib.contextmanager
def caused_by(record: RecordedEvent[Any] | StoredEvent) -> Iterator[None]:
    """Send the commands of a block as caused by ``record`` (an event being handled).

    Inside the block, a command sent without ``correlation_id=`` joins the event's conversation
    (its ``correlation_id``), and one without ``causation_id=`` names the event's id as its
    cause. Projection handlers need no such block: the runtime runs them inside one. Use it in
    your own event handlers, for example when you read ``store.read_all()`` yourself::

        with actorsource.caused_by(record):
            await runtime.ref(Shipping, order_id).ask(Ship(order_id))

    Blocks nest (the innermost wins) and hold across ``await``; tasks started inside the block
    inherit it, as they inherit every context variable.

    :param record: a :class:`RecordedEvent` (what ``ask`` returns, and
        ``ProjectionContext.record``) or a :class:`StoredEvent` (what the store's reads yield)
    :raises TypeError: if ``record`` is neither
    """
    if not isinstance(record, RecordedEvent | StoredEvent):
        msg = (
            "caused_by() takes the RecordedEvent or StoredEvent being handled, "
            f"got {type(record).__name__}"
        )
        raise TypeError(msg)
    token = current_cause.set(cause_of(record.event_id, record.metadata))
    try:
        yield
    finally:
        current_cause.reset(token)


def command_metadata(
    metadata: JSONDict | None,
    command_id: str | None,
    correlation_id: str | None,
    causation_id: str | None,
) -> tuple[JSONDict, str | None]:
    """Return the metadata a command's events are stored with, and its explicit command id.

    The explicit id is ``command_id`` as given (``None`` when the runtime made one): only
    commands with one are checked for having been processed before.

    :raises TypeError: if ``metadata`` is not a dict, or an id is not a str
    :raises ValueError: if an id is empty or not valid Unicode, ``command_id`` holds NUL, or
        ``metadata`` uses a reserved key
    """
    if command_id is None:
        command_id = new_event_id()
        explicit = None
    else:
        explicit = command_id = _checked_id("command_id", command_id)
        if "\x00" in command_id:
            # a retry must find the command stored; no store can look such an id up exactly
            msg = (
                "command_id must not hold NUL characters (stores cannot look such an id up, "
                f"so a retry could apply the command twice), got {command_id!r}"
            )
            raise ValueError(msg)
    if correlation_id is None or causation_id is None:
        cause = current_cause.get()
        if correlation_id is None:
            correlation_id = command_id if cause is None else cause[0]
        if causation_id is None:
            causation_id = command_id if cause is None else cause[1]
    # after the defaults: only given ids need checking (the defaults are checked already)
    if correlation_id is not command_id:
        _checked_id("correlation_id", correlation_id)
    if causation_id is not command_id:
        _checked_id("causation_id", causation_id)
    stored = {
        CORRELATION_ID: correlation_id,
        CAUSATION_ID: causation_id,
        COMMAND_ID: command_id,
    }
    if metadata is None:
        return stored, explicit
    if not isinstance(metadata, dict):
        msg = f"metadata must be a dict, got {type(metadata).__name__}"
        raise TypeError(msg)
    if CORRELATION_ID in metadata or CAUSATION_ID in metadata or COMMAND_ID in metadata:
        key = next(k for k in RESERVED_KEYS if k in metadata)
        msg = (
            f"metadata key {key!r} is reserved: the runtime stores it with every event; "
            f"pass it as the keyword argument instead ({key}=...)"
        )
        raise ValueError(msg)
    stored.update(metadata)
    return stored, explicit


def _checked_id(name: str, value: object) -> str:
    if not isinstance(value, str):
        msg = f"{name} must be a str, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    if not value:
        msg = f"{name} must be a non-empty str, got ''"
        raise ValueError(msg)
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            msg = f"{name} must be valid Unicode (no lone surrogates), got {value!r}"
            raise ValueError(msg) from None
    return value
