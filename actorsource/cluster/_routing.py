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

Requests other members send here are served by ``_remote.Serving`` (:meth:`RoutedMailboxes.handle`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

import anyio
import attrs

import actorsource.cluster._protocol as wire

from .._codec import Codec
from .._decider import Decider
from .._errors import (
    FencedError,
    NotOwnerError,
    PeerUnavailableError,
    RuntimeClosedError,
)
from .._messages import Command, Message
from .._metrics import Metrics
from .._refs import AggregateRef, Mailboxes
from .._tracing import COMMAND_ID
from ._placement import Placement
from ._remote import Serving, decode_reply, int_payload, request_for
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
        #: the other members' requests, served here
        self._serving = Serving(
            local, placement, codec, deciders, errors=self._errors, not_served=_NOT_SERVED
        )

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
        return int_payload(payload, "exists")

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
            request = request_for(self._codec, ref, message)

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
                reply.set_result(decode_reply(self._codec, ref, message, payload))
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

    # -- serving other members -----------------------------------------------------------------

    async def handle(self, request: wire.Request, member: str) -> wire.Reply:
        """Serve a request another member sent (see :class:`Serving`)."""
        return await self._serving.handle(request, member)


#: what ``here()`` returns when the local actor resolved the message's future itself
_HERE: Final = object()


def _give_command_id(message: Command) -> None:
    """Make a command's id explicit once it may have been sent before (to a member that may
    have stored it), so that its owner recognises it."""
    if message.command_id is None:
        message.command_id = message.metadata[COMMAND_ID]
