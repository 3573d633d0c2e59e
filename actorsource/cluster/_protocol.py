"""The wire protocol between cluster members: frames, the handshake and the messages.

A frame is a 4-byte big-endian length followed by that many bytes of JSON (orjson), one JSON
object per frame with its message type under ``"t"``. Frames above the connection's maximum are
refused before they are read, so a peer cannot make a member buffer more than that.

A connection opens with a handshake, authenticated in both directions by a shared secret::

    server -> client   ServerHello(version, nonce_s)
    client -> server   ClientHello(version, cluster, member_id, nonce_c,
                                   proof = HMAC(secret, "client" | cluster | nonce_s | nonce_c))
    server -> client   ServerProof(HMAC(secret, "server" | cluster | nonce_s | nonce_c))

Each side picks a fresh random nonce per connection, so a recorded handshake proves nothing on
another connection; the role label keeps one side's proof from being reflected as the other's.
Then the client sends requests, each with an id of its own choosing, and the server answers
each with a reply carrying that id, in any order (many requests are in flight at once).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import secrets
import struct
from collections.abc import Iterable
from typing import Any, Final

import anyio
import anyio.abc
import attrs
import orjson

from .. import _errors
from .._errors import ActorsourceError, ClusterProtocolError, Rejected, RemoteError

#: the protocol spoken; a member refuses a handshake of another version
PROTOCOL_VERSION: Final = 1
#: the largest frame a member reads by default (bytes of JSON)
DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")
_NONCE_BYTES = 32

_str = attrs.validators.instance_of(str)
_int = attrs.validators.instance_of(int)
_bool = attrs.validators.instance_of(bool)
_dict = attrs.validators.instance_of(dict)
_opt_int = attrs.validators.optional(_int)

# -- frames ----------------------------------------------------------------------------------------


def encode_frame(message: WireMessage) -> bytes:
    """Return the frame (length prefix and JSON) of a message.

    :raises ClusterProtocolError: if a payload is not JSON-serializable
    """
    data = attrs.asdict(message, recurse=False)
    data["t"] = _TAGS[type(message)]
    try:
        body = orjson.dumps(data)
    except TypeError as exc:
        msg = f"cannot send {type(message).__name__}: its payload is not JSON: {exc}"
        raise ClusterProtocolError(msg) from exc
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Reads frames from a byte stream, taking what the socket has in one read and keeping
    what is left of it for the next frames."""

    def __init__(self, stream: anyio.abc.ByteReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def receive_frame(self, max_size: int) -> bytes:
        """Return the body of the next frame.

        :raises anyio.EndOfStream: if the peer closed the connection between frames
        :raises ClusterProtocolError: if the frame is larger than ``max_size`` or cut short
        """
        buffer = self._buffer
        while True:
            if len(buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(buffer)
                if size > max_size:
                    msg = (
                        f"the peer sent a frame of {size} bytes, above the limit of "
                        f"{max_size} bytes"
                    )
                    raise ClusterProtocolError(msg)
                end = _HEADER.size + size
                if len(buffer) >= end:
                    body = bytes(buffer[_HEADER.size : end])
                    del buffer[:end]
                    return body
            try:
                chunk = await self._stream.receive()
            except anyio.EndOfStream:
                if not buffer:
                    raise  # closed between frames: a clean end
                if len(buffer) < _HEADER.size:
                    msg = "the peer closed the connection in the middle of a frame's length"
                else:
                    msg = (
                        "the peer closed the connection in the middle of a frame of "
                        f"{_HEADER.unpack_from(buffer)[0]} bytes"
                    )
                raise ClusterProtocolError(msg) from None
            buffer.extend(chunk)


class FrameWriter:
    """Writes a connection's frames from one task: frames posted while a write is under way go
    out together in the next one (a send per burst, not per frame).

    What it holds is bounded by the requests in flight (each has at most a frame in it).
    """

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._frames: list[bytes] = []
        self._posted = asyncio.Event()
        self._closed = False

    def post(self, frame: bytes) -> None:
        if not self._closed:
            self._frames.append(frame)
            self._posted.set()

    def close(self) -> None:
        """Write what was posted, then stop."""
        self._closed = True
        self._posted.set()

    async def run(self) -> None:
        """Write until closed.

        :raises anyio.BrokenResourceError: (or OSError, ssl.SSLError) if a write failed
        """
        while True:
            frames = self._frames
            if not frames:
                if self._closed:
                    return
                self._posted.clear()
                await self._posted.wait()
                continue
            self._frames = []
            await self._stream.send(frames[0] if len(frames) == 1 else b"".join(frames))


async def receive_frame(reader: FrameReader, max_size: int) -> bytes:
    """Return the body of the next frame ``reader`` reads (see
    :meth:`FrameReader.receive_frame`)."""
    return await reader.receive_frame(max_size)


def decode_message(body: bytes) -> WireMessage:
    """Return the message a frame's body holds.

    :raises ClusterProtocolError: if it is not JSON, not a known message, or malformed
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        msg = f"the peer sent a frame that is not JSON ({len(body)} bytes): {exc}"
        raise ClusterProtocolError(msg) from exc
    if not isinstance(data, dict):
        msg = f"the peer sent a {type(data).__name__} frame; messages are JSON objects"
        raise ClusterProtocolError(msg)
    tag = data.pop("t", None)
    kind = _KINDS.get(tag) if isinstance(tag, str) else None
    if kind is None:
        msg = f"the peer sent a message of unknown type {tag!r}"
        raise ClusterProtocolError(msg)
    try:
        message: WireMessage = kind(**data)
    except (TypeError, ValueError) as exc:
        msg = f"the peer sent a malformed {kind.__name__} message: {exc}"
        raise ClusterProtocolError(msg) from exc
    return message


# -- the handshake ---------------------------------------------------------------------------------


@attrs.frozen
class ServerHello:
    """The server's first frame: its protocol version and its nonce."""

    version: int = attrs.field(validator=_int)
    nonce: str = attrs.field(validator=_str)


@attrs.frozen
class ClientHello:
    """The client's answer: who it is, its nonce, and its proof of the secret."""

    version: int = attrs.field(validator=_int)
    cluster: str = attrs.field(validator=_str)
    member_id: str = attrs.field(validator=_str)
    nonce: str = attrs.field(validator=_str)
    proof: str = attrs.field(validator=_str)


@attrs.frozen
class ServerProof:
    """The server's proof of the secret: the client may now send requests."""

    proof: str = attrs.field(validator=_str)


@attrs.frozen
class Refused:
    """The server refused the handshake (and closes the connection)."""

    reason: str = attrs.field(validator=_str)


def new_nonce() -> str:
    """A fresh random nonce (hex)."""
    return secrets.token_hex(_NONCE_BYTES)


def handshake_proof(
    secret: bytes, role: str, cluster: str, server_nonce: str, client_nonce: str
) -> str:
    """The HMAC-SHA256 (hex) that proves knowledge of ``secret`` for one side of one
    connection."""
    text = "\x00".join(("actorsource-cluster", role, cluster, server_nonce, client_nonce))
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def proof_matches(expected: str, given: str) -> bool:
    """Compare proofs in constant time."""
    return hmac.compare_digest(expected.encode(), given.encode())


# -- requests --------------------------------------------------------------------------------------


@attrs.frozen
class Ask:
    """Decide a command and reply with its recorded events."""

    id: int = attrs.field(validator=_int)
    stream_id: str = attrs.field(validator=_str)
    command_type: str = attrs.field(validator=_str)
    command: dict[str, Any] = attrs.field(validator=_dict)
    metadata: dict[str, Any] = attrs.field(validator=_dict)
    #: always given (made at the caller), so that a retry is recognised by the owner
    command_id: str = attrs.field(validator=_str)
    expected_version: int | None = attrs.field(default=None, validator=_opt_int)
    #: whether the owner checks the id against the commands it stored (the caller gave the
    #: id, or this is a retry); a first attempt with a made id skips that lookup
    check_id: bool = attrs.field(default=True, validator=_bool)


@attrs.frozen
class Tell:
    """Put a command in the aggregate's mailbox; reply once it is there."""

    id: int = attrs.field(validator=_int)
    stream_id: str = attrs.field(validator=_str)
    command_type: str = attrs.field(validator=_str)
    command: dict[str, Any] = attrs.field(validator=_dict)
    metadata: dict[str, Any] = attrs.field(validator=_dict)
    command_id: str = attrs.field(validator=_str)
    #: wait for mailbox room (``tell``), or refuse with MailboxFullError (``tell_nowait``)
    wait: bool = attrs.field(default=True, validator=_bool)
    #: as :attr:`Ask.check_id`
    check_id: bool = attrs.field(default=True, validator=_bool)


@attrs.frozen
class GetState:
    """Reply with the state, the state and its version, or the version alone."""

    id: int = attrs.field(validator=_int)
    stream_id: str = attrs.field(validator=_str)
    wanted: str = attrs.field(
        validator=attrs.validators.in_(("state", "state_and_version", "version"))
    )


@attrs.frozen
class Snapshot:
    """Take a snapshot now; reply with its version."""

    id: int = attrs.field(validator=_int)
    stream_id: str = attrs.field(validator=_str)


@attrs.frozen
class Exists:
    """Reply with the stream's version: the live actor's, else the store's (0: no events)."""

    id: int = attrs.field(validator=_int)
    stream_id: str = attrs.field(validator=_str)


@attrs.frozen
class Cancel:
    """The client gave up on a request: stop it if it has not started (no reply)."""

    id: int = attrs.field(validator=_int)


#: what a client sends after the handshake
Request = Ask | Tell | GetState | Snapshot | Exists

# -- replies ---------------------------------------------------------------------------------------


@attrs.frozen
class Ok:
    """The request succeeded: its payload (JSON)."""

    id: int = attrs.field(validator=_int)
    payload: Any = None


@attrs.frozen
class Error:
    """The request failed with an error, described well enough to rebuild it."""

    id: int = attrs.field(validator=_int)
    #: ``module.QualifiedName`` of the error's class
    type_name: str = attrs.field(validator=_str)
    message: str = attrs.field(validator=_str)
    #: the error's JSON-serializable attributes (``stream_id``, ``expected_version``, ...)
    fields: dict[str, Any] = attrs.field(factory=dict, validator=_dict)
    #: whether it is a Rejected (a domain refusal), so that an unknown one is still one
    rejected: bool = attrs.field(default=False, validator=_bool)


@attrs.frozen
class NotOwner:
    """This member does not own the stream's shard: ask placement again and retry."""

    id: int = attrs.field(validator=_int)
    shard: int = attrs.field(validator=_int)
    #: the shard's epoch as this member saw it (0: unknown)
    epoch: int = attrs.field(validator=_int)


#: what a server answers
Reply = Ok | Error | NotOwner

#: every message on the wire
WireMessage = (
    ServerHello
    | ClientHello
    | ServerProof
    | Refused
    | Ask
    | Tell
    | GetState
    | Snapshot
    | Exists
    | Cancel
    | Ok
    | Error
    | NotOwner
)

_KINDS: dict[str, type[Any]] = {
    "server_hello": ServerHello,
    "client_hello": ClientHello,
    "server_proof": ServerProof,
    "refused": Refused,
    "ask": Ask,
    "tell": Tell,
    "state": GetState,
    "snapshot": Snapshot,
    "exists": Exists,
    "cancel": Cancel,
    "ok": Ok,
    "error": Error,
    "not_owner": NotOwner,
}
_TAGS: dict[type[Any], str] = {kind: tag for tag, kind in _KINDS.items()}

# -- errors across the wire ------------------------------------------------------------------------

#: builtin errors a handler may raise that are rebuilt as themselves (plain, message-only)
_BUILTINS: Final = (
    ArithmeticError,
    AssertionError,
    KeyError,
    LookupError,
    NotImplementedError,
    OverflowError,
    PermissionError,
    RuntimeError,
    TypeError,
    ValueError,
    ZeroDivisionError,
)


def _library_errors() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for value in vars(_errors).values():
        if isinstance(value, type) and issubclass(value, ActorsourceError):
            found[type_name_of(value)] = value
    return found


def type_name_of(cls: type) -> str:
    """``module.QualifiedName`` of a class; the library's errors go by ``actorsource.Name``."""
    module = "actorsource" if cls.__module__ == _errors.__name__ else cls.__module__
    return f"{module}.{cls.__qualname__}"


def _jsonable(value: object) -> bool:
    if value is None or type(value) in (str, int, float, bool):
        return True
    if isinstance(value, list | tuple):
        return all(_jsonable(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _jsonable(item) for key, item in value.items())
    return False


class ErrorRegistry:
    """The error classes rebuilt as themselves when they come back from another member: the
    library's errors, a few builtins, and the application's registered ones."""

    def __init__(self, registered: Iterable[type[BaseException]] = ()) -> None:
        self._classes = _library_errors()
        for builtin in _BUILTINS:
            self._classes[type_name_of(builtin)] = builtin
        for cls in registered:
            self.register(cls)

    def register(self, cls: type[BaseException]) -> None:
        """Rebuild errors of ``cls`` (a Rejected or other Exception subclass) as themselves.

        :raises TypeError: if ``cls`` is not an Exception subclass
        """
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            msg = f"only Exception subclasses can be registered as cluster errors, got {cls!r}"
            raise TypeError(msg)
        self._classes[type_name_of(cls)] = cls

    def describe(self, request_id: int, error: BaseException) -> Error:
        """The reply that carries ``error`` back to the caller."""
        fields = {
            key: value
            for key, value in vars(error).items()
            if not key.startswith("_") and _jsonable(value)
        }
        return Error(
            request_id,
            type_name_of(type(error)),
            str(error),
            fields,
            isinstance(error, Rejected),
        )

    def rebuild(self, reply: Error) -> BaseException:
        """The error a reply describes: its own class when known here, else a
        :class:`RemoteError` (a plain :class:`Rejected` for an unknown refusal, so that
        ``except Rejected`` still catches it)."""
        cls = self._classes.get(reply.type_name)
        if cls is None:
            if reply.rejected:
                cls = Rejected
            else:
                return RemoteError(reply.type_name, reply.message)
        if cls.__module__ == builtins.__name__:
            return cls(reply.message)
        # the class's __init__ is not called (its arguments are not on the wire): the message
        # and the attributes are restored as they were
        error = cls.__new__(cls)
        error.args = (reply.message,)
        for key, value in reply.fields.items():
            try:
                setattr(error, key, value)
            except AttributeError:  # a read-only property of the class
                continue
        if cls is Rejected and reply.type_name != type_name_of(Rejected):
            error.remote_type = reply.type_name  # type: ignore[attr-defined]
        return error
