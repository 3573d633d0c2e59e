"""The idempotency window: what an actor's last few commands with an explicit id recorded.

A command sent again with the same ``command_id`` (a retry after a lost reply) is answered from
the window, without deciding it again or reading the store. The window is bounded: the oldest
entry leaves when a new one comes in. A command not in it is looked up in the store by the actor
(the window starts empty after passivation or a restart, and another runtime may have run it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from ._batch import Known
from ._codec import Codec
from ._errors import CodecError, StoreError
from ._messages import Command
from ._records import RecordedEvent, StoredEvent
from ._tracing import COMMAND_ID

logger = logging.getLogger("actorsource.actor")

#: the events of a stream that commands with the given ids produced, in version order
FindCommandEvents = Callable[[str, Collection[str]], Coroutine[Any, Any, list[StoredEvent]]]


class IdempotencyWindow:
    """Command id -> the events it recorded, for the last ``size`` such commands."""

    __slots__ = ("_recorded", "size")

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            msg = f"an idempotency window holds an int >= 1 of commands, got {size!r}"
            raise ValueError(msg)
        #: how many commands it remembers at most
        self.size = size
        self._recorded: dict[str, list[RecordedEvent[Any]]] = {}

    def __len__(self) -> int:
        return len(self._recorded)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._recorded

    def get(self, command_id: str) -> list[RecordedEvent[Any]] | None:
        """The events the command recorded, or None if it is not remembered."""
        return self._recorded.get(command_id)

    def remember(self, command_id: str, recorded: list[RecordedEvent[Any]]) -> None:
        """Keep a command's events, forgetting the oldest command if the window is full."""
        entries = self._recorded
        entries[command_id] = recorded
        if len(entries) > self.size:
            del entries[next(iter(entries))]


def unknown_ids(batch: list[Command], recent: IdempotencyWindow | None) -> bool:
    """Whether a command of the batch has an explicit id that the window does not hold."""
    for message in batch:
        command_id = message.command_id
        if command_id is not None and (recent is None or command_id not in recent):
            return True
    return False


async def look_up(
    find: FindCommandEvents,
    codec: Codec,
    stream_id: str,
    batch: list[Command],
    *,
    recent: IdempotencyWindow | None,
    remember: Callable[[str, list[RecordedEvent[Any]]], None],
) -> Known:
    """Find in the store what the batch's explicit command ids not in the window recorded.

    Returns command id -> its recorded events (each also remembered), or the error to reply
    with (the lookup failed, or its events no longer decode). Ids not found are not in the
    result: those commands are decided.
    """
    wanted: set[str] = {
        m.command_id
        for m in batch
        if m.command_id is not None and (recent is None or m.command_id not in recent)
    }
    known: Known = {}
    try:
        found = await find(stream_id, wanted)
    except Exception as exc:
        logger.warning(
            "command lookup failed",
            extra={"stream_id": stream_id, "error": f"{type(exc).__name__}: {exc}"},
        )
        for command_id in wanted:
            error = StoreError(
                f"looking up command {command_id!r} in {stream_id!r} failed: {exc}; "
                "it was not processed now, retry it"
            )
            error.__cause__ = exc
            known[command_id] = error
        return known
    by_command: dict[str, list[StoredEvent]] = {}
    for stored in found:
        owner = stored.metadata.get(COMMAND_ID)
        if owner in wanted:
            by_command.setdefault(owner, []).append(stored)
    decode = codec.decode_event
    for command_id, stored_events in by_command.items():
        try:
            recorded = [
                RecordedEvent.of(
                    decode(s.type, s.data, where=f" (stream {stream_id!r}, version {s.version})"),
                    s,
                )
                for s in stored_events
            ]
        except CodecError as exc:
            known[command_id] = exc
            continue
        known[command_id] = recorded
        remember(command_id, recorded)
    return known
