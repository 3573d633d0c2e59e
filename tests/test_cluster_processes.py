"""Three cluster members in three processes on one PostgreSQL schema (``tests/cluster_member.py``):
single activation under load, kill -9, SIGSTOP/SIGCONT, a rolling restart, and a connection
without the secret.

Every member runs a steady load of asks through its own refs (routed to the owners) and prints
each acknowledged ask as it returns; the tests compare what was acknowledged with the stored
events. Leases are short (1.5 s); every wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from actorsource import ClusterAuthError
from actorsource.cluster import rendezvous

from .conftest import POSTGRES_DSN, drop_schema, postgres_schema, run_sync
from .test_processes import Worker

pytestmark = pytest.mark.skipif(not POSTGRES_DSN, reason="needs PostgreSQL")

LEASE = 1.5
SHARDS = 16
#: the longest a condition may take to come true
DEADLINE = 20.0


@pytest.fixture
def schema(tmp_path: Path, postgres_dsn: str) -> Iterator[str]:
    # through postgres_dsn: a run of this file alone starts the throwaway server too
    name = postgres_schema(tmp_path)
    yield name
    run_sync(drop_schema(postgres_dsn, name))


class Members:
    """The member processes of one test, by member id (a restarted one replaces its entry;
    every process ever started is kept, for its acknowledged asks)."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.live: dict[str, Worker] = {}
        self.started: list[Worker] = []

    async def start(self, member: str, *extra: str, load: int = 3) -> Worker:
        worker = Worker(
            POSTGRES_DSN,
            "--schema",
            self.schema,
            "--member",
            member,
            "--lease",
            str(LEASE),
            "--shards",
            str(SHARDS),
            "--load",
            str(load),
            *extra,
            module="tests.cluster_member",
        )
        self.started.append(worker)
        self.live[member] = worker
        await worker.wait_for_line(lambda line: line.startswith('{"ready"'), f"{member} start")
        return worker

    async def stop(self, member: str) -> dict[str, Any]:
        worker = self.live.pop(member)
        worker.process.send_signal(signal.SIGTERM)
        line = await worker.wait_for_line(lambda line: line.startswith('{"done"'), f"{member} stop")
        assert await worker.wait(f"{member} exit") == 0, worker.stderr
        done: dict[str, Any] = json.loads(line)["done"]
        return done

    def acks(self) -> list[dict[str, Any]]:
        return [ack for worker in self.started for ack in worker.acks()]

    def errors(self) -> list[str]:
        return [error for worker in self.started for error in worker.errors()]

    def kill_all(self) -> None:
        for worker in self.started:
            if worker.process.poll() is None:
                os.kill(worker.process.pid, signal.SIGCONT)
            worker.kill()


@pytest.fixture
async def members(schema: str) -> AsyncIterator[Members]:
    found = Members(schema)
    try:
        yield found
    finally:
        found.kill_all()


async def wait_until(condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` (sync or async) until it returns something true, up to DEADLINE."""
    with anyio.move_on_after(DEADLINE):
        while True:
            outcome = condition()
            if hasattr(outcome, "__await__"):
                outcome = await outcome
            if outcome:
                return outcome
            await anyio.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE} s: {what}")


async def query(schema: str, sql: str, *args: Any) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        return list(await conn.fetch(sql.replace("S.", f'"{schema}".'), *args))
    finally:
        await conn.close()


async def owners(schema: str) -> dict[int, tuple[str, int]]:
    """shard -> (owner, epoch) of the leases held now."""
    rows = await query(
        schema,
        "SELECT shard, owner, epoch FROM S.shard_leases "
        "WHERE owner IS NOT NULL AND expires_at > extract(epoch FROM clock_timestamp())",
    )
    return {row[0]: (row[1], row[2]) for row in rows}


def settled(names: list[str]) -> Callable[[], Any]:
    """A condition: every shard is held by the member rendezvous hashing gives it."""
    wanted = {shard: rendezvous(shard, names) for shard in range(SHARDS)}

    async def check(schema: str) -> bool:
        found = await owners(schema)
        return {shard: owner for shard, (owner, _) in found.items()} == wanted

    return check  # type: ignore[return-value]


async def start_settled(members: Members, schema: str, names: list[str]) -> None:
    """Start these members and wait until they hold every shard between them."""
    for name in names:
        await members.start(name)
    await wait_until(lambda: settled(names)(schema), "placement settled")  # type: ignore[operator]


async def stored(schema: str) -> list[tuple[str, int, int, str, str]]:
    """Every event: (stream, version, position, member that decided it, command id)."""
    rows = await query(
        schema,
        "SELECT stream_id, version, position, data->>'member', metadata->>'command_id' "
        "FROM S.events WHERE stream_id LIKE 'Counter-%' ORDER BY position",
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]


def check_acknowledged_stored_once(acks: list[dict[str, Any]], events: list[Any]) -> None:
    by_command = Tally(event[4] for event in events)
    assert all(count == 1 for count in by_command.values())  # nothing applied twice
    missing = [ack["cmd"] for ack in acks if by_command[ack["cmd"]] != 1]
    assert missing == []  # no acknowledged command lost
    versions = {(event[0], event[1]) for event in events}
    assert all((ack["stream"], ack["version"]) in versions for ack in acks)


def runs_per_stream(events: list[Any]) -> dict[str, list[str]]:
    """stream -> the members that decided its events, one entry per run of one member."""
    runs: dict[str, list[str]] = {}
    for stream, _, _, member, _ in events:
        seen = runs.setdefault(stream, [])
        if not seen or seen[-1] != member:
            seen.append(member)
    return runs


async def acks_grow(members: Members, more: int) -> None:
    target = len(members.acks()) + more
    await wait_until(
        lambda: len(members.acks()) >= target,
        f"{more} more acks (at {len(members.acks())}, errors {members.errors()[-3:]}, "
        f"stderr {[w.stderr[-800:] for w in members.started]})",
    )


# -- the tests -----------------------------------------------------------------------------------


async def test_single_activation_holds_under_load_with_no_conflicts(
    members: Members, schema: str
) -> None:
    names = ["m0", "m1", "m2"]
    for name in names:
        await members.start(name, "--sample")
    await wait_until(lambda: settled(names)(schema), "placement settled")  # type: ignore[operator]
    settled_at = time.time()  # the members' samples carry the same machine's time
    await acks_grow(members, 300)
    stopping_at = time.time()
    stats = [await members.stop(name) for name in names]
    # every aggregate was live on one member at a time once placement settled
    live_on: dict[str, set[str]] = {}
    for name, worker in zip(names, members.started, strict=True):
        for line in worker.output:
            if line.startswith('{"live"') and line.endswith("\n"):
                sample = json.loads(line)
                if settled_at < sample["t"] < stopping_at:
                    for stream in sample["live"]:
                        live_on.setdefault(stream, set()).add(name)
    assert live_on and all(len(found) == 1 for found in live_on.values()), live_on
    # no two members ever wrote one aggregate concurrently: zero conflicts, and each
    # aggregate's events were decided by one member after another, never back and forth
    assert [s["conflicts_retried"] for s in stats] == [0, 0, 0]
    events = await stored(schema)
    assert all(len(runs) == len(set(runs)) for runs in runs_per_stream(events).values())
    check_acknowledged_stored_once(members.acks(), events)
    assert members.errors() == []


async def test_kill_9_moves_the_shards_within_the_lease_and_loses_no_acknowledged_command(
    members: Members, schema: str
) -> None:
    names = ["m0", "m1", "m2"]
    await start_settled(members, schema, names)
    await acks_grow(members, 200)
    before = await owners(schema)
    killed = members.live.pop("m2")
    killed.kill()
    started = anyio.current_time()
    await wait_until(lambda: settled(["m0", "m1"])(schema), "m2's shards moved")  # type: ignore[operator]
    moved_after = anyio.current_time() - started
    after = await owners(schema)
    for shard, (owner, epoch) in before.items():
        if owner == "m2":
            assert after[shard] == (after[shard][0], epoch + 1)  # taken over at the next epoch
    await acks_grow(members, 200)
    for name in ("m0", "m1"):
        stats = await members.stop(name)
        assert stats["conflicts_retried"] == 0
    check_acknowledged_stored_once(members.acks(), await stored(schema))
    # the survivors' asks were retried across the move: none failed
    assert [e for w in members.started[:2] for e in w.errors()] == []
    print(f"kill -9: shards moved {moved_after:.2f} s after the kill (lease {LEASE} s)")


async def test_a_paused_owner_is_fenced_and_stores_nothing_after_the_takeover(
    members: Members, schema: str
) -> None:
    names = ["m0", "m1", "m2"]
    await start_settled(members, schema, names)
    await acks_grow(members, 200)
    paused = members.live["m2"]
    os.kill(paused.process.pid, signal.SIGSTOP)
    try:
        await wait_until(lambda: settled(["m0", "m1"])(schema), "m2's shards taken over")  # type: ignore[operator]
        await acks_grow(members, 100)
    finally:
        os.kill(paused.process.pid, signal.SIGCONT)
    # m2 finds its leases gone (its late appends are refused), then takes its shards back
    await wait_until(lambda: "shard lease lost" in paused.stderr, "m2 saw its leases lost")
    await wait_until(lambda: settled(names)(schema), "m2 back")  # type: ignore[operator]
    await acks_grow(members, 100)
    for name in names:
        await members.stop(name)
    events = await stored(schema)
    # nothing m2 decided was stored after the takeover: each aggregate's events were decided
    # by one member after another (m2, then its successor, then m2 again once handed back),
    # never by m2 in between its successor's
    for stream, runs in runs_per_stream(events).items():
        if "m2" in runs and len(runs) > 1:
            first = runs.index("m2")
            assert runs.count("m2") <= 2 and "m2" not in runs[first + 1 : -1], (stream, runs)
    check_acknowledged_stored_once(members.acks(), events)
    assert [e for w in members.started[:2] for e in w.errors()] == []


async def test_a_rolling_restart_under_steady_load_fails_no_ask(
    members: Members, schema: str
) -> None:
    names = ["m0", "m1", "m2"]
    await start_settled(members, schema, names)
    await acks_grow(members, 100)
    for name in names:
        stats = await members.stop(name)
        assert stats["conflicts_retried"] == 0
        await acks_grow(members, 50)  # the other two go on
        await members.start(name)
        await wait_until(lambda: settled(names)(schema), f"{name} back")  # type: ignore[operator]
        await acks_grow(members, 50)
    for name in names:
        await members.stop(name)
    assert members.errors() == []
    check_acknowledged_stored_once(members.acks(), await stored(schema))


async def test_a_connection_without_the_secret_gets_nothing_done(
    members: Members, schema: str
) -> None:
    from actorsource.cluster._protocol import Ask, encode_frame
    from actorsource.cluster._transport import Credentials, Peers

    worker = await members.start("m0", load=0)
    line = next(line for line in worker.output if line.startswith('{"ready"'))
    address = json.loads(line)["address"]
    ask = Ask(1, "Counter-x", "Add", {"amount": 1}, {}, "intruder-1")
    async with Peers(Credentials("test", b"not-the-secret-of-this-cluster", "intruder")) as peers:
        with pytest.raises(ClusterAuthError, match="wrong secret"):
            await peers.request(address, ask)
    # a request frame sent without any handshake: the connection is closed, nothing done
    host, _, port = address.rpartition(":")
    async with await anyio.connect_tcp(host, int(port)) as raw:
        await raw.receive()  # the server's hello
        await raw.send(encode_frame(ask))
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError)):
            while True:
                await raw.receive()
    await members.stop("m0")
    assert await stored(schema) == []
