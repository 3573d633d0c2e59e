"""What an actor's mailbox holds: a command to decide, or a request for a copy of the state or
for a snapshot."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from ._records import JSONDict


class Command:
    """A command on its way to an aggregate, with what its events are stored with."""

    __slots__ = ("command", "command_id", "expected_version", "metadata", "reply")

    def __init__(
        self,
        command: object,
        reply: asyncio.Future[Any] | None,
        metadata: JSONDict,
        command_id: str | None,
        expected_version: int | None = None,
    ) -> None:
        #: the command object the aggregate decides
        self.command = command
        #: resolved with the recorded events or the error (``None``: told, nobody waits)
        self.reply = reply
        #: stored with each event the command produces (the three ids included)
        self.metadata = metadata
        #: the id the caller gave (``None``: the runtime made one, and never looks it up)
        self.command_id = command_id
        #: the version the stream must be at when the command is decided (``None``: any);
        #: otherwise the command is refused with ConcurrencyError, never decided
        self.expected_version = expected_version


class GetState:
    """A request for a deep copy of an aggregate's state, once the messages before it ran."""

    __slots__ = ("reply", "wanted")

    def __init__(self, reply: asyncio.Future[Any], wanted: StateWanted = "state") -> None:
        #: resolved with what was wanted, or the reason it could not be made
        self.reply = reply
        #: the copy, the copy and the stream's version as a pair, or the version alone
        self.wanted = wanted


#: what a GetState answers with
StateWanted = Literal["state", "state_and_version", "version"]


class TakeSnapshot:
    """A request to save a snapshot of an aggregate's state, once the messages before it ran."""

    __slots__ = ("reply",)

    def __init__(self, reply: asyncio.Future[int]) -> None:
        #: resolved with the snapshot's version once it is saved, or the reason none was
        self.reply = reply


#: one message in a mailbox
Message = Command | GetState | TakeSnapshot
