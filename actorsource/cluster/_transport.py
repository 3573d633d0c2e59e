"""The transport between cluster members: a server and a pool of client connections over TCP.

Every connection is authenticated in both directions first (see ``_protocol``); one that fails
the handshake, or does not finish it within ``handshake_timeout``, gets nothing done and is
closed, and the refusal is logged. Many requests are in flight on one connection at once,
matched to their replies by id. Both sides bound the requests in flight per connection: the
client waits for a free slot before it sends, the server stops reading the connection while
its slots are taken (TCP then holds the client back).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final, Self

import anyio
import anyio.abc
import attrs
from anyio.streams.tls import TLSListener

from .._errors import (
    ClusterAuthError,
    ClusterProtocolError,
    PeerUnavailableError,
)
from ._protocol import (
    DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
    Ask,
    Cancel,
    ClientHello,
    Error,
    Exists,
    FrameReader,
    FrameWriter,
    GetState,
    NotOwner,
    Ok,
    Refused,
    Reply,
    Request,
    ServerHello,
    ServerProof,
    Snapshot,
    Tell,
    WireMessage,
    decode_message,
    encode_frame,
    handshake_proof,
    new_nonce,
    proof_matches,
    receive_frame,
    type_name_of,
)

logger = logging.getLogger("actorsource.cluster.transport")

#: what serves one request: the request and the authenticated peer's member id -> the reply
Handler = Callable[[Request, str], Awaitable[Reply]]

#: the largest handshake frame read (a hello is a few hundred bytes)
_HANDSHAKE_FRAME: Final = 4096
#: errors of a connection that broke or was closed under us
_BROKEN = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ClusterProtocolError,
    OSError,
    ssl.SSLError,
)
_REQUESTS = (Ask, Tell, GetState, Snapshot, Exists)
_REPLIES = (Ok, Error, NotOwner)


@attrs.frozen
class Credentials:
    """What both ends of a connection must share: the cluster's name and secret."""

    cluster: str
    secret: bytes = attrs.field(repr=False)
    #: this member's id (the client says it in its hello; servers log it)
    member_id: str


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) -> ``(host, port)``.

    :raises ValueError: if it has no port or the port is not a number from 0 to 65535
    """
    host, colon, port_text = address.rpartition(":")
    if not colon or not host or not port_text.isdigit() or int(port_text) > 65535:
        msg = f"a cluster address is 'host:port' with a port from 0 to 65535, got {address!r}"
        raise ValueError(msg)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


async def _send(stream: anyio.abc.ByteStream, message: WireMessage) -> None:
    await stream.send(encode_frame(message))


async def _receive(buffered: FrameReader, max_size: int) -> WireMessage:
    return decode_message(await receive_frame(buffered, max_size))


# -- the server ------------------------------------------------------------------------------------


class Server:
    """Accepts authenticated connections and serves their requests with ``handler``.

    Use as an async context manager: entering binds and starts serving (``address`` is then the
    bound ``host:port``, port 0 given), leaving stops it. Requests still running when it leaves
    get ``grace`` seconds to finish; the rest are cancelled and answered with a
    :class:`PeerUnavailableError` (a retry with the same command id is applied once).
    """

    def __init__(
        self,
        address: str,
        credentials: Credentials,
        handler: Handler,
        *,
        tls: ssl.SSLContext | None = None,
        max_in_flight: int = 128,
        handshake_timeout: float = 5.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        grace: float = 5.0,
    ) -> None:
        self._host, self._port = split_address(address)
        self._credentials = credentials
        self._handler = handler
        self._tls = tls
        self._max_in_flight = max_in_flight
        self._handshake_timeout = handshake_timeout
        self._max_frame = max_frame
        self._grace = grace
        #: the bound "host:port" (set once serving)
        self.address = address
        self._task_group: anyio.abc.TaskGroup | None = None
        self._listener_scope = anyio.CancelScope()
        self._connections: set[_ServerConnection] = set()

    async def __aenter__(self) -> Self:
        listener: anyio.abc.Listener[anyio.abc.ByteStream]
        tcp = await anyio.create_tcp_listener(local_host=self._host, local_port=self._port)
        port = tcp.extra(anyio.abc.SocketAttribute.local_port)
        host = self._host if ":" not in self._host else f"[{self._host}]"
        self.address = f"{host}:{port}"
        listener = tcp
        if self._tls is not None:
            listener = TLSListener(tcp, self._tls, standard_compatible=False)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._serve, listener, task_group)
        logger.info("cluster transport listening on %s", self.address)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group = self._task_group
        if task_group is None:
            return
        self._task_group = None
        self._listener_scope.cancel()
        try:
            connections = list(self._connections)
            for connection in connections:
                connection.stop_reading()
            # requests under way may finish; then the rest are cancelled and answered
            with anyio.move_on_after(self._grace):
                for connection in connections:
                    await connection.finished.wait()
            for connection in connections:
                connection.cancel_requests()
            with anyio.move_on_after(self._grace):
                for connection in connections:
                    await connection.finished.wait()
            task_group.cancel_scope.cancel()  # handshakes under way
        finally:
            await task_group.__aexit__(None, None, None)
        logger.info("cluster transport on %s stopped", self.address)

    async def _serve(
        self,
        listener: anyio.abc.Listener[anyio.abc.ByteStream],
        task_group: anyio.abc.TaskGroup,
    ) -> None:
        with self._listener_scope:
            async with listener:
                # connections run in our task group: stopping the listener leaves them be
                await listener.serve(self._connection, task_group)

    async def _connection(self, stream: anyio.abc.ByteStream) -> None:
        peer = _peer_of(stream)
        async with stream:
            buffered = FrameReader(stream)
            try:
                with anyio.fail_after(self._handshake_timeout):
                    member = await self._handshake(stream, buffered)
            except TimeoutError:
                logger.warning(
                    "refused a cluster connection from %s: no handshake within %s s",
                    peer,
                    self._handshake_timeout,
                    extra={"peer": peer},
                )
                return
            except (ClusterAuthError, *_BROKEN) as exc:
                logger.warning(
                    "refused a cluster connection from %s: %s",
                    peer,
                    exc,
                    extra={"peer": peer},
                )
                return
            logger.debug("cluster connection from %s (member %r)", peer, member)
            connection = _ServerConnection(
                stream,
                buffered,
                self._handler,
                member=member,
                peer=peer,
                max_in_flight=self._max_in_flight,
                max_frame=self._max_frame,
            )
            self._connections.add(connection)
            try:
                await connection.run()
            finally:
                self._connections.discard(connection)

    async def _handshake(self, stream: anyio.abc.ByteStream, buffered: FrameReader) -> str:
        credentials = self._credentials
        server_nonce = new_nonce()
        await _send(stream, ServerHello(PROTOCOL_VERSION, server_nonce))
        hello = await _receive(buffered, _HANDSHAKE_FRAME)
        if not isinstance(hello, ClientHello):
            msg = f"the peer sent {type(hello).__name__} where the handshake expects its hello"
            raise ClusterAuthError(msg)
        reason = ""
        if hello.version != PROTOCOL_VERSION:
            reason = f"protocol version {hello.version}, this member speaks {PROTOCOL_VERSION}"
        elif hello.cluster != credentials.cluster:
            reason = f"cluster {hello.cluster!r}, this member is of {credentials.cluster!r}"
        else:
            expected = handshake_proof(
                credentials.secret, "client", credentials.cluster, server_nonce, hello.nonce
            )
            # a proof over a short client nonce is still bound to our fresh nonce: enough
            if not proof_matches(expected, hello.proof):
                reason = "wrong secret (its proof does not match)"
        if reason:
            await _send(stream, Refused(f"handshake refused: {reason}"))
            msg = f"member {hello.member_id!r} failed the handshake: {reason}"
            raise ClusterAuthError(msg)
        proof = handshake_proof(
            credentials.secret, "server", credentials.cluster, server_nonce, hello.nonce
        )
        await _send(stream, ServerProof(proof))
        return hello.member_id


def _peer_of(stream: anyio.abc.ByteStream) -> str:
    try:
        remote = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return "?"
    if isinstance(remote, tuple):
        return f"{remote[0]}:{remote[1]}"
    return str(remote)


class _ServerConnection:
    """One authenticated connection: reads requests (while slots are free), runs each in a task,
    writes each reply."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        buffered: FrameReader,
        handler: Handler,
        *,
        member: str,
        peer: str,
        max_in_flight: int,
        max_frame: int,
    ) -> None:
        self._stream = stream
        self._buffered = buffered
        self._handler = handler
        self._member = member
        self._peer = peer
        self._max_frame = max_frame
        self._slots = anyio.Semaphore(max_in_flight, fast_acquire=True)
        self._outbox = FrameWriter(stream)
        self._running: dict[int, anyio.CancelScope] = {}
        self._read_scope = anyio.CancelScope()
        self._shutting_down = False
        #: set once the connection is done (no request left)
        self.finished = anyio.Event()

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as writing:
                writing.start_soon(self._write)
                try:
                    async with anyio.create_task_group() as task_group:
                        with self._read_scope:
                            await self._read(task_group)
                        if not self._read_scope.cancel_called:
                            # the client is gone (it fails these requests itself and may retry
                            # them elsewhere): what has not started yet is dropped, never run
                            # behind a retry
                            for scope in self._running.values():
                                scope.cancel()
                    # leaving the task group waited for the requests under way
                finally:
                    self._outbox.close()
        finally:
            self.finished.set()

    async def _write(self) -> None:
        with contextlib.suppress(*_BROKEN):  # the client is gone: it fails its requests itself
            await self._outbox.run()

    async def _read(self, task_group: anyio.abc.TaskGroup) -> None:
        while True:
            # backpressure: no slot, no reading (the peer's sends then wait in TCP)
            await self._slots.acquire()
            try:
                message = await _receive(self._buffered, self._max_frame)
            except anyio.EndOfStream:
                self._slots.release()
                return
            except _BROKEN as exc:
                self._slots.release()
                logger.warning(
                    "closing the cluster connection from %s (member %r): %s",
                    self._peer,
                    self._member,
                    exc,
                    extra={"peer": self._peer, "member": self._member},
                )
                return
            if isinstance(message, Cancel):
                self._slots.release()
                scope = self._running.get(message.id)
                if scope is not None:
                    scope.cancel()
                continue
            if not isinstance(message, _REQUESTS):
                self._slots.release()
                logger.warning(
                    "closing the cluster connection from %s (member %r): it sent %s, not a request",
                    self._peer,
                    self._member,
                    type(message).__name__,
                )
                return
            scope = anyio.CancelScope()
            self._running[message.id] = scope
            task_group.start_soon(self._serve, message, scope)

    async def _serve(self, request: Request, scope: anyio.CancelScope) -> None:
        reply: Reply | None = None
        try:
            with scope:
                reply = await self._handler(request, self._member)
        except Exception as exc:  # the handler describes errors itself: this one escaped it
            logger.exception("a cluster request from %s failed", self._peer)
            reply = Error(request.id, type_name_of(type(exc)), str(exc))
        finally:
            del self._running[request.id]
            self._slots.release()
        if reply is None:
            if not self._shutting_down:
                return  # cancelled by the client: it no longer waits for a reply
            error = PeerUnavailableError(
                "the member was shutting down before the request finished; it may or may not "
                "have taken effect (a retry with the same command id is applied once)",
                sent=True,
            )
            reply = Error(request.id, type_name_of(type(error)), str(error), {"sent": True})
        self._outbox.post(encode_frame(reply))

    def stop_reading(self) -> None:
        self._read_scope.cancel()

    def cancel_requests(self) -> None:
        self._shutting_down = True
        for scope in self._running.values():
            scope.cancel()


# -- the client ------------------------------------------------------------------------------------


class Peers:
    """A pool of client connections, one per member address, made on first use and again after
    a connection broke.

    Use as an async context manager; leaving it fails every request in flight with a
    :class:`PeerUnavailableError` and closes the connections.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        tls: ssl.SSLContext | None = None,
        max_in_flight: int = 128,
        connect_timeout: float = 5.0,
        handshake_timeout: float = 5.0,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._credentials = credentials
        self._tls = tls
        self._max_in_flight = max_in_flight
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._max_frame = max_frame
        self._connections: dict[str, _ClientConnection] = {}
        self._connecting: dict[str, anyio.Lock] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        task_group = self._task_group
        if task_group is None:
            return
        for connection in list(self._connections.values()):
            connection.fail_all(PeerUnavailableError("the cluster transport closed", sent=True))
        task_group.cancel_scope.cancel()
        await task_group.__aexit__(None, None, None)
        for connection in list(self._connections.values()):
            await connection.aclose()
        self._connections.clear()

    @property
    def closed(self) -> bool:
        """Whether the pool was closed (its requests fail for good)."""
        return self._closed

    async def request(
        self,
        address: str,
        request: Request,
        *,
        timeout: float | None = None,  # noqa: ASYNC109  # a per-request limit, like ask's
    ) -> Reply:
        """Send a request to the member at ``address`` and return its reply.

        :raises PeerUnavailableError: if the member cannot be reached (``sent`` False) or the
            connection broke with the request in flight (``sent`` True: the outcome is unknown)
        :raises ClusterAuthError: if the member refused the handshake (or failed ours)
        :raises TimeoutError: if no reply came within ``timeout`` seconds (the member is told
            to drop the request if it has not started it)
        """
        connection = await self._connection(address)
        return await connection.request(request, timeout)

    async def _connection(self, address: str) -> _ClientConnection:
        connection = self._connections.get(address)
        if connection is not None and connection.broken is None:
            return connection
        if self._closed or self._task_group is None:
            msg = f"cannot reach {address}: the cluster transport is not open"
            raise PeerUnavailableError(msg, address=address)
        lock = self._connecting.setdefault(address, anyio.Lock())
        async with lock:
            connection = self._connections.get(address)
            if connection is not None and connection.broken is None:
                return connection  # another request connected meanwhile
            connection = await self._connect(address)
            self._connections[address] = connection
            self._task_group.start_soon(connection.read_replies)
            self._task_group.start_soon(connection.write_requests)
            return connection

    async def _connect(self, address: str) -> _ClientConnection:
        host, port = split_address(address)
        try:
            with anyio.fail_after(self._connect_timeout):
                stream: anyio.abc.ByteStream
                if self._tls is not None:
                    stream = await anyio.connect_tcp(
                        host, port, ssl_context=self._tls, tls_standard_compatible=False
                    )
                else:
                    stream = await anyio.connect_tcp(host, port)
        except ssl.SSLError as exc:
            msg = (
                f"the TLS handshake with the member at {address} failed: {exc}; check that "
                "every member's certificate is trusted by the others' SSL contexts"
            )
            raise ClusterAuthError(msg) from exc
        except (OSError, TimeoutError) as exc:
            msg = f"cannot connect to the member at {address}: {type(exc).__name__}: {exc}"
            raise PeerUnavailableError(msg, address=address) from exc
        buffered = FrameReader(stream)
        try:
            with anyio.fail_after(self._handshake_timeout):
                await self._handshake(address, stream, buffered)
        except BaseException as exc:
            await anyio.aclose_forcefully(stream)
            if isinstance(exc, TimeoutError):
                msg = f"the member at {address} did not finish the handshake in time"
                raise PeerUnavailableError(msg, address=address) from exc
            if isinstance(exc, _BROKEN):
                msg = f"the connection to {address} broke during the handshake: {exc}"
                raise PeerUnavailableError(msg, address=address) from exc
            raise
        return _ClientConnection(address, stream, buffered, self._max_in_flight, self._max_frame)

    async def _handshake(
        self, address: str, stream: anyio.abc.ByteStream, buffered: FrameReader
    ) -> None:
        credentials = self._credentials
        hello = await _receive(buffered, _HANDSHAKE_FRAME)
        if not isinstance(hello, ServerHello):
            msg = f"{address} sent {type(hello).__name__} where the handshake expects its hello"
            raise ClusterAuthError(msg)
        if hello.version != PROTOCOL_VERSION:
            msg = (
                f"{address} speaks cluster protocol version {hello.version}, this member "
                f"{PROTOCOL_VERSION}: run one version of actorsource across the cluster"
            )
            raise ClusterAuthError(msg)
        nonce = new_nonce()
        proof = handshake_proof(
            credentials.secret, "client", credentials.cluster, hello.nonce, nonce
        )
        await _send(
            stream,
            ClientHello(PROTOCOL_VERSION, credentials.cluster, credentials.member_id, nonce, proof),
        )
        answer = await _receive(buffered, _HANDSHAKE_FRAME)
        if isinstance(answer, Refused):
            msg = f"{address} refused this member: {answer.reason}"
            raise ClusterAuthError(msg)
        expected = handshake_proof(
            credentials.secret, "server", credentials.cluster, hello.nonce, nonce
        )
        if not isinstance(answer, ServerProof) or not proof_matches(expected, answer.proof):
            msg = (
                f"{address} did not prove it knows the cluster's secret: it is not a member of "
                f"{credentials.cluster!r}, or its secret differs"
            )
            logger.warning(msg, extra={"peer": address})
            raise ClusterAuthError(msg)


class _ClientConnection:
    """One authenticated connection to a member: requests out, replies matched by id."""

    def __init__(
        self,
        address: str,
        stream: anyio.abc.ByteStream,
        buffered: FrameReader,
        max_in_flight: int,
        max_frame: int,
    ) -> None:
        self.address = address
        self._stream = stream
        self._buffered = buffered
        self._max_frame = max_frame
        self._slots = asyncio.Semaphore(max_in_flight)
        self._outbox = FrameWriter(stream)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        #: why the connection is unusable (None: it is not)
        self.broken: PeerUnavailableError | None = None

    async def request(self, request: Request, timeout: float | None) -> Reply:  # noqa: ASYNC109
        async with self._slots:  # backpressure: a bounded number in flight
            if self.broken is not None:
                raise PeerUnavailableError(str(self.broken), address=self.address)
            request_id = next(self._ids)
            future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            self._pending[request_id] = future
            sent = False
            try:
                self._outbox.post(encode_frame(attrs.evolve(request, id=request_id)))
                sent = True
                if timeout is None:
                    return await future
                try:
                    with anyio.fail_after(timeout):
                        return await future
                except TimeoutError:
                    msg = f"{self.address} sent no reply within {timeout} s"
                    raise TimeoutError(msg) from None
            finally:
                self._pending.pop(request_id, None)
                # no reply (a timeout or cancellation cancels the future it awaited)
                if sent and (future.cancelled() or not future.done()):
                    # tell the member we no longer wait (it drops the request if not started)
                    self._outbox.post(encode_frame(Cancel(request_id)))

    async def write_requests(self) -> None:
        try:
            await self._outbox.run()
        except _BROKEN as exc:
            self._break(f"sending to it failed: {type(exc).__name__}: {exc}")
            await anyio.aclose_forcefully(self._stream)  # the reader stops too

    async def read_replies(self) -> None:
        try:
            while True:
                reply = await _receive(self._buffered, self._max_frame)
                if not isinstance(reply, _REPLIES):
                    msg = f"{self.address} sent {type(reply).__name__}, not a reply"
                    raise ClusterProtocolError(msg)
                future = self._pending.get(reply.id)
                if future is not None and not future.done():
                    future.set_result(reply)
        except anyio.EndOfStream:
            self._break("the member closed it")
        except _BROKEN as exc:
            self._break(f"{type(exc).__name__}: {exc}")
        finally:
            self._break("the transport closed")
            await anyio.aclose_forcefully(self._stream)

    def _break(self, reason: str) -> None:
        if self.broken is not None:
            return
        self._outbox.close()
        msg = (
            f"the connection to {self.address} broke ({reason}) with the request in flight: "
            "its outcome is unknown (a retry with the same command id is applied once)"
        )
        self.broken = PeerUnavailableError(msg, address=self.address, sent=True)
        if self._pending:
            logger.warning(
                "cluster connection to %s broke with %d request(s) in flight: %s",
                self.address,
                len(self._pending),
                reason,
            )
        self.fail_all(self.broken)

    def fail_all(self, error: PeerUnavailableError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    PeerUnavailableError(str(error), address=self.address, sent=error.sent)
                )

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self._stream)
