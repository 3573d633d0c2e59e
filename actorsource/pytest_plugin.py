"""actorsource's pytest plugin: stores and runtimes as fixtures, for an application's tests.

pytest loads it by itself wherever actorsource is installed (the ``pytest11`` entry point); the
fixtures are async, for anyio's pytest plugin (``anyio_mode = "auto"`` in the pytest
configuration, or ``@pytest.mark.anyio`` on each test). Every fixture is fresh per test, and
named ``actorsource_*`` so that it never shadows a fixture of the project's own::

    async def test_a_deposit_is_stored(actorsource_runtime: Runtime) -> None:
        await actorsource_runtime.ref(Account, "a").ask(Deposit(5))
        assert (await actorsource_runtime.ref(Account, "a").state()).balance == 5

- ``actorsource_runtime``: an open :class:`~actorsource.Runtime` on a fresh in-memory store
  (the quick default); ``actorsource_sqlite_runtime`` on a SQLite file in the test's
  ``tmp_path``; ``actorsource_postgres_runtime`` on PostgreSQL, in a schema of its own that
  is dropped after the test.
- ``actorsource_store``: an open store of each kind in turn (memory, SQLite, PostgreSQL): a test
  that takes it runs three times. ``actorsource_memory_store``, ``actorsource_sqlite_store`` and
  ``actorsource_postgres_store`` are one kind each.
- ``actorsource_runtime_options``: the keyword arguments the runtime fixtures pass to
  ``Runtime`` (none); override it in a ``conftest.py`` to configure them.
- ``actorsource_postgres_dsn``: the PostgreSQL database, from the environment variable
  ``ACTORSOURCE_TEST_POSTGRES_DSN`` (a ``postgresql://`` URI); without it, the tests that need
  PostgreSQL are skipped with a line saying how to run them. Override it to hand the plugin a
  database of your own (a server started for the test session, say).

The runtime runs on asyncio: a test parametrized over other anyio backends is skipped there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from . import EventStore, Runtime

#: the environment variable naming the PostgreSQL database of the ``postgres`` fixtures
POSTGRES_DSN_VARIABLE = "ACTORSOURCE_TEST_POSTGRES_DSN"

#: why the PostgreSQL fixtures skip without a database (one line, saying how to run them)
NO_POSTGRES = (
    f"actorsource PostgreSQL fixtures need a test database: set {POSTGRES_DSN_VARIABLE} to a "
    "postgresql:// URI (each test gets a schema of its own there, dropped after it)"
)


@pytest.fixture
def _actorsource_asyncio(anyio_backend: Any) -> None:
    """Skip a test on another anyio backend (a plain fixture: before any async one runs)."""
    name = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]
    if name != "asyncio":
        pytest.skip(f"actorsource runs on asyncio, not on the {name!r} anyio backend")


@pytest.fixture
def actorsource_runtime_options() -> dict[str, Any]:
    """The keyword arguments the runtime fixtures pass to ``Runtime`` (override to change)."""
    return {}


@pytest.fixture
def actorsource_postgres_dsn() -> str:
    """The PostgreSQL test database (``ACTORSOURCE_TEST_POSTGRES_DSN``); skips without one."""
    dsn = os.environ.get(POSTGRES_DSN_VARIABLE, "")
    if not dsn:
        pytest.skip(NO_POSTGRES)
    return dsn


@contextlib.asynccontextmanager
async def _memory_store() -> AsyncIterator[EventStore]:
    from . import InMemoryEventStore

    async with InMemoryEventStore() as store:
        yield store


@contextlib.asynccontextmanager
async def _sqlite_store(tmp_path: Path) -> AsyncIterator[EventStore]:
    from . import SQLiteEventStore

    async with SQLiteEventStore(tmp_path / "actorsource.db") as store:
        yield store


@contextlib.asynccontextmanager
async def _postgres_store(dsn: str) -> AsyncIterator[EventStore]:
    if importlib.util.find_spec("asyncpg") is None:
        pytest.skip(
            "actorsource PostgreSQL fixtures need asyncpg: pip install 'actorsource[postgres]'"
        )
    from .stores.postgres import PostgresEventStore, drop_schema

    schema = f"actorsource_test_{uuid.uuid4().hex[:16]}"
    try:
        async with PostgresEventStore(dsn, schema=schema) as store:
            yield store
    finally:
        await drop_schema(dsn, schema)


@contextlib.asynccontextmanager
async def _runtime(store: EventStore, options: dict[str, Any]) -> AsyncIterator[Runtime]:
    from . import Runtime

    async with Runtime(store, **options) as runtime:
        yield runtime


@pytest.fixture
async def actorsource_memory_store(_actorsource_asyncio: None) -> AsyncIterator[EventStore]:
    """An open, empty :class:`~actorsource.InMemoryEventStore`."""
    async with _memory_store() as store:
        yield store


@pytest.fixture
async def actorsource_sqlite_store(
    _actorsource_asyncio: None, tmp_path: Path
) -> AsyncIterator[EventStore]:
    """An open :class:`~actorsource.SQLiteEventStore` on a new file in ``tmp_path``."""
    async with _sqlite_store(tmp_path) as store:
        yield store


@pytest.fixture
async def actorsource_postgres_store(
    _actorsource_asyncio: None, actorsource_postgres_dsn: str
) -> AsyncIterator[EventStore]:
    """An open :class:`~actorsource.PostgresEventStore` in a new schema, dropped after the
    test; skipped without a database (see ``actorsource_postgres_dsn``)."""
    async with _postgres_store(actorsource_postgres_dsn) as store:
        yield store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def actorsource_store(
    request: pytest.FixtureRequest, _actorsource_asyncio: None, tmp_path: Path
) -> AsyncIterator[EventStore]:
    """An open store of each kind in turn: memory, SQLite, PostgreSQL (skipped without a
    database). A test that takes it runs once per kind."""
    kind = request.param
    if kind == "memory":
        opened = _memory_store()
    elif kind == "sqlite":
        opened = _sqlite_store(tmp_path)
    else:
        # the fixture, not the variable: an override of it counts here too
        opened = _postgres_store(request.getfixturevalue("actorsource_postgres_dsn"))
    async with opened as store:
        yield store


@pytest.fixture
async def actorsource_runtime(
    actorsource_memory_store: EventStore, actorsource_runtime_options: dict[str, Any]
) -> AsyncIterator[Runtime]:
    """An open runtime on a fresh in-memory store (``runtime.store``)."""
    async with _runtime(actorsource_memory_store, actorsource_runtime_options) as runtime:
        yield runtime


@pytest.fixture
async def actorsource_sqlite_runtime(
    actorsource_sqlite_store: EventStore, actorsource_runtime_options: dict[str, Any]
) -> AsyncIterator[Runtime]:
    """An open runtime on a SQLite file in the test's ``tmp_path``."""
    async with _runtime(actorsource_sqlite_store, actorsource_runtime_options) as runtime:
        yield runtime


@pytest.fixture
async def actorsource_postgres_runtime(
    actorsource_postgres_store: EventStore, actorsource_runtime_options: dict[str, Any]
) -> AsyncIterator[Runtime]:
    """An open runtime on PostgreSQL, in a schema of its own (skipped without a database)."""
    async with _runtime(actorsource_postgres_store, actorsource_runtime_options) as runtime:
        yield runtime
