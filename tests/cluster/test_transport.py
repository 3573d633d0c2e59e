"""The transport: the handshake, requests in flight, timeouts, broken connections,
backpressure and shutdown, over real TCP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest

from actorsource._errors import ClusterAuthError, PeerUnavailableError
from actorsource.cluster._protocol import (
    PROTOCOL_VERSION,
    ClientHello,
    Error,
    Exists,
    FrameReader,
    Ok,
    Refused,
    Reply,
    Request,
    ServerHello,
    ServerProof,
    decode_message,
    encode_frame,
    handshake_proof,
    new_nonce,
    receive_frame,
)
from actorsource.cluster._transport import Peers, Server, split_address

from .support import CLUSTER, SECRET, Proxy, credentials


class Recorder:
    """A handler that records the requests it served; ``hold`` keeps them waiting."""

    def __init__(self) -> None:
        self.served: list[Request] = []
        self.started = 0
        self.cancelled = 0
        self.hold = False
        self.release = anyio.Event()

    async def __call__(self, request: Request, member: str) -> Reply:
        self.started += 1
        try:
            if self.hold:
                await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        self.served.append(request)
        return Ok(request.id, {"stream": request.stream_id, "member": member})


@contextlib.asynccontextmanager
async def serving(handler: Recorder, **options: float) -> AsyncIterator[Server]:
    async with Server("127.0.0.1:0", credentials("server"), handler, **options) as server:  # type: ignore[arg-type]
        yield server


@contextlib.asynccontextmanager
async def raw(
    address: str,
) -> AsyncIterator[tuple[anyio.abc.SocketStream, FrameReader]]:
    host, port = split_address(address)
    async with await anyio.connect_tcp(host, port) as stream:
        yield stream, FrameReader(stream)


async def _hello_for(
    buffered: FrameReader, *, secret: bytes = SECRET, cluster: str = CLUSTER
) -> tuple[ClientHello, str]:
    hello = decode_message(await receive_frame(buffered, 4096))
    assert isinstance(hello, ServerHello)
    nonce = new_nonce()
    proof = handshake_proof(secret, "client", cluster, hello.nonce, nonce)
    return ClientHello(PROTOCOL_VERSION, cluster, "raw", nonce, proof), hello.nonce


async def _closed(stream: anyio.abc.SocketStream) -> bool:
    """Whether the server closed the connection (it sends nothing more)."""
    try:
        with anyio.fail_after(5):
            while await stream.receive():
                continue
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return True
    return False


async def test_the_right_secret_gets_requests_served() -> None:
    handler = Recorder()
    async with serving(handler) as server, Peers(credentials("client")) as peers:
        reply = await peers.request(server.address, Exists(0, "Wallet-a"))
        assert isinstance(reply, Ok)
        assert reply.payload == {"stream": "Wallet-a", "member": "client"}
        assert [r.stream_id for r in handler.served] == ["Wallet-a"]


@pytest.mark.parametrize(
    ("secret", "cluster", "reason"),
    [
        (b"wrong-secret", CLUSTER, "wrong secret"),
        (SECRET, "another-cluster", "cluster 'another-cluster'"),
    ],
)
async def test_a_client_that_fails_the_handshake_gets_nothing_done_and_is_logged(
    secret: bytes, cluster: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Recorder()
    caplog.set_level(logging.WARNING, "actorsource.cluster.transport")
    async with serving(handler) as server:
        async with Peers(credentials("intruder", secret=secret, cluster=cluster)) as peers:
            with pytest.raises(ClusterAuthError, match=reason):
                await peers.request(server.address, Exists(0, "Wallet-a"))
        async with raw(server.address) as (stream, buffered):
            hello, _ = await _hello_for(buffered, secret=secret, cluster=cluster)
            await stream.send(encode_frame(hello))
            refused = decode_message(await receive_frame(buffered, 4096))
            assert isinstance(refused, Refused)
            # a request sent anyway is never served: the connection is closed
            with contextlib.suppress(anyio.BrokenResourceError):
                await stream.send(encode_frame(Exists(1, "Wallet-a")))
            assert await _closed(stream)
    assert handler.started == 0
    assert any(reason in r.getMessage() for r in caplog.records)


async def test_a_client_that_skips_the_handshake_gets_nothing_done() -> None:
    handler = Recorder()
    async with serving(handler) as server, raw(server.address) as (stream, buffered):
        decode_message(await receive_frame(buffered, 4096))  # the server's hello
        await stream.send(encode_frame(Exists(1, "Wallet-a")))
        assert await _closed(stream)
    assert handler.started == 0


async def test_a_silent_client_is_closed_after_the_handshake_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "actorsource.cluster.transport")
    async with (
        serving(Recorder(), handshake_timeout=0.05) as server,
        raw(server.address) as (
            stream,
            _,
        ),
    ):
        assert await _closed(stream)
    assert any("no handshake within 0.05 s" in r.getMessage() for r in caplog.records)


async def test_a_replayed_handshake_is_refused() -> None:
    handler = Recorder()
    async with serving(handler) as server:
        async with raw(server.address) as (stream, buffered):
            recorded, _ = await _hello_for(buffered)
            await stream.send(encode_frame(recorded))
            assert isinstance(decode_message(await receive_frame(buffered, 4096)), ServerProof)
        # the same hello on a new connection: the server's nonce differs, so its proof fails
        async with raw(server.address) as (stream, buffered):
            decode_message(await receive_frame(buffered, 4096))
            await stream.send(encode_frame(recorded))
            assert isinstance(decode_message(await receive_frame(buffered, 4096)), Refused)
            with contextlib.suppress(anyio.BrokenResourceError):
                await stream.send(encode_frame(Exists(1, "Wallet-a")))
            assert await _closed(stream)
    assert handler.started == 0


async def test_a_server_that_does_not_know_the_secret_is_refused_by_the_client() -> None:
    async with (
        Server("127.0.0.1:0", credentials("impostor", secret=b"guess"), Recorder()) as impostor,
        Peers(credentials("client")) as peers,
    ):
        with pytest.raises(ClusterAuthError):
            await peers.request(impostor.address, Exists(0, "Wallet-a"))


async def test_a_frame_above_the_limit_closes_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "actorsource.cluster.transport")
    handler = Recorder()
    async with (
        serving(handler, max_frame=1024) as server,
        raw(server.address) as (
            stream,
            buffered,
        ),
    ):
        hello, _ = await _hello_for(buffered)
        await stream.send(encode_frame(hello))
        decode_message(await receive_frame(buffered, 4096))
        await stream.send((1 << 20).to_bytes(4, "big") + b"x" * 100)
        assert await _closed(stream)
    assert handler.started == 0
    assert any("above the limit of 1024 bytes" in r.getMessage() for r in caplog.records)


async def test_many_requests_in_flight_on_one_connection_get_their_own_replies() -> None:
    order: list[str] = []
    gates: dict[str, anyio.Event] = {}

    async def handler(request: Request, member: str) -> Reply:
        gates[request.stream_id] = anyio.Event()
        await gates[request.stream_id].wait()
        order.append(request.stream_id)
        return Ok(request.id, request.stream_id)

    async with (
        Server("127.0.0.1:0", credentials("s"), handler) as server,
        Peers(credentials("c")) as peers,
    ):
        replies: dict[str, object] = {}

        async def ask(name: str) -> None:
            reply = await peers.request(server.address, Exists(0, name))
            assert isinstance(reply, Ok)
            replies[name] = reply.payload

        names = [f"s-{i}" for i in range(20)]
        async with anyio.create_task_group() as task_group:
            for name in names:
                task_group.start_soon(ask, name)
            while len(gates) < len(names):
                await anyio.wait_all_tasks_blocked()
            for name in reversed(names):  # answered in the reverse order
                gates[name].set()
                await anyio.wait_all_tasks_blocked()
        assert order == list(reversed(names))
        assert replies == {name: name for name in names}
        assert len(peers._connections) == 1


async def test_a_request_times_out_and_the_server_drops_it() -> None:
    handler = Recorder()
    handler.hold = True
    async with serving(handler) as server, Peers(credentials("c")) as peers:
        with pytest.raises(TimeoutError, match=r"sent no reply within 0\.05 s"):
            await peers.request(server.address, Exists(0, "Wallet-a"), timeout=0.05)
        while handler.cancelled == 0:
            await anyio.wait_all_tasks_blocked()
        assert handler.served == []
        handler.hold = False  # the connection still serves
        assert isinstance(await peers.request(server.address, Exists(0, "Wallet-b")), Ok)


async def test_a_broken_connection_fails_its_request_as_sent_drops_it_and_reconnects() -> None:
    handler = Recorder()
    handler.hold = True
    async with serving(handler) as server, Peers(credentials("c")) as peers:
        async with Proxy(server.address) as proxy:
            async with anyio.create_task_group() as task_group:
                failures: list[PeerUnavailableError] = []

                async def ask() -> None:
                    try:
                        await peers.request(proxy.address, Exists(0, "Wallet-a"))
                    except PeerUnavailableError as exc:
                        failures.append(exc)

                task_group.start_soon(ask)
                while handler.started == 0:
                    await anyio.wait_all_tasks_blocked()
                proxy.cut()
            assert len(failures) == 1 and failures[0].sent is True
            assert "outcome is unknown" in str(failures[0])
            # the server dropped the request of the connection that broke
            with anyio.fail_after(5):
                while handler.cancelled == 0:
                    await anyio.wait_all_tasks_blocked()
            assert handler.served == []
            handler.hold = False
            reply = await peers.request(proxy.address, Exists(0, "Wallet-b"))
            assert isinstance(reply, Ok)
        handler.release.set()


async def test_a_member_that_cannot_be_reached_fails_the_request_as_not_sent() -> None:
    async with serving(Recorder()) as server:
        address = server.address
    async with Peers(credentials("c")) as peers:
        with pytest.raises(PeerUnavailableError, match="cannot connect") as caught:
            await peers.request(address, Exists(0, "Wallet-a"))
        assert caught.value.sent is False


async def test_the_server_stops_reading_while_its_requests_in_flight_are_at_the_limit() -> None:
    handler = Recorder()
    handler.hold = True
    async with serving(handler, max_in_flight=2) as server, Peers(credentials("c")) as peers:
        async with anyio.create_task_group() as task_group:
            for index in range(5):
                task_group.start_soon(peers.request, server.address, Exists(0, f"s-{index}"))
            await anyio.wait_all_tasks_blocked()
            assert handler.started == 2
            handler.release.set()
        assert handler.started == 5 and len(handler.served) == 5


async def test_the_client_bounds_its_requests_in_flight_per_connection() -> None:
    handler = Recorder()
    handler.hold = True
    async with serving(handler) as server, Peers(credentials("c"), max_in_flight=3) as peers:
        async with anyio.create_task_group() as task_group:
            for index in range(6):
                task_group.start_soon(peers.request, server.address, Exists(0, f"s-{index}"))
            await anyio.wait_all_tasks_blocked()
            connection = peers._connections[server.address]
            assert len(connection._pending) == 3
            handler.release.set()
        assert len(handler.served) == 6


async def test_closing_the_client_fails_its_requests_in_flight() -> None:
    handler = Recorder()
    handler.hold = True
    async with serving(handler) as server:
        failures: list[PeerUnavailableError] = []
        async with anyio.create_task_group() as task_group, Peers(credentials("c")) as peers:

            async def ask() -> None:
                try:
                    await peers.request(server.address, Exists(0, "Wallet-a"))
                except PeerUnavailableError as exc:
                    failures.append(exc)

            task_group.start_soon(ask)
            while handler.started == 0:
                await anyio.wait_all_tasks_blocked()
        assert len(failures) == 1 and "transport closed" in str(failures[0])
        handler.release.set()


async def test_closing_the_server_answers_requests_that_did_not_finish_in_its_grace() -> None:
    handler = Recorder()
    handler.hold = True
    replies: list[Reply] = []
    async with (
        Peers(credentials("c")) as peers,
        anyio.create_task_group() as task_group,
        serving(handler, grace=0.05) as server,
    ):

        async def ask() -> None:
            replies.append(await peers.request(server.address, Exists(0, "Wallet-a")))

        task_group.start_soon(ask)
        while handler.started == 0:
            await anyio.wait_all_tasks_blocked()
    assert handler.cancelled == 1
    [reply] = replies
    assert isinstance(reply, Error)
    assert reply.type_name == "actorsource.PeerUnavailableError"
    assert reply.fields == {"sent": True} and "shutting down" in reply.message


def test_addresses_are_host_and_port() -> None:
    assert split_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert split_address("[::1]:0") == ("::1", 0)
    for bad in ["localhost", "host:", ":80", "host:99999", "host:http"]:
        with pytest.raises(ValueError, match="'host:port'"):
            split_address(bad)
