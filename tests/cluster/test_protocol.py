"""The wire protocol: frames, messages, proofs, and errors rebuilt across the wire."""

from __future__ import annotations

import struct

import anyio
import pytest

from actorsource import ConcurrencyError, Rejected, StreamDeletedError
from actorsource._errors import ClusterProtocolError, RemoteError
from actorsource.cluster._protocol import (
    Ask,
    Error,
    ErrorRegistry,
    FrameReader,
    GetState,
    NotOwner,
    Ok,
    decode_message,
    encode_frame,
    handshake_proof,
    proof_matches,
    receive_frame,
)

from .support import InsufficientFunds, Overdrawn


async def _frames(data: bytes, max_size: int = 1024) -> list[bytes]:
    """Every frame a peer sending ``data`` (then closing) delivers."""
    send, receive = anyio.create_memory_object_stream[bytes](10)
    async with send:
        await send.send(data)
    frames = []
    async with receive:
        buffered = FrameReader(receive)
        while True:
            try:
                frames.append(await receive_frame(buffered, max_size))
            except anyio.EndOfStream:
                return frames


def test_every_message_round_trips_through_its_frame() -> None:
    messages = [
        Ask(7, "Wallet-a", "Deposit", {"amount": 5}, {"command_id": "c1"}, "c1", 3),
        GetState(8, "Wallet-a", "state_and_version"),
        Ok(7, [{"type": "Deposited", "data": {"amount": 5}}]),
        Error(9, "actorsource.ConcurrencyError", "moved on", {"actual_version": 2}),
        NotOwner(10, 3, 12),
    ]
    for message in messages:
        frame = encode_frame(message)
        (size,) = struct.unpack(">I", frame[:4])
        assert size == len(frame) - 4
        assert decode_message(frame[4:]) == message


async def test_frames_are_read_one_by_one_and_a_clean_close_ends_the_stream() -> None:
    data = encode_frame(NotOwner(1, 2, 3)) + encode_frame(Ok(4, None))
    frames = await _frames(data)
    assert [decode_message(f) for f in frames] == [NotOwner(1, 2, 3), Ok(4, None)]


async def test_a_frame_above_the_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(ClusterProtocolError, match="frame of 1073741824 bytes, above the limit"):
        await _frames(struct.pack(">I", 1 << 30) + b"{}")


async def test_a_truncated_frame_is_refused() -> None:
    frame = encode_frame(Ok(1, "payload"))
    with pytest.raises(ClusterProtocolError, match="in the middle of a frame of"):
        await _frames(frame[:-3])
    with pytest.raises(ClusterProtocolError, match="in the middle of a frame's length"):
        await _frames(frame[:2])


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\xff\x00garbage", "not JSON"),
        (b"[1, 2]", "a list frame; messages are JSON objects"),
        (b'{"t": "launch"}', "unknown type 'launch'"),
        (b'{"id": 1}', "unknown type None"),
        (b'{"t": "ok"}', "malformed Ok message"),
        (b'{"t": "not_owner", "id": 1, "shard": "3", "epoch": 1}', "malformed NotOwner"),
        (b'{"t": "state", "id": 1, "stream_id": "s", "wanted": "secrets"}', "malformed GetState"),
        (b'{"t": "ok", "id": 1, "payload": null, "extra": 1}', "malformed Ok message"),
    ],
)
def test_a_malformed_message_is_refused_naming_what_was_wrong(body: bytes, error: str) -> None:
    with pytest.raises(ClusterProtocolError, match=error):
        decode_message(body)


def test_a_payload_that_is_not_json_cannot_be_sent() -> None:
    with pytest.raises(ClusterProtocolError, match="payload is not JSON"):
        encode_frame(Ok(1, object()))


def test_proofs_depend_on_the_secret_the_role_the_cluster_and_both_nonces() -> None:
    base = handshake_proof(b"secret", "client", "c", "n1", "n2")
    assert proof_matches(base, handshake_proof(b"secret", "client", "c", "n1", "n2"))
    for other in [
        handshake_proof(b"other", "client", "c", "n1", "n2"),
        handshake_proof(b"secret", "server", "c", "n1", "n2"),
        handshake_proof(b"secret", "client", "d", "n1", "n2"),
        handshake_proof(b"secret", "client", "c", "n3", "n2"),
        handshake_proof(b"secret", "client", "c", "n1", "n3"),
    ]:
        assert not proof_matches(base, other)


def test_errors_are_rebuilt_as_their_class_where_known() -> None:
    registry = ErrorRegistry([InsufficientFunds])
    conflict = ConcurrencyError("Wallet-a", 1, 2, retries=3)
    rebuilt = registry.rebuild(registry.describe(1, conflict))
    assert type(rebuilt) is ConcurrencyError
    assert (rebuilt.stream_id, rebuilt.expected_version, rebuilt.actual_version) == (
        "Wallet-a",
        1,
        2,
    )
    assert str(rebuilt) == str(conflict)
    deleted = registry.rebuild(registry.describe(1, StreamDeletedError("s", hard=True, version=4)))
    assert isinstance(deleted, StreamDeletedError) and deleted.hard is True
    funds = registry.rebuild(registry.describe(2, InsufficientFunds(1, 5)))
    assert isinstance(funds, InsufficientFunds) and (funds.balance, funds.asked) == (1, 5)
    key = registry.rebuild(registry.describe(3, KeyError("k")))
    assert type(key) is KeyError


def test_unknown_errors_become_remote_errors_and_unknown_refusals_plain_rejected() -> None:
    registry = ErrorRegistry()
    refusal = registry.rebuild(registry.describe(1, Overdrawn("too much")))
    assert type(refusal) is Rejected and str(refusal) == "too much"
    other = registry.rebuild(registry.describe(2, OSError("disk on fire")))
    assert isinstance(other, RemoteError)
    assert other.type_name == "builtins.OSError" and "disk on fire" in str(other)


def test_only_exception_classes_can_be_registered() -> None:
    with pytest.raises(TypeError, match="only Exception subclasses"):
        ErrorRegistry([int])  # type: ignore[list-item]
