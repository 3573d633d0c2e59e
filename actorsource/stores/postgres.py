"""The PostgreSQL event store: several machines, one database.

Design (the SQLite store's, carried over to a server):

- **Group commit.** One writer task per store owns a write connection. Every append pending at
  the same moment goes into one transaction, sent as one statement: the rows of all of them as
  arrays, inserted by one ``INSERT ... SELECT FROM unnest(...)`` in the schema's
  ``actorsource_append`` function. A batch costs one round trip and one WAL flush however many
  appends it holds.
- **Gap-free positions in commit order.** Sequences cannot give them: a sequence value is taken
  before commit, so position 10 can become visible before 9, and a reader that has seen 10 would
  skip 9 for good. Instead every appending transaction first takes a transaction-level advisory
  lock (``pg_advisory_xact_lock``, one key per schema), and only then reads ``max(position)`` and
  inserts after it. The lock is held until the transaction has committed and become visible, so
  appending transactions commit one after another, each numbering its events after everything
  committed before it; a rolled-back transaction takes no position. A reader therefore always
  sees a prefix ``1..n`` of positions, never a hole that fills later. With group commit one
  transaction per batch takes the lock: the cost is one lock per batch, not per event.
  (The lock and the ``max`` are separate statements under READ COMMITTED, so the ``max`` sees
  every commit that came before the lock; the store forces READ COMMITTED on its connections.)
- **Per-append outcomes.** The writer plans a batch from what it knows: the version each append
  expects, or the stream's head it wrote last. The function checks that plan under the lock (each
  stream of the batch is exactly at the planned version), and the unique constraints check the
  event ids. If anything was stale the statement fails as a whole, nothing is stored, and the
  writer decides the batch again with the facts read under the lock in one transaction (each
  stream's head, which event ids exist): a conflict then fails only its append
  (``ConcurrencyError`` with the actual version), a duplicate event id only its append. A batch
  that the server still refuses for another reason is retried one append per transaction, so that
  one bad append fails alone.
- **JSONB.** ``data`` and ``metadata`` are JSONB, so that they can be queried in SQL. JSONB does
  not keep every JSON text as it was: its numbers are ``numeric`` (``1e+16`` comes back as the
  integer ``10000000000000000``, ``-0.0`` as ``0.0``) and it cannot hold a NUL character. For the
  rare event whose JSON would change, the exact text is also kept in ``data_text`` /
  ``metadata_text`` (and ``data`` is NULL if it holds a NUL), and reads prefer it. What is read
  is always equal to what was appended, value for value and type for type (only the order of an
  object's keys is JSONB's, which JSON gives no meaning).
- **Reads** use a connection pool, in pages by key (version or position), so a slow consumer of
  ``read_all`` never holds a connection. Every statement is prepared once per connection
  (asyncpg's statement cache).
- **LISTEN/NOTIFY.** The append function calls ``pg_notify`` with the new head position; Postgres
  delivers it at commit. Each store keeps one listening connection, so ``wait_for_events`` wakes
  in every process as soon as any process commits. Polling (the timeout) remains the fallback,
  for instance while the listening connection reconnects.

Only this module imports the driver (asyncpg), and only when a store is made: ``import
actorsource`` works without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Final, Protocol
from urllib.parse import unquote

import attrs

from .._errors import ConcurrencyError, IncompatibleStoreError, StoreError
from .._records import AppendResult, JSONDict, NewEvent, SnapshotRecord, StoredEvent, StreamInfo
from ._base import (
    MAX_VERSION,
    HeadWatch,
    KnownHeads,
    StoreCapabilities,
    StoreLifecycle,
    check_append,
    check_checkpoint,
    check_command_ids,
    check_filters,
    check_snapshot,
    check_stream_id,
    check_time,
    encode_json,
    encode_snapshot_state,
    event_data,
    event_data_of,
    prior_append,
    retry_start,
    snapshot_record,
    stored_event,
)

logger = logging.getLogger("actorsource.stores.postgres")

#: the schema version this code writes and reads (the ``actorsource_schema`` table holds it)
SCHEMA_VERSION: Final = 1

#: what a ``schema=`` name may be: a plain lower-case identifier, usable unquoted in SQL
_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")

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

#: JSON text that JSONB would not give back as it was: NUL (JSONB refuses it), a number with an
#: exponent (``numeric`` prints ``1e+16`` as an integer) and negative zero (``numeric`` has none).
#: Numbers are matched as tokens (after ``:``, ``,`` or ``[`` in orjson's compact text), so that
#: the hex digits of the UUIDs every event's metadata holds ("0195e3...") do not count as
#: exponents; a string that happens to look like one only costs an exact copy.
_NOT_JSONB_EXACT: Final = re.compile(r"\\u0000|[:,\[]-?[0-9][0-9.]*[eE]|[:,\[]-0\.0(?![0-9])")

_COLUMNS: Final = (
    "stream_id, version, position, type, coalesce(data_text, data::text), "
    "coalesce(metadata_text, metadata::text), event_id, recorded_at"
)


# -- the typed boundary: the part of asyncpg this module uses (asyncpg ships no type hints) --------


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


# -- the schema ----------------------------------------------------------------------------------


def _migrations(schema: str, append_lock: int, channel: str) -> dict[int, list[str]]:
    """The statements that take a schema from version ``n - 1`` to ``n``, by ``n``."""
    s = f'"{schema}"'
    return {
        1: [
            f"""CREATE TABLE {s}.actorsource_schema (
                singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
                version    integer     NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now()
            )""",
            f"""CREATE TABLE {s}.events (
                position      bigint      PRIMARY KEY CHECK (position > 0),
                stream_id     text        NOT NULL,
                version       bigint      NOT NULL CHECK (version > 0),
                type          text        NOT NULL,
                data          jsonb,
                metadata      jsonb,
                event_id      text        NOT NULL UNIQUE,
                recorded_at   timestamptz NOT NULL,
                data_text     text,
                metadata_text text,
                UNIQUE (stream_id, version),
                CHECK (data IS NOT NULL OR data_text IS NOT NULL),
                CHECK (metadata IS NOT NULL OR metadata_text IS NOT NULL)
            )""",
            f"""COMMENT ON COLUMN {s}.events.position IS
                'global, gap-free, in commit order (appends serialize on an advisory lock)'""",
            f"""COMMENT ON COLUMN {s}.events.data_text IS
                'the exact JSON text, only when JSONB would change it (a NUL character, which '
                'JSONB cannot hold and then data is NULL; an exponent; negative zero)'""",
            f"""COMMENT ON COLUMN {s}.events.metadata_text IS
                'the exact JSON text, only when JSONB would change it (see data_text)'""",
            f"""CREATE TABLE {s}.snapshots (
                stream_id      text        NOT NULL,
                version        bigint      NOT NULL,
                schema_version bigint      NOT NULL,
                state          jsonb,
                state_text     text,
                recorded_at    timestamptz NOT NULL,
                PRIMARY KEY (stream_id, version),
                CHECK (state IS NOT NULL OR state_text IS NOT NULL)
            )""",
            f"""CREATE TABLE {s}.checkpoints (
                name       text        PRIMARY KEY,
                position   bigint      NOT NULL,
                updated_at timestamptz NOT NULL
            )""",
            # the whole append of a batch, in one statement (see the module docstring)
            f"""CREATE FUNCTION {s}.actorsource_append(
                p_stream_ids text[], p_versions bigint[], p_types text[],
                p_data text[], p_data_text text[], p_metadata text[], p_metadata_text text[],
                p_event_ids text[], p_check_streams text[], p_check_heads bigint[],
                p_snapshot_streams text[], p_snapshot_versions bigint[],
                p_snapshot_schema_versions bigint[], p_snapshot_states text[],
                p_snapshot_state_texts text[],
                OUT first_position bigint, OUT committed_at timestamptz
            ) LANGUAGE plpgsql VOLATILE AS $fn$
            DECLARE
                v_head  bigint;
                v_stale boolean;
            BEGIN
                IF current_setting('transaction_isolation') <> 'read committed' THEN
                    RAISE EXCEPTION 'actorsource appends need READ COMMITTED, not %',
                        current_setting('transaction_isolation');
                END IF;
                -- appending transactions take turns, each until its commit is visible
                PERFORM pg_advisory_xact_lock({append_lock});
                -- a new statement: a fresh snapshot, holding every append committed before the
                -- lock was granted; is every stream at the version the batch was planned for?
                SELECT (SELECT coalesce(max(e.position), 0) FROM {s}.events e),
                       EXISTS (
                           SELECT 1 FROM unnest(p_check_streams, p_check_heads)
                                AS c(stream_id, head)
                           WHERE EXISTS (
                                   SELECT 1 FROM {s}.events e
                                   WHERE e.stream_id = c.stream_id AND e.version = c.head + 1)
                              OR (c.head > 0 AND NOT EXISTS (
                                   SELECT 1 FROM {s}.events e
                                   WHERE e.stream_id = c.stream_id AND e.version = c.head)))
                  INTO v_head, v_stale;
                IF v_stale THEN
                    RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
                        MESSAGE = 'actorsource: a stream is not at the version the append '
                                  'was planned for';
                END IF;
                first_position := v_head + 1;
                committed_at := clock_timestamp();
                INSERT INTO {s}.events (position, stream_id, version, type, data, data_text,
                                        metadata, metadata_text, event_id, recorded_at)
                SELECT v_head + r.n, r.stream_id, r.version, r.type, r.data::jsonb, r.data_text,
                       r.metadata::jsonb, r.metadata_text, r.event_id, committed_at
                FROM unnest(p_stream_ids, p_versions, p_types, p_data, p_data_text, p_metadata,
                            p_metadata_text, p_event_ids)
                     WITH ORDINALITY AS r(stream_id, version, type, data, data_text, metadata,
                                          metadata_text, event_id, n);
                -- delivered to every listener when (and only if) this transaction commits
                IF cardinality(p_event_ids) > 0 THEN
                    PERFORM pg_notify('{channel}', (v_head + cardinality(p_event_ids))::text);
                END IF;
                IF cardinality(p_snapshot_streams) > 0 THEN
                    INSERT INTO {s}.snapshots (stream_id, version, schema_version, state,
                                               state_text, recorded_at)
                    SELECT r.stream_id, r.version, r.schema_version, r.state::jsonb,
                           r.state_text, committed_at
                    FROM unnest(p_snapshot_streams, p_snapshot_versions,
                                p_snapshot_schema_versions, p_snapshot_states,
                                p_snapshot_state_texts)
                         AS r(stream_id, version, schema_version, state, state_text)
                    ON CONFLICT (stream_id, version) DO UPDATE SET
                        schema_version = excluded.schema_version, state = excluded.state,
                        state_text = excluded.state_text, recorded_at = excluded.recorded_at;
                END IF;
            END
            $fn$""",
        ],
    }


def _lock_key(purpose: str, schema: str) -> int:
    """A signed 64-bit advisory lock key for ``purpose`` on ``schema``."""
    digest = hashlib.sha256(f"actorsource {purpose} {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _channel(schema: str) -> str:
    """The NOTIFY channel of a schema (a channel name has at most 63 bytes)."""
    channel = f"actorsource_{schema}"
    if len(channel) > 63:
        channel = f"actorsource_{hashlib.sha256(schema.encode()).hexdigest()[:40]}"
    return channel


#: a key whose value is a secret (``password``, ``sslpassword``), in a query string or a
#: key=value DSN
_SECRET_KEY: Final = re.compile(r"\w*password\s*=\s*", re.IGNORECASE)


def _secret_spans(dsn: str) -> list[tuple[int, int]]:
    """Return the (start, end) spans of ``dsn`` that may hold a secret, merged and in order.

    Found without parsing, so that a DSN that cannot be parsed, or that a parser splits in the
    wrong places (an unencoded ``/ ? # @`` in its password), hides its password all the same:
    everything after the first ``:`` following the scheme's ``//`` up to the last ``@`` (the
    password, wherever it ends), and everything after a ``password=`` key to the end of the DSN
    (its value may hold an unencoded ``&``, ``#`` or space).
    """
    spans: list[tuple[int, int]] = []
    scheme = dsn.find("://")
    start = 0 if scheme < 0 else scheme + 3
    at = dsn.rfind("@", start)
    colon = dsn.find(":", start, max(at, start))
    if colon >= 0 and colon + 1 < at:
        spans.append((colon + 1, at))
    key = _SECRET_KEY.search(dsn)
    if key is not None and key.end() < len(dsn):
        spans.append((key.end(), len(dsn)))
    merged: list[tuple[int, int]] = []
    for begin, end in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with each part that may hold a password replaced by ``***``.

    Whatever the DSN's shape: ``postgresql://app:***@host/db``,
    ``postgresql://app@host/db?password=***``, ``host=db password=***``; a malformed DSN
    (``postgresql://app:***@[::1/db``) is hidden in the same places.
    """
    parts: list[str] = []
    shown = 0
    for begin, end in _secret_spans(dsn):
        parts += [dsn[shown:begin], "***"]
        shown = end
    parts.append(dsn[shown:])
    return "".join(parts)


def _secret_words(dsn: str) -> frozenset[str]:
    """Return the words of ``dsn``'s secret parts, as written and percent-decoded, casefolded."""
    words: set[str] = set()
    for begin, end in _secret_spans(dsn):
        secret = dsn[begin:end]
        for text in (secret, unquote(secret)):
            words.update(word.casefold() for word in re.findall(r"\w+", text))
    return frozenset(words)


def _scrub(detail: str, secret_words: frozenset[str]) -> str:
    """Return a driver's error ``detail`` with every word of the DSN's secret parts hidden.

    A driver's message may quote a piece of a malformed DSN (``invalid literal for int():
    's3c'``, when a password's ``/`` made its start the port), so a password can leak through
    the detail as well as through the DSN itself.
    """
    if not secret_words:
        return detail
    return re.sub(
        r"\w+", lambda word: "***" if word[0].casefold() in secret_words else word[0], detail
    )


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


def _check_no_nul(what: str, value: str) -> None:
    if "\x00" in value:
        msg = f"{what} cannot hold NUL characters in PostgreSQL (text refuses them), got {value!r}"
        raise ValueError(msg)


def _jsonb_columns(text: str, value: object) -> tuple[str | None, str | None]:
    """Return what goes into a JSONB column and its exact-text column for JSON ``text``."""
    if len(text) < 3 or not _NOT_JSONB_EXACT.search(text):
        return text, None  # the common case: JSONB gives it back as it was
    if "\\u0000" in text and _has_nul(value):
        return None, text
    return text, text


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


# -- the writer's work -----------------------------------------------------------------------------

#: one event's row: (type, data for JSONB, exact data, metadata for JSONB, exact metadata, id)
_Row = tuple[str, str | None, str | None, str | None, str | None, str]


@attrs.define(slots=True)
class _Append:
    stream_id: str
    expected_version: int | None
    rows: list[_Row]
    future: asyncio.Future[AppendResult]


@attrs.define(slots=True)
class _SaveSnapshot:
    #: (stream_id, version, schema_version, state for JSONB, exact state)
    row: tuple[str, int, int, str | None, str | None]
    future: asyncio.Future[None]


_Op = _Append | _SaveSnapshot


class _NeedFacts(Exception):
    """The writer does not know enough to plan a batch without reading under the lock."""


@attrs.define(slots=True)
class _Plan:
    """A batch decided: the rows to insert (as columns) and each append's outcome."""

    stream_ids: list[str] = attrs.Factory(list)
    versions: list[int] = attrs.Factory(list)
    types: list[str] = attrs.Factory(list)
    data: list[str | None] = attrs.Factory(list)
    data_text: list[str | None] = attrs.Factory(list)
    metadata: list[str | None] = attrs.Factory(list)
    metadata_text: list[str | None] = attrs.Factory(list)
    event_ids: list[str] = attrs.Factory(list)
    #: each stream the batch appends to, and the version it must be at before the batch
    check_streams: list[str] = attrs.Factory(list)
    check_heads: list[int] = attrs.Factory(list)
    #: the snapshots to save (a later save of one stream and version replaces an earlier one)
    snapshots: dict[tuple[str, int], tuple[str, int, int, str | None, str | None]] = attrs.Factory(
        dict
    )
    #: per op: an append's (offset of its first row, its last version), or the error it fails
    #: with; None for a snapshot
    outcomes: list[tuple[int, int] | AppendResult | BaseException | None] = attrs.Factory(list)
    #: the head of each stream the batch appended to, after it
    heads: dict[str, int] = attrs.Factory(dict)


def _plan(batch: Sequence[_Op], heads: Mapping[str, int], stored: set[str] | None) -> _Plan:
    """Decide a batch: versions, conflicts and duplicates, one outcome per op.

    With ``stored`` (the batch's event ids found in the table) ``heads`` are facts read under
    the lock, and the plan is final. Without, ``heads`` are what the writer last saw, and an
    append's expected version is trusted as its stream's head: the append function checks
    every planned head under the lock, and the unique constraints every event id.

    :raises _NeedFacts: if an append has no expected version and its stream's head is unknown
    """
    plan = _Plan()
    running: dict[str, int] = {}
    used: set[str] = set()
    for op in batch:
        if isinstance(op, _SaveSnapshot):
            plan.snapshots[op.row[:2]] = op.row
            plan.outcomes.append(None)
            continue
        stream_id, expected = op.stream_id, op.expected_version
        head = running.get(stream_id)
        if head is None:
            head = heads.get(stream_id) if stored is not None or expected is None else expected
            if head is None:
                raise _NeedFacts
            running[stream_id] = head
        if expected is not None and expected != head:
            # a fact (read under the lock), or an earlier append of this batch moved the stream:
            # final either way, as the batch commits whole or not at all
            plan.outcomes.append(ConcurrencyError(stream_id, expected, head))
            continue
        ids = [row[5] for row in op.rows]
        refused = _refused_ids(stream_id, ids, used, stored)
        if refused is not None:
            plan.outcomes.append(refused)
            continue
        if stream_id not in plan.heads:
            plan.check_streams.append(stream_id)
            plan.check_heads.append(head)
        offset = len(plan.event_ids)
        for i, (kind, data, data_text, meta, meta_text, event_id) in enumerate(op.rows):
            plan.stream_ids.append(stream_id)
            plan.versions.append(head + i + 1)
            plan.types.append(kind)
            plan.data.append(data)
            plan.data_text.append(data_text)
            plan.metadata.append(meta)
            plan.metadata_text.append(meta_text)
            plan.event_ids.append(event_id)
        head += len(op.rows)
        running[stream_id] = plan.heads[stream_id] = head
        used.update(ids)
        plan.outcomes.append((offset, head))
    if stored is not None:
        plan.heads = running  # facts, for the streams that failed too
    return plan


def _refused_ids(
    stream_id: str, ids: list[str], used: set[str], stored: set[str] | None
) -> StoreError | None:
    """The error for an append whose event ids repeat or already exist, or None."""
    seen: set[str] = set()
    for event_id in ids:
        if event_id in seen:
            msg = f"event id {event_id!r} appears twice in one append to {stream_id!r}"
            break
        seen.add(event_id)
    else:
        taken = next(
            (i for i in ids if i in used or (stored is not None and i in stored)),
            None,
        )
        if taken is None:
            return None
        msg = f"event id {taken!r} is already stored (appending to {stream_id!r})"
    return StoreError(f"{msg}; nothing of this append was stored")


class _Sent:
    """Whether a batch's writing statement went to the server (its outcome is then unknown
    when the connection fails)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False


class PostgresEventStore(StoreLifecycle):
    """An event store in a PostgreSQL schema (tables ``events``, ``snapshots``, ``checkpoints``).

    Several runtimes, processes and machines may use one schema at once: appends take turns on
    an advisory lock, so positions are gap-free in commit order, and every append checks its
    expected version. The schema and its tables are created on first open.

    :param dsn: a ``postgresql://`` URI (asyncpg's format), for example
        ``postgresql://user:password@host:5432/dbname`` or
        ``postgresql:///dbname?host=/var/run/postgresql`` for the local socket
    :param schema: the PostgreSQL schema holding the store's tables (created if missing), so
        that tenants or tests can be kept apart in one database: a lower-case identifier
    :param pool_size: the most connections readers use at once (besides the writer's and the
        listener's)
    :param max_batch: the most appends one transaction takes
    :param read_page_size: rows fetched per round trip when reading
    :param known_heads: how many stream heads the writer remembers (for appends that give no
        expected version)
    :param connect_timeout: seconds to wait for a connection
    :raises ImportError: if asyncpg is not installed (``pip install 'actorsource[postgres]'``)
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "actorsource",
        pool_size: int = 10,
        max_batch: int = 1000,
        read_page_size: int = 2000,
        known_heads: int = 100_000,
        connect_timeout: float = 10.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            msg = f"dsn must be a non-empty str (a postgresql:// URI), got {dsn!r}"
            raise ValueError(msg)
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            msg = (
                "schema must be a lower-case identifier of at most 63 characters (letters, "
                f"digits and '_', not starting with a digit), got {schema!r}"
            )
            raise ValueError(msg)
        for name, value in (
            ("pool_size", pool_size),
            ("max_batch", max_batch),
            ("read_page_size", read_page_size),
            ("known_heads", known_heads),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                msg = f"{name} must be an int >= 1, got {value!r}"
                raise ValueError(msg)
        self._driver = _driver()
        self._errors = _driver_errors(self._driver)
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self.max_batch = max_batch
        self.read_page_size = read_page_size
        self.connect_timeout = connect_timeout
        self._where = redact_dsn(dsn)
        self._secret_words = _secret_words(dsn)
        self._append_lock = _lock_key("append", schema)
        self._channel = _channel(schema)
        self._sql = _Statements(schema)
        self._writer: _Connection | None = None
        self._listener: _Connection | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._pool: _Pool | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._pending: list[_Op] = []
        # when the oldest pending write was queued, and when the batch in commit was
        self._pending_since: float | None = None
        self._committing_since: float | None = None
        self._wakeup = asyncio.Event()
        self._closing = False
        # stream id -> head version, as last written or read under the lock by this writer
        self._heads = KnownHeads(known_heads)
        #: number of transactions committed by the writer (a batch is one transaction)
        self.batches_committed = 0
        self._watch = HeadWatch()

    def __repr__(self) -> str:
        return f"PostgresEventStore({self._where!r}, schema={self.schema!r})"

    # -- lifecycle -----------------------------------------------------------------------------

    async def _open(self) -> None:
        self._closing = False
        try:
            self._writer = await self._connect()
            await self._migrate(self._writer)
            try:
                self._pool = await self._driver.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=self.connect_timeout,
                    server_settings=_SERVER_SETTINGS,
                )
            except Exception as exc:
                raise self._connect_error(exc) from exc
            await self._listen()
            self._watch.advance(await self._head())
        except BaseException:
            await self._close_connections()
            raise
        self._wakeup = asyncio.Event()
        self._writer_task = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"actorsource writer {self._where} {self.schema}"
        )

    async def _connect(self) -> _Connection:
        try:
            conn: _Connection = await self._driver.connect(
                self.dsn, timeout=self.connect_timeout, server_settings=_SERVER_SETTINGS
            )
        except Exception as exc:
            raise self._connect_error(exc) from exc
        return conn

    def _connect_error(self, exc: Exception) -> StoreError:
        detail = _scrub(" ".join(str(exc).split()), self._secret_words) or type(exc).__name__
        msg = f"cannot connect to PostgreSQL at {self._where}: {type(exc).__name__}: {detail}"
        return StoreError(msg)

    async def _migrate(self, conn: _Connection) -> None:
        """Create the schema, or bring it to this version; refuse what is not ours or newer."""
        version = await self._schema_version(conn)
        if version == SCHEMA_VERSION:
            return
        try:
            async with conn.transaction():
                # openers that race for a new schema take turns; the second finds it made
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1)", _lock_key("migrate", self.schema)
                )
                version = await self._schema_version(conn)
                if version == SCHEMA_VERSION:
                    return
                if version == 0:
                    exists = await conn.fetchval(
                        "SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema
                    )
                    if not exists:  # IF NOT EXISTS would still need the right to create one
                        await conn.execute(f'CREATE SCHEMA "{self.schema}"')
                steps = _migrations(self.schema, self._append_lock, self._channel)
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in steps[step]:
                        await conn.execute(statement)
                await conn.execute(
                    f'INSERT INTO "{self.schema}".actorsource_schema (version) VALUES ($1) '
                    "ON CONFLICT (singleton) DO UPDATE SET version = excluded.version, "
                    "updated_at = now()",
                    SCHEMA_VERSION,
                )
        except StoreError:
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split())
            msg = (
                f"cannot create or upgrade the actorsource schema {self.schema!r} at "
                f"{self._where}: {type(exc).__name__}: {detail}"
            )
            raise StoreError(msg) from exc
        logger.info("schema %r at version %d", self.schema, SCHEMA_VERSION, extra={"from": version})

    async def _schema_version(self, conn: _Connection) -> int:
        """Return the schema's version (0: no store yet); raise if it is not ours or newer."""
        try:
            rows = await conn.fetch(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = $1 AND c.relname = ANY($2::text[])",
                self.schema,
                ["actorsource_schema", "events", "snapshots", "checkpoints"],
            )
            tables = {row[0] for row in rows}
            if "actorsource_schema" not in tables:
                if tables:
                    msg = (
                        f"schema {self.schema!r} at {self._where} is not an actorsource store: it "
                        f"holds tables {', '.join(sorted(tables))} and no actorsource_schema "
                        "table; refusing to touch it (choose another schema=)"
                    )
                    raise IncompatibleStoreError(msg)
                return 0
            version = await conn.fetchval(
                f'SELECT max(version) FROM "{self.schema}".actorsource_schema'
            )
        except StoreError:
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split())
            msg = f"cannot read schema {self.schema!r} at {self._where}: {detail}"
            raise StoreError(msg) from exc
        if version is None:
            msg = (
                f"schema {self.schema!r} at {self._where} has an empty actorsource_schema table, "
                "so its version is unknown; refusing to touch it"
            )
            raise IncompatibleStoreError(msg)
        if version > SCHEMA_VERSION:
            msg = (
                f"schema {self.schema!r} at {self._where} has actorsource schema version "
                f"{version}, newer than this version of actorsource reads ({SCHEMA_VERSION}); "
                "upgrade actorsource"
            )
            raise IncompatibleStoreError(msg)
        return int(version)

    async def _close(self) -> None:
        self._closing = True
        self._wakeup.set()
        task = self._writer_task
        if task is not None:
            # the writer commits every pending write before it returns; wait() rather than
            # await: a close() that is cancelled must not cancel the writes callers wait for
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                logger.error("the writer task failed", exc_info=task.exception())
        await self._close_connections()

    async def _close_connections(self) -> None:
        self._closing = True
        listening = self._listener_task
        if listening is not None:
            listening.cancel()
            await asyncio.wait([listening])
        self._listener_task = None
        for conn in (self._writer, self._listener):
            if conn is not None and not conn.is_closed():
                try:
                    await conn.close(timeout=5.0)
                except Exception:
                    conn.terminate()
        self._writer = self._listener = None
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 10.0)
            except Exception:
                pool.terminate()

    # -- LISTEN/NOTIFY ---------------------------------------------------------------------------

    async def _listen(self) -> None:
        conn = await self._connect()
        try:
            await conn.add_listener(self._channel, self._notified)
        except self._errors as exc:
            conn.terminate()
            detail = " ".join(str(exc).split())
            msg = f"cannot LISTEN on PostgreSQL at {self._where}: {type(exc).__name__}: {detail}"
            raise StoreError(msg) from exc
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._listener_lost)
        self._listener = conn

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            head = int(payload)
        except ValueError:
            return
        self._watch.advance(head)

    def _listener_lost(self, _conn: object) -> None:
        if self._closing or self._listener_task is not None:
            return
        logger.warning("the LISTEN connection to %s closed; reconnecting", self._where)
        self._listener = None
        self._listener_task = asyncio.get_running_loop().create_task(
            self._relisten(), name=f"actorsource listener {self._where} {self.schema}"
        )

    async def _relisten(self) -> None:
        """Reconnect the listening connection (waiters poll meanwhile), backing off."""
        delay = 0.1
        try:
            while not self._closing:
                await asyncio.sleep(delay)
                try:
                    await self._listen()
                    # what was committed while nobody listened
                    self._watch.advance(await self._head())
                except StoreError as exc:
                    delay = min(delay * 2, 5.0)
                    logger.warning("cannot listen again yet: %s", exc)
                    continue
                return
        finally:
            self._listener_task = None

    # -- writing --------------------------------------------------------------------------------

    async def append(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> AppendResult:
        """Append events atomically, durable when this returns (see :class:`EventStore`)."""
        return await self.submit_append(stream_id, expected_version, events)

    def submit_append(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> asyncio.Future[AppendResult]:
        """Queue an append for the writer's next transaction; the future resolves at commit.

        The runtime's fast path: no coroutine per append. Bad arguments raise here, at once.
        """
        self._check_open()
        check_append(stream_id, expected_version, events)
        _check_no_nul("a stream id", stream_id)
        rows: list[_Row] = []
        for e in events:
            _check_no_nul("an event type", e.type)
            _check_no_nul("an event id", e.event_id)
            data = encode_json(e.data, "data", e)
            meta = encode_json(e.metadata, "metadata", e)
            rows.append(
                (
                    e.type,
                    *_jsonb_columns(data, e.data),
                    *_jsonb_columns(meta, e.metadata),
                    e.event_id,
                )
            )
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._enqueue(_Append(stream_id, expected_version, rows, future))
        return future

    def _enqueue(self, op: _Op) -> None:
        task = self._writer_task
        if task is None or task.done():
            # nobody would ever answer the write
            msg = f"{self!r} cannot write: its writer task has stopped; make a new store"
            raise StoreError(msg)
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(op)
        self._wakeup.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    batch = self._pending[: self.max_batch]
                    del self._pending[: self.max_batch]
                    self._committing_since = self._pending_since
                    self._pending_since = time.monotonic() if self._pending else None
                    try:
                        await self._commit(batch)
                    finally:
                        self._committing_since = None
                if self._closing and not self._pending:
                    return
        finally:
            # only if the writer was stopped from outside (cancelled): fail what nobody will write
            pending, self._pending = self._pending, []
            for op in pending:
                if not op.future.done():
                    msg = f"{self!r} stopped writing before this write; nothing of it was stored"
                    op.future.set_exception(StoreError(msg))

    async def _commit(self, batch: list[_Op]) -> None:
        sent = _Sent()
        try:
            results, heads, head_position = await self._commit_batch(batch, sent)
        except Exception as exc:
            self._heads.clear()  # what we believed about stream heads may be wrong now
            lost = self._lost_connection(exc)
            if lost:
                self._drop_writer()
            detail = " ".join(str(exc).split())
            if lost and sent.value:
                msg = (
                    f"the connection to PostgreSQL at {self._where} failed while committing "
                    f"{len(batch)} write(s): {type(exc).__name__}: {detail}; they may or may "
                    "not be stored"
                )
            else:
                msg = (
                    f"PostgreSQL at {self._where} failed to commit {len(batch)} write(s): "
                    f"{type(exc).__name__}: {detail}; nothing of them was stored"
                )
            logger.error(
                "batch commit failed",
                extra={"dsn": self._where, "writes": len(batch), "error": detail},
            )
            for op in batch:
                if not op.future.done():
                    # one error object per caller: a shared one would collect every caller's
                    # traceback
                    error = StoreError(msg)
                    error.__cause__ = exc
                    op.future.set_exception(error)
            return
        except BaseException:
            # the writer was cancelled while the batch was with the server
            self._heads.clear()
            self._drop_writer()
            for op in batch:
                if not op.future.done():
                    msg = (
                        f"{self!r} stopped writing while committing this write; it may or may "
                        "not be stored"
                    )
                    op.future.set_exception(StoreError(msg))
            raise
        self._heads.remember(heads)
        for op, result in zip(batch, results, strict=True):
            if op.future.done():  # the caller was cancelled; the write stands regardless
                continue
            if isinstance(result, BaseException):
                op.future.set_exception(result)
            else:
                op.future.set_result(result)
        self._watch.advance(head_position)

    async def _commit_batch(
        self, batch: list[_Op], sent: _Sent
    ) -> tuple[list[Any], dict[str, int], int]:
        """Commit a batch; return each op's outcome, the heads learned, the head position.

        Raises if the batch failed as a whole (then nothing of it is stored, or, if the
        connection failed after the statement went out, the outcome is unknown).
        """
        conn = await self._writer_connection()
        try:
            plan: _Plan | None = _plan(batch, self._heads, None)
        except _NeedFacts:
            plan = None
        if plan is not None:
            try:
                first, at = await self._insert(conn, plan, sent)
            except Exception as exc:
                if self._lost_connection(exc):
                    raise
                # a stale head, an event id stored before, or a bad append: decide again with
                # the facts read under the lock
                sent.value = False
            else:
                self.batches_committed += 1
                return (*_resolve(plan, first, at), first + len(plan.event_ids) - 1)
        try:
            plan, first, at = await self._commit_with_facts(conn, batch, sent)
        except Exception as exc:
            if self._lost_connection(exc) or len(batch) == 1:
                raise
            sent.value = False
        else:
            return (*_resolve(plan, first, at), first + len(plan.event_ids) - 1)
        # the server refused the batch as a whole: one transaction per append, so that the
        # append it refuses fails alone
        results: list[Any] = []
        heads: dict[str, int] = {}
        head_position = 0
        for op in batch:
            try:
                plan, first, at = await self._commit_with_facts(conn, [op], sent)
            except Exception as exc:
                if self._lost_connection(exc):
                    raise
                sent.value = False
                detail = " ".join(str(exc).split())
                what = (
                    f"appending to {op.stream_id!r}"
                    if isinstance(op, _Append)
                    else f"saving a snapshot of {op.row[0]!r}"
                )
                error = StoreError(
                    f"{what} failed: {type(exc).__name__}: {detail}; nothing of it was stored"
                )
                error.__cause__ = exc
                results.append(error)
                continue
            found, learned = _resolve(plan, first, at)
            results.extend(found)
            heads.update(learned)
            if plan.event_ids:
                head_position = first + len(plan.event_ids) - 1
        return results, heads, head_position

    async def _commit_with_facts(
        self, conn: _Connection, batch: Sequence[_Op], sent: _Sent
    ) -> tuple[_Plan, int, datetime | None]:
        """Read the batch's stream heads and event ids under the lock, then commit the plan."""
        appends = [op for op in batch if isinstance(op, _Append)]
        streams = list(dict.fromkeys(op.stream_id for op in appends))
        ids = [row[5] for op in appends for row in op.rows]
        async with conn.transaction(isolation="read_committed"):
            await conn.execute(self._sql.lock, self._append_lock)
            facts = await conn.fetch(self._sql.facts, streams, ids)
            heads = {row[1]: int(row[2]) for row in facts if row[0] == 0}
            stored = {row[1] for row in facts if row[0] == 1}
            plan = _plan(batch, heads, stored)
            await self._find_prior_appends(conn, batch, plan)
            if not plan.event_ids and not plan.snapshots:
                return plan, 0, None
            first, at = await self._insert(conn, plan, sent)
        self.batches_committed += 1
        return plan, first, at

    async def _find_prior_appends(
        self, conn: _Connection, batch: Sequence[_Op], plan: _Plan
    ) -> None:
        """Turn the failures of appends that were committed before (retries) into their result.

        An append refused for its version or its event ids may be the very append committed
        earlier, whose reply was lost: if its events are stored, by id, at the versions it would
        give them, in one commit, it returns that commit's result (an idempotent append). Runs
        under the lock, on the failure path only.
        """
        for index, (op, outcome) in enumerate(zip(batch, plan.outcomes, strict=True)):
            if not isinstance(op, _Append) or not isinstance(outcome, BaseException):
                continue
            event_ids = [row[5] for row in op.rows]
            found = None
            if op.expected_version is None:
                found = await conn.fetchval(self._sql.version_of, event_ids[0], op.stream_id)
            start = retry_start(
                op.expected_version, None if found is None else int(found), len(event_ids)
            )
            if start is None:
                continue
            rows = await conn.fetch(
                self._sql.stored_range, op.stream_id, start, start + len(event_ids)
            )
            prior = prior_append(event_ids, start, [(r[0], int(r[1]), r[2]) for r in rows])
            if prior is not None:
                plan.outcomes[index] = AppendResult(*prior)

    async def _insert(
        self, conn: _Connection, plan: _Plan, sent: _Sent
    ) -> tuple[int, datetime | None]:
        snapshots = list(plan.snapshots.values())
        sent.value = True
        row = await conn.fetchrow(
            self._sql.append,
            plan.stream_ids,
            plan.versions,
            plan.types,
            plan.data,
            plan.data_text,
            plan.metadata,
            plan.metadata_text,
            plan.event_ids,
            plan.check_streams,
            plan.check_heads,
            [r[0] for r in snapshots],
            [r[1] for r in snapshots],
            [r[2] for r in snapshots],
            [r[3] for r in snapshots],
            [r[4] for r in snapshots],
        )
        return int(row[0]), row[1]

    async def _writer_connection(self) -> _Connection:
        conn = self._writer
        if conn is None or conn.is_closed():
            self._writer = conn = await self._connect()
        return conn

    def _drop_writer(self) -> None:
        conn, self._writer = self._writer, None
        if conn is not None:
            conn.terminate()

    def _lost_connection(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection failed (not that the server refused a
        statement): a statement already sent may then have committed or not."""
        if isinstance(exc, self._driver.PostgresError):
            return str(getattr(exc, "sqlstate", "") or "").startswith(("08", "57P"))
        return not isinstance(exc, StoreError)

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Save a snapshot in the writer's next transaction (see :class:`EventStore`)."""
        self._check_open()
        check_snapshot(snapshot)
        _check_no_nul("a stream id", snapshot.stream_id)
        state, exact = _jsonb_columns(encode_snapshot_state(snapshot), snapshot.state)
        row = (snapshot.stream_id, snapshot.version, snapshot.schema_version, state, exact)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_SaveSnapshot(row, future))
        await future

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save the checkpoint ``name`` (see :class:`EventStore`)."""
        self._check_open()
        check_checkpoint(name, position)
        _check_no_nul("a checkpoint name", name)
        await self._execute(self._sql.save_checkpoint, name, position)

    # -- reading --------------------------------------------------------------------------------

    async def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Yield a stream's events in version order (see :class:`EventStore`)."""
        check_stream_id(stream_id)
        _check_no_nul("a stream id", stream_id)
        start, end = check_time("since", since), check_time("until", until)
        last = MAX_VERSION if to_version is None else min(to_version, MAX_VERSION)
        version = max(from_version, 1)
        if version > last:
            return
        where = "stream_id = $1 AND version >= $2 AND version <= $3"
        params: list[Any] = [stream_id, version, last]
        where += _time_range(start, end, params)
        sql = f"SELECT {_COLUMNS} FROM {self._sql.events} WHERE {where} ORDER BY version LIMIT "
        async for row in self._pages(sql, params, 1, key=1):
            yield stored_event(row, row[7])

    async def read_all(
        self,
        from_position: int = 1,
        *,
        to_position: int | None = None,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Yield the store's events in global (commit) order (see :class:`EventStore`)."""
        type_names, prefixes = check_filters(types, categories)
        start, end = check_time("since", since), check_time("until", until)
        position = max(from_position, 1)
        last = MAX_VERSION if to_position is None else min(to_position, MAX_VERSION)
        if position > last:
            return
        where = "position >= $1 AND position <= $2"
        params: list[Any] = [position, last]
        where += _time_range(start, end, params)
        if type_names is not None:
            if not type_names:
                return
            for name in type_names:
                _check_no_nul("a type name", name)
            params.append(sorted(type_names))
            where += f" AND type = ANY(${len(params)}::text[])"
        if prefixes is not None:
            if not prefixes:
                return
            for prefix in prefixes:
                _check_no_nul("a category", prefix)
            params.append(list(prefixes))
            where += f" AND stream_id ^@ ANY(${len(params)}::text[])"
        sql = f"SELECT {_COLUMNS} FROM {self._sql.events} WHERE {where} ORDER BY position LIMIT "
        async for row in self._pages(sql, params, 0, key=2):
            yield stored_event(row, row[7])

    async def read_stream_data(
        self, stream_id: str, from_version: int = 1
    ) -> AsyncIterator[tuple[int, str, JSONDict]]:
        """Yield ``(version, type, data)`` of a stream's events: what replaying needs, no more.

        The runtime's fast path for loading actors: three columns instead of eight, and no
        metadata or timestamps to decode.
        """
        check_stream_id(stream_id)
        _check_no_nul("a stream id", stream_id)
        version = max(from_version, 1)
        if version > MAX_VERSION:
            return
        sql = (
            "SELECT version, type, coalesce(data_text, data::text), position "
            f"FROM {self._sql.events} WHERE stream_id = $1 AND version >= $2 "
            "ORDER BY version LIMIT "
        )
        async for row in self._pages(sql, [stream_id, version], 1, key=0):
            yield row[0], row[1], event_data_of(stream_id, row)

    async def load_latest(
        self, stream_id: str
    ) -> tuple[SnapshotRecord | None, list[tuple[int, str, JSONDict]], bool]:
        """Return the latest snapshot and the first page of events after it, in one query.

        The runtime's fast path for activating an actor: one round trip instead of two.
        Returns ``(snapshot or None, [(version, type, data), ...], complete)``; when
        ``complete`` is false, more events follow the page (read them with
        :meth:`read_stream_data`).
        """
        check_stream_id(stream_id)
        _check_no_nul("a stream id", stream_id)
        rows = await self._fetch(self._sql.latest, stream_id, self.read_page_size)
        snapshot = None
        if rows and rows[0][0] == 0:
            found, *rows = rows
            snapshot = snapshot_record(stream_id, found[1], found[3], found[4], found[5])
            if snapshot is None:  # damaged: the events after it are of no use without it
                return None, [], False
        events = event_data(stream_id, rows, first=1)
        return snapshot, events, len(events) < self.read_page_size

    async def _pages(
        self, sql: str, params: list[Any], key_param: int, *, key: int
    ) -> AsyncIterator[Any]:
        """Yield the rows of a query paged by key, fetching the next page while this one is
        consumed.

        ``sql`` ends in ``LIMIT `` (the page size is the last parameter); ``params[key_param]``
        is where the page starts, and the next page starts after the last row's column ``key``.
        Each page is one pooled round trip: no connection is held between pages.
        """
        page_size = self.read_page_size
        sql = f"{sql}${len(params) + 1}"
        pending: asyncio.Future[list[Any]] | None = asyncio.ensure_future(
            self._fetch(sql, *params, page_size)
        )
        try:
            while pending is not None:
                rows = await pending
                pending = None
                if len(rows) == page_size and rows[-1][key] < MAX_VERSION:
                    params = list(params)
                    params[key_param] = rows[-1][key] + 1
                    pending = asyncio.ensure_future(self._fetch(sql, *params, page_size))
                for row in rows:
                    yield row
        finally:
            if pending is not None:
                pending.cancel()

    async def stream_version(self, stream_id: str, *, at: datetime | None = None) -> int:
        """Return the version of a stream's last event (see :class:`EventStore`)."""
        check_stream_id(stream_id)
        _check_no_nul("a stream id", stream_id)
        moment = check_time("at", at)
        if moment is None:
            rows = await self._fetch(self._sql.stream_head, stream_id)
        else:
            rows = await self._fetch(self._sql.stream_head_at, stream_id, moment)
        return int(rows[0][0])

    async def head_position(self) -> int:
        """Return the position of the last event (see :class:`EventStore`)."""
        self._check_open()
        head = await self._head()
        self._watch.advance(head)
        return head

    async def _head(self) -> int:
        rows = await self._fetch(self._sql.head, check=False)
        return int(rows[0][0])

    async def wait_for_events(self, after_position: int, timeout: float) -> None:  # noqa: ASYNC109  # a poll interval
        """Return when an event beyond ``after_position`` was committed by any process (a
        notification), or after ``timeout``."""
        self._check_open()
        await self._watch.wait_beyond(after_position, timeout)

    async def find_command_events(
        self, stream_id: str, command_ids: Collection[str]
    ) -> list[StoredEvent]:
        """Return the events that commands with these ids produced (see :class:`EventStore`).

        Compares ``metadata->>'command_id'`` on the stream's rows (found through the
        ``(stream_id, version)`` index): a scan of the stream per call, and no index of its own,
        so that appends pay nothing for it. Rows whose metadata holds a NUL (JSONB cannot, so
        only its exact text is kept) are compared here, on that text.
        """
        check_stream_id(stream_id)
        _check_no_nul("a stream id", stream_id)
        ids = check_command_ids(command_ids)
        rows = await self._fetch(self._sql.command_events, stream_id, ids)
        wanted = set(ids)
        found = [stored_event(row, row[7]) for row in rows]
        return [e for e in found if _command_id_of(e) in wanted]

    async def list_streams(self, category: str | None = None) -> list[StreamInfo]:
        """Return the streams with their versions (see :class:`EventStore`)."""
        prefix = None if category is None else f"{category}-"
        rows = await self._fetch(self._sql.list_streams, prefix)
        return [StreamInfo(row[0], int(row[1]), row[2]) for row in rows]

    async def list_checkpoints(self) -> dict[str, int]:
        """Return every checkpoint (see :class:`EventStore`)."""
        rows = await self._fetch(self._sql.list_checkpoints)
        return {row[0]: int(row[1]) for row in rows}

    def capabilities(self) -> StoreCapabilities:
        """Future appends, one-read activation loads, lean replays, and the writer's lag."""
        return StoreCapabilities(
            submit_append=self.submit_append,
            load_latest=self.load_latest,
            read_stream_data=self.read_stream_data,
            writer_lag=self.writer_lag,
        )

    def writer_lag(self) -> float:
        """Return how long (s) the oldest write not yet committed has waited (0: none waits).

        :raises StoreError: if the store is not open or its writer task has stopped
        """
        self._check_open()
        task = self._writer_task
        if task is None or task.done():
            msg = f"{self!r}: its writer task has stopped"
            raise StoreError(msg)
        since = [t for t in (self._pending_since, self._committing_since) if t is not None]
        return time.monotonic() - min(since) if since else 0.0

    async def load_checkpoint(self, name: str) -> int:
        """Return the checkpoint ``name`` (see :class:`EventStore`)."""
        check_checkpoint(name)
        _check_no_nul("a checkpoint name", name)
        rows = await self._fetch(self._sql.load_checkpoint, name)
        return int(rows[0][0]) if rows else 0

    async def load_snapshot(
        self, stream_id: str, max_version: int | None = None
    ) -> SnapshotRecord | None:
        """Return the latest snapshot at or before ``max_version`` (see :class:`EventStore`)."""
        check_stream_id(stream_id)
        _check_no_nul("a stream id", stream_id)
        rows = await self._fetch(
            self._sql.load_snapshot,
            stream_id,
            MAX_VERSION if max_version is None else max(min(max_version, MAX_VERSION), -1),
        )
        if not rows:
            return None
        version, schema_version, state, recorded_at = rows[0]
        return snapshot_record(stream_id, version, state, schema_version, recorded_at)

    async def _fetch(
        self, sql: str, *params: object, check: bool = True, doing: str = "reading from"
    ) -> list[Any]:
        if check:  # not while opening, nor for the listener's catch-up
            self._check_open()
        pool = self._pool
        if pool is None:
            msg = f"{self!r} is not connected"
            raise StoreError(msg)
        assert pool is not None
        try:
            async with pool.acquire() as conn:
                return await conn.fetch(sql, *params)
        except self._errors as exc:
            detail = " ".join(str(exc).split())
            msg = f"{doing} PostgreSQL at {self._where} failed: {type(exc).__name__}: {detail}"
            raise StoreError(msg) from exc

    async def _execute(self, sql: str, *params: object) -> None:
        await self._fetch(sql, *params, doing="writing to")


class _Statements:
    """The SQL of one schema (its name is checked to be a plain identifier, then quoted)."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        self.events = f"{s}.events"
        self.lock = "SELECT pg_advisory_xact_lock($1)"
        self.append = (
            "SELECT first_position, committed_at FROM "
            f"{s}.actorsource_append($1::text[], $2::bigint[], $3::text[], $4::text[], "
            "$5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], "
            "$11::text[], $12::bigint[], $13::bigint[], $14::text[], $15::text[])"
        )
        # the heads of a batch's streams, and which of its event ids are stored (kind 0 / 1)
        self.facts = (
            "SELECT 0, s.stream_id, (SELECT coalesce(max(e.version), 0) FROM "
            f"{s}.events e WHERE e.stream_id = s.stream_id) "
            "FROM unnest($1::text[]) AS s(stream_id) "
            f"UNION ALL SELECT 1, e.event_id, 0 FROM {s}.events e "
            "WHERE e.event_id = ANY($2::text[])"
        )
        self.stream_head = f"SELECT coalesce(max(version), 0) FROM {s}.events WHERE stream_id = $1"
        self.stream_head_at = (
            f"SELECT coalesce(max(version), 0) FROM {s}.events "
            "WHERE stream_id = $1 AND recorded_at <= $2"
        )
        self.head = f"SELECT coalesce(max(position), 0) FROM {s}.events"
        self.load_snapshot = (
            "SELECT version, schema_version, coalesce(state_text, state::text), recorded_at "
            f"FROM {s}.snapshots WHERE stream_id = $1 AND version <= $2 "
            "ORDER BY version DESC LIMIT 1"
        )
        # kind 0: the latest snapshot (version, -, state, schema version, time);
        # kind 1: the events after it (version, type, data, position)
        self.latest = (
            "WITH snap AS (SELECT version, schema_version, coalesce(state_text, state::text) "
            f"AS state, recorded_at FROM {s}.snapshots WHERE stream_id = $1 "
            "ORDER BY version DESC LIMIT 1) "
            "SELECT * FROM ("
            "SELECT 0 AS kind, version, NULL::text AS type, state, schema_version, recorded_at "
            "FROM snap "
            "UNION ALL ("
            "SELECT 1, e.version, e.type, coalesce(e.data_text, e.data::text), e.position, NULL "
            f"FROM {s}.events e WHERE e.stream_id = $1 "
            "AND e.version > coalesce((SELECT version FROM snap), 0) "
            "ORDER BY e.version LIMIT $2)) AS found ORDER BY kind, version"
        )
        self.version_of = f"SELECT version FROM {s}.events WHERE event_id = $1 AND stream_id = $2"
        self.stored_range = (
            f"SELECT event_id, position, recorded_at FROM {s}.events "
            "WHERE stream_id = $1 AND version > $2 AND version <= $3 ORDER BY version"
        )
        # metadata IS NULL: the JSONB could not hold it (a NUL), the caller compares the text
        self.command_events = (
            f"SELECT {_COLUMNS} FROM {s}.events WHERE stream_id = $1 "
            "AND (metadata->>'command_id' = ANY($2::text[]) OR metadata IS NULL) ORDER BY version"
        )
        self.list_streams = (
            f"SELECT stream_id, max(version), max(recorded_at) FROM {s}.events "
            "WHERE $1::text IS NULL OR left(stream_id, length($1)) = $1 "
            'GROUP BY stream_id ORDER BY stream_id COLLATE "C"'
        )
        self.list_checkpoints = (
            f'SELECT name, position FROM {s}.checkpoints ORDER BY name COLLATE "C"'
        )
        self.load_checkpoint = f"SELECT position FROM {s}.checkpoints WHERE name = $1"
        self.save_checkpoint = (
            f"INSERT INTO {s}.checkpoints (name, position, updated_at) "
            "VALUES ($1, $2, clock_timestamp()) ON CONFLICT (name) DO UPDATE SET "
            "position = excluded.position, updated_at = excluded.updated_at"
        )


def _resolve(plan: _Plan, first: int, at: datetime | None) -> tuple[list[Any], dict[str, int]]:
    """Each op's outcome once its plan committed with positions from ``first`` on."""
    results: list[Any] = []
    for outcome in plan.outcomes:
        if outcome is None or isinstance(outcome, BaseException | AppendResult):
            results.append(outcome)
        else:
            offset, version = outcome
            assert at is not None
            results.append(AppendResult(version, first + offset, at))
    return results, plan.heads


def _command_id_of(event: StoredEvent) -> str | None:
    """The ``"command_id"`` of an event's metadata, if it is a str (as the runtime stores it)."""
    metadata = event.metadata
    found = metadata.get("command_id") if isinstance(metadata, dict) else None
    return found if isinstance(found, str) else None


def _time_range(since: datetime | None, until: datetime | None, params: list[Any]) -> str:
    """SQL conditions for ``[since, until)`` on ``recorded_at``; appends their parameters."""
    sql = ""
    if since is not None:
        params.append(since)
        sql += f" AND recorded_at >= ${len(params)}"
    if until is not None:
        params.append(until)
        sql += f" AND recorded_at < ${len(params)}"
    return sql
