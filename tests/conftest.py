"""Shared fixtures: the anyio backend (asyncio only: aiosqlite is asyncio-bound) and stores.

The ``store`` fixture runs each test on every kind of store: memory, SQLite and PostgreSQL
(each test in a fresh schema, dropped afterwards). PostgreSQL is the database
``ACTORSOURCE_TEST_POSTGRES_DSN`` names (CI sets it: a server it names that cannot be reached
fails the run at once rather than skip), else a throwaway server this run starts from the
installed PostgreSQL when a collected test needs one (see ``postgres_server.py``); without
either, the PostgreSQL cases are skipped with one line saying how to enable them.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from actorsource import EventStore, InMemoryEventStore, SQLiteEventStore, TransactionalStore
from actorsource.stores._base import ClusterStore

from .postgres_server import ThrowawayServer, choose, find_bindir

_CHOICE = choose(os.environ, find_bindir)
#: the server this run starts, if it needs one (see pytest_collection_finish)
_SERVER = ThrowawayServer(Path(_CHOICE.value)) if _CHOICE.kind == "throwaway" else None
if _SERVER is not None:
    atexit.register(_SERVER.stop)  # also when the session ends before pytest_sessionfinish
#: a postgresql:// URI of a database the tests may create and drop schemas in ("": none)
POSTGRES_DSN = (
    _CHOICE.value if _CHOICE.kind == "dsn" else _SERVER.dsn if _SERVER is not None else ""
)
#: why the PostgreSQL tests are skipped ("": they run)
NO_POSTGRES = _CHOICE.value if _CHOICE.kind == "skip" else ""


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail the whole run at once if PostgreSQL was asked for but cannot be reached."""
    if _CHOICE.kind != "dsn":
        return
    try:
        run_sync(_ping(POSTGRES_DSN))
    except Exception as exc:
        from actorsource.stores.postgres import redact_dsn

        detail = " ".join(str(exc).split())
        pytest.exit(
            f"ACTORSOURCE_TEST_POSTGRES_DSN is set, but PostgreSQL at "
            f"{redact_dsn(POSTGRES_DSN)} cannot be used: {type(exc).__name__}: {detail}",
            returncode=3,
        )


def _needs_postgres(item: pytest.Item) -> bool:
    if "postgres_dsn" in getattr(item, "fixturenames", ()):
        return True
    if item.get_closest_marker("postgres") is not None:
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "postgres" in callspec.params.values()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the throwaway server once the tests are known, if one of them needs it."""
    if _SERVER is None or session.config.option.collectonly:
        return
    if not any(_needs_postgres(item) for item in session.items):
        return
    try:
        _SERVER.start()
    except Exception as exc:
        _SERVER.stop()
        pytest.exit(
            f"PostgreSQL is installed (at {_SERVER.bindir}) but a throwaway server for the "
            f"tests could not start: {exc}; set ACTORSOURCE_TEST_POSTGRES_DSN to a test "
            "database, or ACTORSOURCE_TEST_POSTGRES=0 to skip the PostgreSQL tests",
            returncode=3,
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _SERVER is not None:
        _SERVER.stop()


async def _ping(dsn: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(dsn, timeout=10)
    await conn.close()


def run_sync(coroutine: Any) -> Any:
    """Run a coroutine to completion on a loop of its own, in a thread of its own.

    For fixtures' set-up and tear-down, which may run while the test's loop exists.
    """
    outcome: list[Any] = []

    def work() -> None:
        try:
            outcome.append((True, asyncio.run(coroutine)))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def postgres_schema(tmp_path: Path) -> str:
    """The schema a test's PostgreSQL stores use (the same for every store of one test)."""
    return "t_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:24]


async def drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def transactional(store: EventStore) -> TransactionalStore:
    """Return ``store`` as the TransactionalStore its capabilities declare (every store here
    is one)."""
    found = store.capabilities().transactional
    assert found is store, f"{store!r} declares no read-model transactions"
    return found


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def postgres_dsn() -> str:
    """The test database's DSN; skips the test when none is configured."""
    if not POSTGRES_DSN:
        pytest.skip(NO_POSTGRES)
    return POSTGRES_DSN


SKIP_WITHOUT_POSTGRES = () if POSTGRES_DSN else (pytest.mark.skip(reason=NO_POSTGRES),)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Report every skip for want of PostgreSQL at this file, so that -ra shows them as one
    line ("SKIPPED [n] tests/conftest.py: PostgreSQL tests need ..."), not one per test."""
    report = yield
    if (
        NO_POSTGRES
        and report.skipped
        and isinstance(report.longrepr, tuple)
        and NO_POSTGRES in report.longrepr[2]
    ):
        report.longrepr = (__file__, None, report.longrepr[2])
    return report


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=SKIP_WITHOUT_POSTGRES)])
def store_kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    kind = str(request.param)
    yield kind
    if kind == "postgres":
        run_sync(drop_schema(POSTGRES_DSN, postgres_schema(tmp_path)))


def make_store(kind: str, tmp_path: Path) -> EventStore:
    """Return an unopened store of the given kind (each test gets a fresh database)."""
    if kind == "memory":
        return InMemoryEventStore()
    if kind == "sqlite":
        return SQLiteEventStore(tmp_path / "events.db")
    if kind == "postgres":
        from actorsource import PostgresEventStore

        return PostgresEventStore(POSTGRES_DSN, schema=postgres_schema(tmp_path))
    raise AssertionError(f"unknown store kind {kind}")


@pytest.fixture
async def store(store_kind: str, tmp_path: Path) -> AsyncIterator[EventStore]:
    """An open store of each kind."""
    async with make_store(store_kind, tmp_path) as opened:
        yield opened


@pytest.fixture(params=["memory", pytest.param("postgres", marks=SKIP_WITHOUT_POSTGRES)])
def cluster_kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each kind of store that keeps cluster tables (SQLite keeps none)."""
    kind = str(request.param)
    yield kind
    if kind == "postgres":
        run_sync(drop_schema(POSTGRES_DSN, postgres_schema(tmp_path)))


@pytest.fixture
async def cluster_store(cluster_kind: str, tmp_path: Path) -> AsyncIterator[EventStore]:
    """An open store of each kind that keeps cluster tables."""
    async with make_store(cluster_kind, tmp_path) as opened:
        yield opened


def cluster_tables(store: EventStore) -> ClusterStore:
    """The store's cluster tables (a test fails here if it has none)."""
    found = store.capabilities().cluster
    assert found is not None, f"{store!r} declares no cluster tables"
    return found
