"""The typed boundary to asyncpg (which ships no type hints), the driver's import, the
settings of every connection, and the helpers that open one connection for a task."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Protocol

from ..._errors import StoreError
from .dsn import _scrub, _secret_words, redact_dsn
from .schema import _SCHEMA_NAME

#: every connection: READ COMMITTED (the position mechanism relies on a fresh snapshot per
#: statement), a name in pg_stat_activity, no JIT (it costs hundreds of milliseconds on the first
#: large read and buys nothing for these short statements), and a bound on how long a client
#: that stalls inside a transaction (a frozen process holding the append lock while it decides a
#: batch with the facts) can keep every other writer of the schema waiting
_SERVER_SETTINGS: Final = {
    "application_name": "actorsource",
    "default_transaction_isolation": "read committed",
    "jit": "off",
    "idle_in_transaction_session_timeout": "30s",
}


class _Connection(Protocol):
    async def execute(self, query: str, *args: object) -> str: ...

    async def fetch(self, query: str, *args: object) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: object) -> Any: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...

    def transaction(self, *, isolation: str | None = None) -> AbstractAsyncContextManager[Any]: ...

    async def add_listener(self, channel: str, callback: Callable[..., object]) -> None: ...

    def add_termination_listener(self, callback: Callable[[Any], object]) -> None: ...

    def is_closed(self) -> bool: ...

    async def close(self, *, timeout: float | None = None) -> None: ...  # noqa: ASYNC109  # asyncpg's

    def terminate(self) -> None: ...


class _Pool(Protocol):
    def acquire(self) -> AbstractAsyncContextManager[_Connection]: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...


_driver_module: Any = None


def _driver() -> Any:
    """Return the asyncpg module, imported on first use."""
    global _driver_module  # noqa: PLW0603  # imported once, on the first store made
    if _driver_module is None:
        try:
            # imported here, so that importing actorsource never needs the driver
            import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415  # untyped: see _Connection
        except ImportError as exc:
            msg = (
                "PostgresEventStore needs the asyncpg driver, which is not installed: "
                "pip install 'actorsource[postgres]'"
            )
            raise ImportError(msg) from exc
        _driver_module = asyncpg
    return _driver_module


def _driver_errors(driver: Any, *more: type[BaseException]) -> tuple[type[BaseException], ...]:
    """What the driver raises when an operation fails (and ``more``); the store's edge maps
    each to StoreError.

    asyncpg's own errors have three roots: ``PostgresError`` (the server refused or failed),
    ``InterfaceError`` (a connection closed, a call made wrong) and ``InternalClientError``
    (its protocol's state, such as "another operation is in progress" on a connection that
    broke mid-statement while the server restarts); the socket's own are ``OSError`` and
    ``TimeoutError``.
    """
    return (
        OSError,
        TimeoutError,
        driver.PostgresError,
        driver.InterfaceError,
        driver.InternalClientError,
        *more,
    )


async def store_schemas(conn: _Connection) -> list[str]:
    """Return the schemas of the database that hold an actorsource store, by name."""
    rows = await conn.fetch(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'actorsource_schema' AND c.relkind IN ('r', 'p') "
        'ORDER BY n.nspname COLLATE "C"'
    )
    return [row[0] for row in rows]


async def server_facts(dsn: str) -> dict[str, str]:
    """Return the server's version and durability settings (for reports such as the bench).

    :raises StoreError: if the server cannot be reached, or ``dsn`` is malformed
    """
    driver = _driver()
    try:
        conn = await driver.connect(dsn, timeout=10.0)
        try:
            row = await conn.fetchrow(
                "SELECT current_setting('server_version'), current_setting('synchronous_commit'), "
                "current_setting('fsync')"
            )
        finally:
            await conn.close()
    # ValueError: a DSN the driver cannot parse (its message may quote a piece of it)
    except _driver_errors(driver, ValueError) as exc:
        detail = _scrub(" ".join(str(exc).split()), _secret_words(dsn))
        msg = f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {type(exc).__name__}: {detail}"
        raise StoreError(msg) from exc
    return {"server_version": row[0], "synchronous_commit": row[1], "fsync": row[2]}


async def drop_schema(dsn: str, schema: str) -> None:
    """Drop a store's schema with everything in it: its events are gone for good.

    For tools that make throwaway stores (the benchmark suite); never called by a store.

    :raises StoreError: if the server cannot be reached or refuses, or ``dsn`` is malformed
    """
    if not _SCHEMA_NAME.fullmatch(schema):
        msg = f"not a schema name a store uses: {schema!r}"
        raise ValueError(msg)
    driver = _driver()
    try:
        conn = await driver.connect(dsn, timeout=10.0)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    # ValueError: a DSN the driver cannot parse (its message may quote a piece of it)
    except _driver_errors(driver, ValueError) as exc:
        detail = _scrub(" ".join(str(exc).split()), _secret_words(dsn))
        msg = f"cannot drop schema {schema!r} at {redact_dsn(dsn)}: {type(exc).__name__}: {detail}"
        raise StoreError(msg) from exc
