"""Refs: handles to aggregate instances, and what they send through (a runtime's mailboxes)."""

from __future__ import annotations

import asyncio
import enum
import time
from typing import Any, Final, Generic, Protocol, TypeVar

import anyio

from ._decider import Decider
from ._errors import AskTimeoutError
from ._messages import Command, GetState, Message, TakeSnapshot
from ._metrics import ASK_DURATION, Metrics
from ._policies import check_seconds
from ._records import JSONDict, RecordedEvent
from ._tracing import command_metadata

S = TypeVar("S")
_T = TypeVar("_T")


class Mailboxes(Protocol):
    """Where a ref's messages go: the runtime's live actors."""

    #: the default limit of ``ask`` (seconds; None: as long as it takes)
    ask_timeout: float | None
    #: where ``ask`` reports its duration (None: nowhere)
    metrics: Metrics | None

    def send(
        self, ref: AggregateRef[Any], message: Message, *, waiting: bool = False
    ) -> asyncio.Future[None] | None: ...

    def send_nowait(self, ref: AggregateRef[Any], message: Message) -> None: ...

    def withdraw(self, stream_id: str, message: Message) -> bool: ...

    def is_live(self, stream_id: str) -> bool: ...

    async def stored_version(self, stream_id: str) -> int: ...


class _Default(enum.Enum):
    DEFAULT = "default"


#: "use the runtime's setting" (a sentinel for per-call options)
DEFAULT: Final = _Default.DEFAULT


class AggregateRef(Generic[S]):
    """A handle to one aggregate instance; cheap to make, no I/O until a message is sent.

    ``S`` is the aggregate's state type (the aggregate class for the class form).
    """

    __slots__ = ("_runtime", "aggregate_id", "decider", "stream_id")

    def __init__(
        self,
        runtime: Mailboxes,
        decider: Decider[Any, Any, S],
        aggregate_id: str,
        stream_id: str,
    ) -> None:
        self._runtime = runtime
        self.decider = decider
        #: the aggregate's id as given to ``runtime.ref``
        self.aggregate_id = aggregate_id
        #: the id of the aggregate's stream in the store (``f"{category}-{aggregate_id}"``)
        self.stream_id = stream_id

    def __repr__(self) -> str:
        return f"<AggregateRef {self.stream_id!r}>"

    async def ask(
        self,
        command: object,
        *,
        metadata: JSONDict | None = None,
        command_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        timeout: float | _Default | None = DEFAULT,  # noqa: ASYNC109  # the asked-for API
        expected_version: int | None = None,
    ) -> list[RecordedEvent[Any]]:
        """Send a command and wait until its events are durable.

        Waits for mailbox room first if the mailbox is full. Each event is stored with
        ``metadata`` and three ids (see the docs, *Metadata and idempotency*):
        ``command_id``, ``correlation_id`` and ``causation_id``.

        A command sent with a ``command_id`` that this aggregate already processed (it stored
        events) is not decided again: ``ask`` returns the original recorded events, also after
        a restart. A command that stored nothing (rejected, or no change) is decided again.

        :param metadata: stored with each event the command produces (JSON-serializable; the
            three id keys are reserved)
        :param command_id: the command's id, to make retries idempotent (default: a new id;
            such commands are never looked up)
        :param correlation_id: the conversation the command belongs to (default: that of the
            event being handled, see :func:`caused_by`; else the command's id)
        :param causation_id: what caused the command (default: the id of the event being
            handled; else the command's id)
        :param timeout: seconds to wait for the outcome (default: the runtime's
            ``ask_timeout``; ``None``: no limit)
        :param expected_version: decide the command only if the stream is at this version
            when its turn comes (after the commands queued before it); otherwise refuse it
            with :class:`ConcurrencyError`, without deciding it or retrying (an HTTP
            ``If-Match``; ``0``: the aggregate must have no events yet)
        :return: the recorded events (empty if the command changed nothing)
        :raises Rejected: as raised by the command handler (nothing was stored)
        :raises UnknownCommandError: if the aggregate has no handler for the command
        :raises ConcurrencyError: if the stream was not at ``expected_version``, or other
            writers kept winning after all retries
        :raises AskTimeoutError: if the outcome did not come in time; ``.processed`` says
            whether the command may still take effect
        :raises RuntimeClosedError: if the runtime is not open
        :raises TypeError: if ``metadata`` is not a dict or an id is not a str
        :raises ValueError: if an id is empty, ``command_id`` holds NUL, ``metadata`` uses a
            reserved key, ``expected_version`` is negative, or ``timeout`` is not a finite
            number of seconds > 0 (or None)
        """
        stored, explicit = command_metadata(metadata, command_id, correlation_id, causation_id)
        if expected_version is not None:
            _check_expected_version(expected_version)
        if timeout is not DEFAULT and timeout is not None:
            check_seconds("timeout", timeout)
        future: asyncio.Future[list[RecordedEvent[Any]]] = (
            asyncio.get_running_loop().create_future()
        )
        message = Command(command, future, stored, explicit, expected_version)
        limit = self._runtime.ask_timeout if isinstance(timeout, _Default) else timeout
        metrics = self._runtime.metrics
        started = time.perf_counter() if metrics is not None else 0.0
        try:
            if limit is None:
                # _deliver inlined: one coroutine fewer alive per waiting ask
                waiting = self._runtime.send(self, message, waiting=True)
                if waiting is not None:
                    await waiting
                elif future.done():
                    # answered in this step (a rejection): still let other tasks run, as an
                    # await on the runtime always does
                    await asyncio.sleep(0)
                return await future
            with anyio.move_on_after(limit):
                return await self._deliver(message, future)
        except asyncio.CancelledError:
            # cancelled: a command still waiting in the mailbox is taken back, never run
            self._runtime.withdraw(self.stream_id, message)
            raise
        finally:
            if metrics is not None:
                labels = {"category": self.decider.name}
                metrics.record(ASK_DURATION, time.perf_counter() - started, labels)
        withdrawn = self._runtime.withdraw(self.stream_id, message)
        raise AskTimeoutError(self.stream_id, type(command).__name__, limit, not withdrawn)

    async def _deliver(self, message: Message, future: asyncio.Future[_T]) -> _T:
        waiting = self._runtime.send(self, message)
        if waiting is not None:
            await waiting
        return await future

    async def tell(
        self,
        command: object,
        *,
        metadata: JSONDict | None = None,
        command_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> None:
        """Send a command without waiting for its outcome (waits only for mailbox room).

        The keyword arguments are those of :meth:`ask`. Failures of told commands are logged
        as warnings by ``actorsource.actor``.

        :raises TypeError: if ``metadata`` is not a dict or an id is not a str
        :raises ValueError: if an id is empty, ``command_id`` holds NUL, or ``metadata`` uses a
            reserved key
        """
        stored, explicit = command_metadata(metadata, command_id, correlation_id, causation_id)
        waiting = self._runtime.send(self, Command(command, None, stored, explicit))
        if waiting is not None:
            await waiting

    def tell_nowait(
        self,
        command: object,
        *,
        metadata: JSONDict | None = None,
        command_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> None:
        """Send a command without waiting at all.

        The keyword arguments are those of :meth:`ask`.

        :raises MailboxFullError: if the mailbox has no room
        :raises TypeError: if ``metadata`` is not a dict or an id is not a str
        :raises ValueError: if an id is empty, ``command_id`` holds NUL, or ``metadata`` uses a
            reserved key
        """
        stored, explicit = command_metadata(metadata, command_id, correlation_id, causation_id)
        self._runtime.send_nowait(self, Command(command, None, stored, explicit))

    async def state(self) -> S:
        """Return a deep copy of the aggregate's state after every message sent before this.

        :raises ActorsourceError: if the state cannot be copied (the actor goes on)
        :raises ActorFailedError: if the aggregate could not be loaded
        """
        future: asyncio.Future[S] = asyncio.get_running_loop().create_future()
        return await self._deliver(GetState(future), future)

    async def snapshot(self) -> int:
        """Save a snapshot of the aggregate's state now, after every message sent before this.

        The snapshot is saved whatever the snapshot policy says, and the policy's ``keep``
        prunes older ones; a :class:`SnapshotInterval` counts its next interval from it. Later
        loads start from it (the latest snapshot); :meth:`EventStore.list_snapshots` lists a
        stream's snapshots.

        :return: the stream version the snapshot holds the state at
        :raises SnapshotError: if the stream has no events (nothing was saved)
        :raises CodecError: if the state cannot be encoded (the actor goes on)
        :raises StoreError: if the store failed to save it
        :raises ActorFailedError: if the aggregate could not be loaded
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        return await self._deliver(TakeSnapshot(future), future)

    async def state_and_version(self) -> tuple[S, int]:
        """Return a deep copy of the aggregate's state and the version of its stream that it
        is at, after every message sent before this (for an HTTP ``ETag``).

        The pair is taken at one moment: pass the version to ``ask(..., expected_version=)`` to
        decide a command only if nothing changed since.

        :raises ActorsourceError: if the state cannot be copied (the actor goes on)
        :raises ActorFailedError: if the aggregate could not be loaded
        """
        future: asyncio.Future[tuple[S, int]] = asyncio.get_running_loop().create_future()
        return await self._deliver(GetState(future, "state_and_version"), future)

    async def exists(self) -> bool:
        """Return whether the aggregate's stream has at least one event.

        A live actor answers from memory, after every message sent before this; otherwise
        the store is asked for the stream's version (the aggregate is not loaded for it).

        :raises ActorFailedError: if a live aggregate could not be loaded
        :raises RuntimeClosedError: if the runtime is not open
        """
        if not self._runtime.is_live(self.stream_id):
            return await self._runtime.stored_version(self.stream_id) > 0
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        return await self._deliver(GetState(future, "version"), future) > 0


def _check_expected_version(expected_version: object) -> None:
    if type(expected_version) is not int:
        msg = (
            "expected_version must be an int (a version of the stream) or None, got "
            f"{type(expected_version).__name__} {expected_version!r}"
        )
        raise TypeError(msg)
    if expected_version < 0:
        msg = f"expected_version must be >= 0 (0: no events yet), got {expected_version}"
        raise ValueError(msg)
