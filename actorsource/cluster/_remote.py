"""Messages between members: the request that carries a mailbox message to its owner, the
decoding of the owner's reply, and the owner's side (:class:`Serving`), which runs other
members' requests through its local dispatcher."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import actorsource.cluster._protocol as wire

from .._codec import Codec
from .._decider import Decider
from .._errors import ClusterProtocolError, UnknownCommandError
from .._messages import Command, GetState, Message, TakeSnapshot
from .._records import JSONDict, RecordedEvent
from .._refs import AggregateRef, Mailboxes
from .._tracing import COMMAND_ID
from ._placement import Placement


def request_for(codec: Codec, ref: AggregateRef[Any], message: Message) -> wire.Request:
    """The request that carries a mailbox message to the owner."""
    stream_id = ref.stream_id
    if isinstance(message, Command):
        command_type, data = codec.encode_command(message.command, purpose="another member")
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


def decode_reply(codec: Codec, ref: AggregateRef[Any], message: Message, payload: Any) -> Any:
    """What the message's future gets from the owner's reply payload."""
    try:
        if isinstance(message, Command):
            return [_recorded(codec, item) for item in payload]
        if isinstance(message, TakeSnapshot):
            return int_payload(payload, "snapshot")
        if message.wanted == "version":
            return int_payload(payload, "state")
        state = _state(codec, ref.decider, payload)
        if message.wanted == "state_and_version":
            return state, int_payload(payload["version"], "state")
        return state
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"the owner of {ref.stream_id!r} sent a malformed reply: {exc!r}"
        raise ClusterProtocolError(msg) from exc


def _recorded(codec: Codec, item: JSONDict) -> RecordedEvent[Any]:
    event = codec.decode_event(item["type"], item["data"])
    return RecordedEvent(
        event,
        item["stream_id"],
        item["version"],
        item["position"],
        item["event_id"],
        datetime.fromisoformat(item["recorded_at"]),
        item["metadata"],
    )


def _state(codec: Codec, decider: Decider[Any, Any, Any], data: JSONDict) -> Any:
    version = decider.snapshot_version
    return codec.decode_state(data, decider.state_type, from_version=version, to_version=version)


class Serving:
    """The owner's side: other members' requests, served through the local dispatcher."""

    def __init__(
        self,
        local: Mailboxes,
        placement: Placement,
        codec: Codec,
        deciders: Callable[[str], Decider[Any, Any, Any] | None],
        *,
        errors: wire.ErrorRegistry,
        not_served: tuple[type[BaseException], ...],
    ) -> None:
        """
        :param not_served: errors of the local dispatcher that mean "not here": answered as
            :class:`NotOwner`, so that the sender retries on the next owner
        """
        self._local = local
        self._placement = placement
        self._codec = codec
        self._deciders = deciders
        self._errors = errors
        self._not_served = not_served

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
            if isinstance(exc, self._not_served):
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


def _checked(request: wire.Ask | wire.Tell) -> str | None:
    """The id the owner checks the command against (None: a first attempt with a made id,
    which no member can have stored)."""
    return request.command_id if request.check_id else None


def int_payload(payload: Any, what: str) -> int:
    if type(payload) is not int:
        msg = f"the owner sent a malformed {what} reply: {payload!r} is not a version"
        raise ClusterProtocolError(msg)
    return payload
