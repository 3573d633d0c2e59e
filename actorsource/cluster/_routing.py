"""Routing: refs of a clustered runtime send to the owner of their aggregate's shard.

:class:`RoutedMailboxes` is what refs send through in a cluster. A message for a shard this
member owns (and is not handing off) goes to the local dispatcher, unchanged. Any other goes to
its owner over the transport, from a task that resolves the message's future with the decoded
reply. A command always travels with a ``command_id`` (the caller's, or the one made for it):
when the owner says it is not the owner, the connection breaks, or no member owns the shard
yet, the message is retried on the owner placement names next, and the owner's idempotency
answers a command it already stored with its recorded events instead of applying it twice.
The first attempt of a command whose id was made here skips that lookup (no member can have
stored it yet); its retries ask for it. A member drops the requests of a connection that
broke if their commands are still in a mailbox, so a first attempt never lingers behind its
own retry.

The same class serves the requests other members send here (:meth:`RoutedMailboxes.handle`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, Final

import anyio
import attrs

from .._codec import Codec
from .._decider import Decider
from .._errors import (
    ClusterProtocolError,
    FencedError,
    NotOwnerError,
    PeerUnavailableError,
    RuntimeClosedError,
    UnknownCommandError,
)
from .._messages import Command, GetState, Message, TakeSnapshot
from .._metrics import Metrics
from .._records import JSONDict, RecordedEvent
from .._refs import AggregateRef, Mailboxes
from .._tracing import COMMAND_ID
from . import _protocol as wire
from ._placement import Placement
from ._transport import Peers

logger = logging.getLogger("actorsource.cluster.routing")

#: errors raised by the owner that mean "not here": retried on the next owner (the command was
#: not stored; a fenced-off append stored nothing either)
_ELSEWHERE: tuple[type[BaseException], ...] = (NotOwnerError, PeerUnavailableError, FencedError)
#: what an owner answers as "not here" too: it is closing (the message was not processed)
_NOT_SERVED: tuple[type[BaseException], ...] = (*_ELSEWHERE, RuntimeClosedError)
_FIRST_BACKOFF: Final = 0.005
_MAX_BACKOFF: Final = 0.5


class _Routed:
    """A message on its way to another member."""

    __slots__ = ("local", "sent", "task", "waiter")

    def __init__(self, waiter: asyncio.Future[Any] | None) -> None:
        self.task: asyncio.Task[None] | None = None
        #: what the sender awaits (None: tell_nowait, nobody)
        self.waiter = waiter
        #: whether a member may have received it (its outcome is then unknown until replied)
        self.sent = False
        #: whether it ended up in this member's own mailbox (ownership came here)
        self.local = False


class RoutedMailboxes:
    """The :class:`~actorsource._refs.Mailboxes` of a clustered runtime (see the module
    docstring).

    :param local: the runtime's own dispatcher
    :param placement: who owns each shard
    :param peers: the client side of the transport
    :param codec: the runtime's codec (commands, events, states on the wire)
    :param deciders: the Decider of a stream category used here (None: none is)
    :param errors: the error classes rebuilt as themselves when an owner raises them
    :param route_timeout: how long a message may look for its owner (retries included) before
        it fails with :class:`PeerUnavailableError`; an ask's own timeout applies too
    :param attempt_timeout: how long one attempt waits for the owner's reply before it is
        retried (with the same command id) on whoever owns the shard then: an owner that
        paused does not hold its callers up beyond this (None: no limit)
    """

    def __init__(
        self,
        local: Mailboxes,
        placement: Placement,
        peers: Peers,
        codec: Codec,
        deciders: Callable[[str], Decider[Any, Any, Any] | None],
        *,
        errors: wire.ErrorRegistry | None = None,
        route_timeout: float = 30.0,
        attempt_timeout: float | None = None,
    ) -> None:
        self._local = local
        self._placement = placement
        self._peers = peers
        self._codec = codec
        self._deciders = deciders
        self._errors = errors if errors is not None else wire.ErrorRegistry()
        self._route_timeout = route_timeout
        self._attempt_timeout = attempt_timeout
        self._routing: dict[Message, _Routed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def ask_timeout(self) -> float | None:
        """The default limit of ``ask`` (the local dispatcher's)."""
        return self._local.ask_timeout

    @ask_timeout.setter
    def ask_timeout(self, value: float | None) -> None:
        self._local.ask_timeout = value

    @property
    def metrics(self) -> Metrics | None:
        """Where ``ask`` reports its duration (the local dispatcher's)."""
        return self._local.metrics

    @metrics.setter
    def metrics(self, value: Metrics | None) -> None:
        self._local.metrics = value

    def close(self) -> None:
        """Fail the messages still on their way to another member with RuntimeClosedError,
        and refuse new ones (the runtime is closing)."""
        self._closed = True
        for message, routed in list(self._routing.items()):
            waiter = routed.waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(RuntimeClosedError(self._closed_message(message)))
        for task in list(self._tasks):
            task.cancel()

    def _closed_message(self, message: Message) -> str:
        kind = type(message.command).__name__ if isinstance(message, Command) else "a request"
        return (
            f"{kind} was on its way to another member of the cluster when this runtime "
            "closed; its outcome is unknown (a retry with the same command id is applied once)"
        )

    # -- the Mailboxes protocol ----------------------------------------------------------------

    def send(
        self, ref: AggregateRef[Any], message: Message, *, waiting: bool = False
    ) -> asyncio.Future[None] | None:
        placement = self._placement
        shard = placement.shard_of(ref.stream_id)
        if placement.accepting(shard):
            if isinstance(message, Command) and message.reply is not None:
                self._relay_reply(ref, message, shard)
            return self._local.send(ref, message, waiting=waiting)
        if self._closed:
            raise RuntimeClosedError(self._closed_message(message))
        if isinstance(message, Command) and message.reply is None:
            # told: the teller waits until the owner has it in its mailbox
            accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._start(message, self._tell(ref, message, shard, accepted), accepted)
            return accepted
        self._start(message, self._deliver(ref, message, shard), message.reply)
        return None

    def send_nowait(self, ref: AggregateRef[Any], message: Message) -> None:
        placement = self._placement
        shard = placement.shard_of(ref.stream_id)
        if placement.accepting(shard):
            self._local.send_nowait(ref, message)
            return
        assert isinstance(message, Command)  # only tell_nowait sends without waiting
        if self._closed:
            raise RuntimeClosedError(self._closed_message(message))
        self._start(message, self._tell(ref, message, shard, None), None)

    def withdraw(self, stream_id: str, message: Message) -> bool:
        routed = self._routing.pop(message, None)
        if routed is None or routed.local:
            return self._local.withdraw(stream_id, message)
        if routed.task is not None:
            routed.task.cancel()
        return not routed.sent

    def is_live(self, stream_id: str) -> bool:
        placement = self._placement
        if placement.accepting(placement.shard_of(stream_id)):
            return self._local.is_live(stream_id)
        return False  # exists() then asks the owner through stored_version

    async def stored_version(self, stream_id: str) -> int:
        placement = self._placement
        shard = placement.shard_of(stream_id)
        if placement.accepting(shard):
            return await self._local.stored_version(stream_id)
        request = wire.Exists(0, stream_id)

        async def here() -> Any:
            return await self._local.stored_version(stream_id)

        payload = await self._exchange(shard, request, here, None)
        return _int_payload(payload, "exists")

    def _relay_reply(self, ref: AggregateRef[Any], message: Command, shard: int) -> None:
        """Let the local actor answer through a future of our own: if it refuses the command
        as not here (this member lost the shard, and the append was fenced), the command was
        not stored, and it is routed to the next owner instead of failing its caller."""
        caller = message.reply
        assert caller is not None
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        message.reply = answer

        def relay(done: asyncio.Future[Any]) -> None:
            if caller.done():
                return  # the caller stopped waiting
            if done.cancelled():
                caller.cancel()
                return
            error = done.exception()
            if error is None:
                caller.set_result(done.result())
            elif isinstance(error, _ELSEWHERE):
                logger.debug("routing %r elsewhere: %s", ref.stream_id, error)
                message.reply = caller
                _give_command_id(message)
                self._placement.invalidate(shard)
                self._start(message, self._deliver(ref, message, shard), caller)
            else:
                caller.set_exception(error)

        answer.add_done_callback(relay)

    # -- sending to the owner ------------------------------------------------------------------

    def _start(
        self,
        message: Message,
        work: Coroutine[Any, Any, None],
        waiter: asyncio.Future[Any] | None,
    ) -> None:
        routed = _Routed(waiter)
        self._routing[message] = routed
        task = asyncio.get_running_loop().create_task(work)
        routed.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, ref: AggregateRef[Any], message: Message, shard: int) -> None:
        """Route an ask, a state request or a snapshot; resolve its future."""
        reply = message.reply
        assert reply is not None
        routed = self._routing.get(message)
        try:
            request = self._request(ref, message)

            async def here() -> Any:
                # ownership came here: the local actor resolves the future itself
                if routed is not None:
                    routed.local = True
                if isinstance(message, Command):
                    _give_command_id(message)
                waiting = self._local.send(ref, message, waiting=True)
                if waiting is not None:
                    await waiting
                return _HERE

            payload = await self._exchange(shard, request, here, routed)
            if payload is not _HERE and not reply.done():
                reply.set_result(self._decode(ref, message, payload))
        except Exception as exc:
            if not reply.done():
                reply.set_exception(exc)
        finally:
            self._routing.pop(message, None)

    async def _tell(
        self,
        ref: AggregateRef[Any],
        message: Command,
        shard: int,
        accepted: asyncio.Future[None] | None,
    ) -> None:
        """Route a told command; resolve ``accepted`` once the owner has it in its mailbox
        (``None``: ``tell_nowait``, failures are logged)."""
        routed = self._routing.get(message)
        if accepted is not None:
            task = asyncio.current_task()
            # the teller stopped waiting: stop looking for the owner too
            accepted.add_done_callback(lambda f: task.cancel() if f.cancelled() and task else None)
        try:
            command_type, data = self._codec.encode_command(
                message.command, purpose="another member"
            )
            request = wire.Tell(
                0,
                ref.stream_id,
                command_type,
                data,
                message.metadata,
                message.metadata[COMMAND_ID],
                accepted is not None,
                message.command_id is not None,
            )

            async def here() -> Any:
                if routed is not None:
                    routed.local = True
                _give_command_id(message)
                if accepted is None:
                    self._local.send_nowait(ref, message)
                else:
                    waiting = self._local.send(ref, message)
                    if waiting is not None:
                        await waiting
                return None

            await self._exchange(shard, request, here, routed)
        except Exception as exc:
            if accepted is None:
                logger.warning(
                    "a told %s to %r failed: %s",
                    type(message.command).__name__,
                    ref.stream_id,
                    exc,
                    extra={"stream_id": ref.stream_id},
                )
            elif not accepted.done():
                accepted.set_exception(exc)
        else:
            if accepted is not None and not accepted.done():
                accepted.set_result(None)
        finally:
            self._routing.pop(message, None)

    async def _exchange(
        self,
        shard: int,
        request: wire.Request,
        here: Callable[[], Awaitable[Any]],
        routed: _Routed | None,
    ) -> Any:
        """Send ``request`` to the shard's owner until one answers it (``here()`` if this member
        becomes the owner); return the reply's payload.

        :raises PeerUnavailableError: if no owner answered within the route timeout
        """
        placement = self._placement
        me = placement.member_id
        deadline = time.monotonic() + self._route_timeout
        backoff = _FIRST_BACKOFF
        sent = False
        while True:
            if self._closed:
                raise RuntimeClosedError(
                    f"{type(request).__name__} to {request.stream_id!r}: the runtime closed"
                )
            owner = placement.owner(shard)
            if owner is None or (owner.member_id == me and not placement.accepting(shard)):
                remaining = deadline - time.monotonic()
                try:
                    owner = await placement.wait_for_owner(shard, max(remaining, 0.0))
                except TimeoutError as exc:
                    msg = (
                        f"no member took shard {shard} (of {request.stream_id!r}) within the "
                        f"route timeout of {self._route_timeout} s; check that the cluster has "
                        "live members"
                    )
                    raise PeerUnavailableError(msg, sent=sent) from exc
            if owner.member_id == me and placement.accepting(shard):
                return await here()
            failure: BaseException
            if owner.member_id == me:
                failure = NotOwnerError(shard, owner.epoch, me)
            else:
                try:
                    reply = await self._peers.request(
                        owner.address, request, timeout=self._attempt_timeout
                    )
                except PeerUnavailableError as exc:
                    failure = exc
                    sent = sent or exc.sent
                    if self._peers.closed:
                        msg = (
                            f"{type(request).__name__} to {request.stream_id!r}: the cluster "
                            "transport closed (the runtime is closing)"
                        )
                        raise RuntimeClosedError(msg) from exc
                except TimeoutError as exc:
                    sent = True
                    msg = (
                        f"member {owner.member_id!r} at {owner.address} did not answer within "
                        f"{self._attempt_timeout} s"
                    )
                    failure = PeerUnavailableError(msg, address=owner.address, sent=True)
                    failure.__cause__ = exc
                else:
                    sent = True
                    if isinstance(reply, wire.Ok):
                        return reply.payload
                    if isinstance(reply, wire.NotOwner):
                        failure = NotOwnerError(reply.shard, reply.epoch, owner.member_id)
                    else:
                        error = self._errors.rebuild(reply)
                        if not isinstance(error, _ELSEWHERE):
                            raise error
                        failure = error
            if routed is not None:
                routed.sent = sent
            if isinstance(request, wire.Ask | wire.Tell) and not request.check_id:
                # it may have been stored: from now on the owner looks its id up
                request = attrs.evolve(request, check_id=True)
            placement.invalidate(shard)
            if time.monotonic() + backoff > deadline:
                msg = (
                    f"{type(request).__name__} to {request.stream_id!r} found no owner that "
                    f"answered within the route timeout of {self._route_timeout} s; last: "
                    f"{failure}"
                )
                raise PeerUnavailableError(msg, address=owner.address, sent=sent) from failure
            logger.debug(
                "retrying %s to %r: %s",
                type(request).__name__,
                request.stream_id,
                failure,
                extra={"shard": shard},
            )
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _request(self, ref: AggregateRef[Any], message: Message) -> wire.Request:
        stream_id = ref.stream_id
        if isinstance(message, Command):
            command_type, data = self._codec.encode_command(
                message.command, purpose="another member"
            )
            return wire.Ask(
                0,
                stream_id,
                command_type,
                data,
                message.metadata,
                message.metadata[COMMAND_ID],
                message.expected_version,
                message.command_id is not None,
            )
        if isinstance(message, GetState):
            return wire.GetState(0, stream_id, message.wanted)
        return wire.Snapshot(0, stream_id)

    def _decode(self, ref: AggregateRef[Any], message: Message, payload: Any) -> Any:
        try:
            if isinstance(message, Command):
                return [self._recorded(item) for item in payload]
            if isinstance(message, TakeSnapshot):
                return _int_payload(payload, "snapshot")
            if message.wanted == "version":
                return _int_payload(payload, "state")
            state = self._state(ref.decider, payload)
            if message.wanted == "state_and_version":
                return state, _int_payload(payload["version"], "state")
            return state
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"the owner of {ref.stream_id!r} sent a malformed reply: {exc!r}"
            raise ClusterProtocolError(msg) from exc

    def _recorded(self, item: JSONDict) -> RecordedEvent[Any]:
        event = self._codec.decode_event(item["type"], item["data"])
        return RecordedEvent(
            event,
            item["stream_id"],
            item["version"],
            item["position"],
            item["event_id"],
            datetime.fromisoformat(item["recorded_at"]),
            item["metadata"],
        )

    def _state(self, decider: Decider[Any, Any, Any], data: JSONDict) -> Any:
        version = decider.snapshot_version
        return self._codec.decode_state(
            data, decider.state_type, from_version=version, to_version=version
        )

    # -- serving other members -----------------------------------------------------------------

    async def handle(self, request: wire.Request, member: str) -> wire.Reply:
        """Serve a request another member sent: refuse it if this member does not own its
        shard now, else run it through the local dispatcher; errors are replied, not raised."""
        placement = self._placement
        shard = placement.shard_of(request.stream_id)
        if not placement.accepting(shard):
            owner = placement.owner(shard)
            return wire.NotOwner(request.id, shard, owner.epoch if owner is not None else 0)
        try:
            payload = await self._serve(request)
        except Exception as exc:
            if isinstance(exc, _NOT_SERVED):
                owner = placement.owner(shard)
                return wire.NotOwner(request.id, shard, owner.epoch if owner is not None else 0)
            return self._errors.describe(request.id, exc)
        return wire.Ok(request.id, payload)

    async def _serve(self, request: wire.Request) -> Any:
        local = self._local
        stream_id = request.stream_id
        if isinstance(request, wire.Exists) and not local.is_live(stream_id):
            return await local.stored_version(stream_id)
        ref = self._ref(stream_id)
        loop = asyncio.get_running_loop()
        message: Message
        if isinstance(request, wire.Ask | wire.Tell):
            command = self._command(ref.decider, request.command_type, request.command)
            if isinstance(request, wire.Tell):
                told = Command(command, None, request.metadata, _checked(request))
                if not request.wait:
                    local.send_nowait(ref, told)
                    return None
                waiting = local.send(ref, told)
                if waiting is not None:
                    await waiting
                return None
            message = Command(
                command,
                loop.create_future(),
                request.metadata,
                _checked(request),
                request.expected_version,
            )
        elif isinstance(request, wire.Snapshot):
            message = TakeSnapshot(loop.create_future())
        elif isinstance(request, wire.Exists):
            message = GetState(loop.create_future(), "version")
        else:
            message = GetState(loop.create_future(), request.wanted)  # type: ignore[arg-type]
        reply = message.reply
        assert reply is not None
        try:
            waiting = local.send(ref, message, waiting=True)
            if waiting is not None:
                await waiting
            result: Any = await reply
        except asyncio.CancelledError:
            # the caller gave up: a message still in the mailbox is taken back, never run
            local.withdraw(stream_id, message)
            raise
        if isinstance(message, Command):
            return [self._encode_recorded(recorded) for recorded in result]
        if isinstance(message, GetState) and message.wanted == "state":
            return self._codec.encode_state(result)
        if isinstance(message, GetState) and message.wanted == "state_and_version":
            state, version = result
            return {**self._codec.encode_state(state), "version": version}
        return result

    def _ref(self, stream_id: str) -> AggregateRef[Any]:
        category, _, aggregate_id = stream_id.partition("-")
        decider = self._deciders(category)
        if decider is None:
            msg = (
                f"this member uses no aggregate of stream category {category!r} (for "
                f"{stream_id!r}); every member of a cluster must run the same aggregates"
            )
            raise LookupError(msg)
        return AggregateRef(self._local, decider, aggregate_id, stream_id)

    def _command(self, decider: Decider[Any, Any, Any], type_name: str, data: JSONDict) -> object:
        for kind in decider.command_types:
            if kind.__name__ == type_name:
                return self._codec.decode_command(kind, data, purpose="another member")
        known = sorted(kind.__name__ for kind in decider.command_types)
        raise UnknownCommandError(decider.name, type_name, known)

    def _encode_recorded(self, recorded: RecordedEvent[Any]) -> JSONDict:
        type_name, data = self._codec.encode_event(recorded.event)
        return {
            "type": type_name,
            "data": data,
            "stream_id": recorded.stream_id,
            "version": recorded.version,
            "position": recorded.position,
            "event_id": recorded.event_id,
            "recorded_at": recorded.recorded_at.isoformat(),
            "metadata": recorded.metadata,
        }


#: what ``here()`` returns when the local actor resolved the message's future itself
_HERE: Final = object()


def _give_command_id(message: Command) -> None:
    """Make a command's id explicit once it may have been sent before (to a member that may
    have stored it), so that its owner recognises it."""
    if message.command_id is None:
        message.command_id = message.metadata[COMMAND_ID]


def _checked(request: wire.Ask | wire.Tell) -> str | None:
    """The id the owner checks the command against (None: a first attempt with a made id,
    which no member can have stored)."""
    return request.command_id if request.check_id else None


def _int_payload(payload: Any, what: str) -> int:
    if type(payload) is not int:
        msg = f"the owner sent a malformed {what} reply: {payload!r} is not a version"
        raise ClusterProtocolError(msg)
    return payload
