"""The PostgreSQL event store: lifecycle, LISTEN/NOTIFY, and the writer and reads together
behind the store contract."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import cast

from ..._errors import StoreError
from ..._records import AppendResult, NewEvent, SnapshotRecord
from .._base import (
    GrowthMeter,
    HeadWatch,
    KnownHeads,
    StorageGrowth,
    StoreCapabilities,
    check_append,
    check_checkpoint,
    check_compress_over,
    check_keep,
    check_snapshot,
    compress_json,
    encode_rows,
    encode_snapshot_state,
)
from .cluster import PostgresCluster, _ClusterStatements
from .connection import (
    _SERVER_SETTINGS,
    _Connection,
    _driver,
    _driver_errors,
    _Pool,
)
from .dsn import _scrub, _secret_words, redact_dsn
from .keys import PostgresSubjectKeys
from .plan import (
    _Append,
    _check_no_nul,
    _jsonb_columns,
    _Op,
    _Row,
    _SaveSnapshot,
    _SnapshotRow,
)
from .reads import PostgresReads
from .retention import PostgresRetention
from .schema import _SCHEMA_NAME, SCHEMA_VERSION, _channel, _lock_key, _Statements
from .setup import PostgresSchemaSetup
from .timers import PostgresTimers
from .transactions import PostgresTransactions, _TransactionStatements
from .writer import OFF_LOOP_BYTES, PostgresWriter

logger = logging.getLogger("actorsource.stores.postgres")


class PostgresEventStore(
    PostgresWriter,
    PostgresSchemaSetup,
    PostgresSubjectKeys,
    PostgresCluster,
    PostgresRetention,
    PostgresReads,
    PostgresTransactions,
    PostgresTimers,
):
    """An event store in a PostgreSQL schema (tables ``events``, ``snapshots``, ``checkpoints``).

    Several runtimes, processes and machines may use one schema at once: appends take turns on
    an advisory lock, so positions are gap-free in commit order, and every append checks its
    expected version. The schema and its tables are created on first open.

    It is a ``TransactionalStore``: exactly-once and inline projections write their read models
    through an ``asyncpg.Connection`` in its transactions (see :mod:`.transactions`).

    :param dsn: a ``postgresql://`` URI (asyncpg's format), for example
        ``postgresql://user:password@host:5432/dbname`` or
        ``postgresql:///dbname?host=/var/run/postgresql`` for the local socket
    :param schema: the PostgreSQL schema holding the store's tables (created if missing, unless
        ``read_only``), so that tenants or tests can be kept apart in one database: a
        lower-case identifier
    :param pool_size: the most connections readers use at once (besides the writer's and the
        listener's)
    :param max_batch: the most appends one transaction takes
    :param read_page_size: rows fetched per round trip when reading
    :param known_heads: how many stream heads the writer remembers (for appends that give no
        expected version)
    :param connect_timeout: seconds to wait for a connection
    :param read_only: open an existing store only to read it (tools that inspect a store):
        nothing is created, upgraded or written (every session is read-only on the server,
        and no writer runs); a schema without an actorsource store is refused when opening
        (:class:`StoreError`, naming the schemas that hold one); every write raises
        :class:`StoreError`
    :param compress_over: store the data of events, and snapshot states, whose JSON is longer
        than this many characters zlib-compressed, in a ``bytea`` column beside the JSONB one
        (read back transparently, but not queryable in SQL); ``None``: never
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
        read_only: bool = False,
        compress_over: int | None = None,
    ) -> None:
        _check_arguments(
            dsn,
            schema,
            pool_size=pool_size,
            max_batch=max_batch,
            read_page_size=read_page_size,
            known_heads=known_heads,
        )
        self._driver = _driver()
        self._errors = _driver_errors(self._driver)
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self.max_batch = max_batch
        self.read_page_size = read_page_size
        self.connect_timeout = connect_timeout
        #: whether the store was made to be read only (see the class docstring)
        self.read_only = read_only
        #: event data and snapshot states longer than this (in characters of JSON) are stored
        #: compressed (None: never)
        self.compress_over = check_compress_over(compress_over)
        self._settings = (
            {**_SERVER_SETTINGS, "default_transaction_read_only": "on"}
            if read_only
            else _SERVER_SETTINGS
        )
        self._opened_version = 0
        self._where = redact_dsn(dsn)
        self._secret_words = _secret_words(dsn)
        self._append_lock = _lock_key("append", schema)
        self._channel = _channel(schema)
        self._sql = _Statements(schema)
        self._tx_sql = _TransactionStatements(schema)
        self._cluster_sql = _ClusterStatements(schema)
        self._fenced = False
        self._inline = {}
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
        #: counts what this store commits, for ``storage_growth`` (replace it before use to
        #: measure over another window)
        self.growth_meter = GrowthMeter()
        self._watch = HeadWatch()

    def __repr__(self) -> str:
        return f"PostgresEventStore({self._where!r}, schema={self.schema!r})"

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        """The schema version of the open store (this code's, unless opened read-only)."""
        self._check_open()
        return self._opened_version

    async def _open(self) -> None:
        self._closing = False
        try:
            self._writer = await self._connect()
            if self.read_only:
                self._opened_version = await self._existing_version(self._writer)
                self._sql = _Statements(self.schema, self._opened_version)
                # a connection of its own only for migrating and writing
                writer, self._writer = self._writer, None
                await writer.close(timeout=self.connect_timeout)
            else:
                await self._migrate(self._writer)
                self._opened_version = SCHEMA_VERSION
                self._sql = _Statements(self.schema)
            try:
                self._pool = await self._driver.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=self.connect_timeout,
                    server_settings=self._settings,
                )
            except Exception as exc:
                raise self._connect_error(exc) from exc
            await self._listen()
            self._watch.advance(await self._head())
        except BaseException:
            await self._close_connections()
            raise
        if self.read_only:
            return
        self._wakeup = asyncio.Event()
        self._writer_task = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"actorsource writer {self._where} {self.schema}"
        )

    async def _connect(self) -> _Connection:
        try:
            conn: _Connection = await self._driver.connect(
                self.dsn, timeout=self.connect_timeout, server_settings=self._settings
            )
        except Exception as exc:
            raise self._connect_error(exc) from exc
        return conn

    def _connect_error(self, exc: Exception) -> StoreError:
        detail = _scrub(" ".join(str(exc).split()), self._secret_words) or type(exc).__name__
        msg = f"cannot connect to PostgreSQL at {self._where}: {type(exc).__name__}: {detail}"
        return StoreError(msg)

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
        op = self._append_op(stream_id, expected_version, events)
        self._enqueue(op)
        return op.future

    def _append_op(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> _Append:
        """Check and encode an append (bad arguments raise here); queue it with ``_enqueue``."""
        self._check_open()
        check_append(stream_id, expected_version, events)
        _check_no_nul("a stream id", stream_id)
        rows: list[_Row] = []
        meta_text = ""
        meta_columns: tuple[str | None, str | None] = (None, None)
        # one call encodes the append (the events of a command share one metadata dict,
        # encoded once, its columns decided once)
        # the writer compresses what is large: every row holds text here
        encoded = cast("list[tuple[str, str, str, str]]", encode_rows(events))
        for e, (kind, data, meta, event_id) in zip(events, encoded, strict=True):
            if "\x00" in kind or "\x00" in event_id:
                _check_no_nul("an event type", kind)
                _check_no_nul("an event id", event_id)
            if meta is not meta_text:
                meta_text, meta_columns = meta, _jsonb_columns(meta, e.metadata)
            rows.append((kind, *_jsonb_columns(data, e.data), *meta_columns, event_id))
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        op = _Append(stream_id, expected_version, rows, future)
        over = self.compress_over
        if over is not None:  # the writer compresses (see _compress)
            op.large = any([len(data) > over for _, data, _, _ in encoded])
        return op

    async def save_snapshot(self, snapshot: SnapshotRecord, *, keep: int | None = None) -> None:
        """Save a snapshot in the writer's next transaction (see :class:`EventStore`); with
        ``keep``, in a transaction of its own that deletes the stream's snapshots but the
        ``keep`` latest."""
        self._check_open()
        check_snapshot(snapshot)
        check_keep(keep)
        _check_no_nul("a stream id", snapshot.stream_id)
        text = encode_snapshot_state(snapshot)
        over = self.compress_over
        row: _SnapshotRow
        if over is not None and len(text) > over:
            # zlib lets go of the GIL: a large state is compressed off the event loop
            compressed = (
                await asyncio.to_thread(compress_json, text)
                if len(text) > OFF_LOOP_BYTES
                else compress_json(text)
            )
            row = (
                snapshot.stream_id,
                snapshot.version,
                snapshot.schema_version,
                None,
                None,
                compressed,
            )
        else:
            state, exact = _jsonb_columns(text, snapshot.state)
            row = (
                snapshot.stream_id,
                snapshot.version,
                snapshot.schema_version,
                state,
                exact,
                None,
            )
        if keep is not None:
            await self._save_snapshot_keeping(row, keep)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_SaveSnapshot(row, future))
        await future

    async def _save_snapshot_keeping(self, row: _SnapshotRow, keep: int) -> None:
        pool = self._pool
        if pool is None:
            msg = f"{self!r} is not connected"
            raise StoreError(msg)
        try:
            async with pool.acquire() as conn, conn.transaction():
                # saves of one stream take turns: two at once would each prune against a list
                # without the other's snapshot, and keep one too many
                lock = _lock_key(f"snapshots:{row[0]}", self.schema)
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
                await conn.execute(self._sql.save_snapshot, *row)
                await conn.execute(self._sql.prune_snapshots, row[0], keep)
        except self._errors as exc:
            detail = " ".join(str(exc).split())
            msg = (
                f"saving a snapshot of {row[0]!r} to PostgreSQL at {self._where} failed: "
                f"{type(exc).__name__}: {detail}; nothing of it was stored"
            )
            raise StoreError(msg) from exc

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save the checkpoint ``name`` (see :class:`EventStore`)."""
        self._check_open()
        check_checkpoint(name, position)
        _check_no_nul("a checkpoint name", name)
        await self._execute(self._sql.save_checkpoint, name, position)

    def capabilities(self) -> StoreCapabilities:
        """Everything :class:`StoreCapabilities` names (transactions' work may be ``async``)."""
        return StoreCapabilities(
            submit_append=self.submit_append,
            load_latest=self.load_latest,
            read_stream_data=self.read_stream_data,
            writer_lag=self.writer_lag,
            transactional=self,
            async_transactions=True,
            archive_stream=self.archive_stream,
            delete_stream=self.delete_stream,
            delete_checkpoint=self.delete_checkpoint,
            storage_growth=self.storage_growth,
            timers=self,
            subject_keys=self,
            cluster=self,
        )

    def storage_growth(self) -> StorageGrowth:
        """Return how fast this store grows (see :class:`StorageGrowth`): what this store
        object committed (JSON text, or the compressed bytes of a compressed row, before
        PostgreSQL's own compression of large values)."""
        self._check_open()
        return self.growth_meter.growth()


def _check_arguments(dsn: object, schema: object, **sizes: object) -> None:
    """Raise a ValueError naming the first bad argument of the store's constructor."""
    if not isinstance(dsn, str) or not dsn:
        msg = f"dsn must be a non-empty str (a postgresql:// URI), got {dsn!r}"
        raise ValueError(msg)
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        msg = (
            "schema must be a lower-case identifier of at most 63 characters (letters, "
            f"digits and '_', not starting with a digit), got {schema!r}"
        )
        raise ValueError(msg)
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            msg = f"{name} must be an int >= 1, got {value!r}"
            raise ValueError(msg)
