"""The idempotency window: what an actor's last few commands with an explicit id recorded.

A command sent again with the same ``command_id`` (a retry after a lost reply) is answered from
the window, without deciding it again or reading the store. The window is bounded: the oldest
entry leaves when a new one comes in. A command not in it is looked up in the store by the actor
(the window starts empty after passivation or a restart, and another runtime may have run it).
"""

from __future__ import annotations

from typing import Any

from ._records import RecordedEvent


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
