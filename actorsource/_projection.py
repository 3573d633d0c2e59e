"""Projections: read models built from the event log, run by the runtime from a checkpoint.

A projection is a class with ``@handle`` methods, dispatched on the annotated event type like
``@apply``. Three delivery modes:

- ``"at_least_once"`` (default): a background task reads the log in batches from the
  projection's checkpoint, runs the handlers (sync or async), then saves the checkpoint. A crash
  between the two redelivers the batch: handlers must be idempotent.
- ``"exactly_once"``: each batch's handlers and the checkpoint commit in one store transaction
  (the read model lives in the store's database: handlers get the transaction in their
  context). A crash redelivers nothing that was committed and loses nothing that was not.
  Handlers are plain functions on SQLite (they run on its writer thread), plain or ``async``
  on PostgreSQL (the transaction is an ``asyncpg.Connection``).
- ``"inline"``: the handlers run inside the transaction of every append, so that the read model
  is up to date when ``ask`` returns (read-your-writes); a failing handler fails the append.

Where the read model lives decides where a projection starts (``durable``):

- a durable read model (SQL tables written through the transaction, another database, a search
  index) outlives the process: the projection resumes from its stored checkpoint. Exactly-once
  and inline projections are durable;
- an in-memory read model (``durable = False``, the default of at-least-once projections) is
  built again from the start of the log at every start; no checkpoint is stored for it.

A rebuild clears what it rebuilds: a durable projection defines ``reset(self, ctx)``, called
before the events are delivered again (in the transaction that resets the checkpoint, for
exactly-once and inline projections).

Background projections wake when this process commits (no polling) and poll for other
processes' appends every ``poll_interval`` seconds. A failing handler stops its projection at
that event (the checkpoint never passes an event that was not handled), logs the position,
event and exception, and retries with backoff; so does a failing store (a restart, a full
disk), and the projection's status says ``failing`` meanwhile. Several runners of one
exactly-once or inline projection (runtimes or processes on one store) never apply an event
twice: each batch commits only if the checkpoint is still where the batch began.

A handler runs as caused by its event (see :func:`~actorsource.caused_by`): commands it sends
join the event's conversation and name the event as their cause.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal, TypeVar, cast

import anyio
import attrs

from ._aggregate import _handlers, _lookup
from ._codec import Codec, event_type_spec, with_subclasses
from ._errors import CheckpointConflictError, DefinitionError, ProjectionError
from ._metrics import PROJECTION_DURATION, PROJECTION_EVENTS, Metrics
from ._projection_context import ProjectionContext, ProjectionRuntime, ProjectionStatus
from ._records import RecordedEvent, StoredEvent
from ._slices import ProjectionSlice, reserved_slice_name
from ._tracing import CORRELATION_ID, cause_of, current_cause
from .stores._base import (
    EventStore,
    StoreCapabilities,
    TransactionalStore,
    check_checkpoint,
    poll_for_events,
)

logger = logging.getLogger("actorsource.projection")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

Mode = Literal["at_least_once", "exactly_once", "inline"]
_MODES: Final = ("at_least_once", "exactly_once", "inline")
_HANDLE_MARK = "__actorsource_handle__"


def handle(method: F) -> F:
    """Mark a projection method as the handler of the event type its argument is annotated with.

    The method takes the event and, optionally, a :class:`ProjectionContext`; it may be async
    in the ``at_least_once`` mode, and in every mode on a store whose transactions are async
    (PostgreSQL).
    """
    setattr(method, _HANDLE_MARK, True)
    return method


class Projection:
    """Base class of projections (read models); mark handlers with :func:`handle`.

    Class-level settings (plain class attributes):

    - ``name``: the projection's name and checkpoint key (default: the class name); renaming a
      projection starts it from the beginning
    - ``mode``: ``"at_least_once"`` (default), ``"exactly_once"`` or ``"inline"``
    - ``durable``: whether the read model outlives the process. ``True`` (SQL tables, another
      database, a search index): it resumes from its stored checkpoint. ``False`` (Python
      objects): it is built again from the start of the log at every start. Default: ``False``
      for at-least-once projections; exactly-once and inline ones are always durable.

    A durable projection that can be rebuilt in place defines ``reset(self, ctx)`` (a
    :class:`ResetContext`): it clears the read model. Exactly-once and inline projections get the
    store's transaction in ``ctx.transaction`` and reset plainly (no ``async``) on SQLite and in
    memory, plainly or ``async`` on PostgreSQL; an at-least-once projection's ``reset`` may be
    ``async``.
    """

    name: ClassVar[str | None] = None
    mode: ClassVar[Mode] = "at_least_once"
    durable: ClassVar[bool | None] = None


@attrs.frozen(slots=True)
class _Handler:
    function: Callable[..., Any]
    takes_context: bool
    is_async: bool


@attrs.frozen(slots=True)
class CompiledProjection:
    """A projection class's handlers by event class, and its settings."""

    name: str
    mode: Mode
    handlers: dict[type, _Handler]
    #: whether the read model outlives the process
    durable: bool
    #: the class's ``reset`` (clears the read model before a rebuild), if it has one
    reset: _Handler | None

    @property
    def event_types(self) -> tuple[type, ...]:
        """The event classes the projection handles."""
        return tuple(self.handlers)


_compiled: weakref.WeakKeyDictionary[type, CompiledProjection] = weakref.WeakKeyDictionary()


def compile_projection(cls: type[Projection]) -> CompiledProjection:
    """Return the handlers and settings of a projection class (compiled once, then cached).

    :raises DefinitionError: if the class is not a usable projection
    """
    found = _compiled.get(cls)
    if found is None:
        found = _compile(cls)
        _compiled[cls] = found
    return found


def _compile(cls: type[Projection]) -> CompiledProjection:
    if not (isinstance(cls, type) and issubclass(cls, Projection)):
        msg = f"{cls!r} is not a Projection subclass"
        raise DefinitionError(msg)
    name = cls.name if cls.name is not None else cls.__name__
    try:
        check_checkpoint(name)
    except ValueError:
        msg = (
            f"{cls.__qualname__}.name must be a non-empty str of valid Unicode without NUL "
            f"(it keys the projection's checkpoint), got {name!r}"
        )
        raise DefinitionError(msg) from None
    if name.endswith(_REBUILDING):
        msg = f"{cls.__qualname__}.name must not end with {_REBUILDING!r} (rebuilds use it)"
        raise DefinitionError(msg)
    if reserved_slice_name(name):
        msg = (
            f"{cls.__qualname__}.name must not end with ':slice:INDEX/COUNT' (the slices of a "
            f"sliced projection run under such names), got {name!r}"
        )
        raise DefinitionError(msg)
    if cls.mode not in _MODES:
        msg = f"{cls.__qualname__}.mode must be one of {', '.join(_MODES)}, got {cls.mode!r}"
        raise DefinitionError(msg)
    durable = _durable(cls)
    reset = _reset_of(cls)
    methods = _handlers(cls, _HANDLE_MARK, "@handle", optional_arguments=1)
    if not methods:
        msg = f"{cls.__qualname__} has no @handle methods: it would handle no event"
        raise DefinitionError(msg)
    handlers: dict[type, _Handler] = {}
    for event_class, method in methods.items():
        is_async = inspect.iscoroutinefunction(method)
        takes_context = len(inspect.signature(method).parameters) == 3
        handlers[event_class] = _Handler(method, takes_context, is_async)
    return CompiledProjection(name, cls.mode, handlers, durable, reset)


#: the suffix of the checkpoint a fresh instance is built under beside the serving one
_REBUILDING: Final = ":rebuild"


def _durable(cls: type[Projection]) -> bool:
    durable = cls.durable
    if durable is not None and not isinstance(durable, bool):
        msg = f"{cls.__qualname__}.durable must be True, False or None, got {durable!r}"
        raise DefinitionError(msg)
    if cls.mode == "at_least_once":
        return bool(durable)
    if durable is False:
        msg = (
            f"{cls.__qualname__} is {cls.mode} and sets durable = False, but {cls.mode} read "
            "models are written in the store's transaction and kept with it; for a read model "
            "in memory use mode 'at_least_once' (wait_for_projection gives read-your-writes)"
        )
        raise DefinitionError(msg)
    return True


def _reset_of(cls: type[Projection]) -> _Handler | None:
    reset = getattr(cls, "reset", None)
    if reset is None:
        return None
    if not callable(reset) or len(inspect.signature(reset).parameters) != 2:
        msg = f"{cls.__qualname__}.reset must be a method taking (self, ctx), got {reset!r}"
        raise DefinitionError(msg)
    return _Handler(reset, True, inspect.iscoroutinefunction(reset))


def transactional_refusal(
    compiled: CompiledProjection, store: EventStore, capabilities: StoreCapabilities
) -> str | None:
    """Why ``store`` cannot run an exactly-once or inline projection (``None``: it can).

    A store without transactions runs none; one whose transactions are not async (SQLite, on
    its writer thread; memory) runs only plain handlers and ``reset``.
    """
    if compiled.mode == "at_least_once":
        return None
    if capabilities.transactional is None:
        return (
            f"projection {compiled.name!r} is {compiled.mode}, but {store!r} cannot run "
            "read-model writes in its transactions; use at_least_once"
        )
    if capabilities.async_transactions:
        return None
    for handler in compiled.handlers.values():
        if handler.is_async:
            return (
                f"{handler.function.__qualname__} is async, but {compiled.mode} handlers run "
                f"inside {store!r}'s transaction and must be plain functions there (async "
                "ones need a store whose transactions are async: PostgreSQL)"
            )
    if compiled.reset is not None and compiled.reset.is_async:
        return (
            f"{compiled.reset.function.__qualname__} is async, but a {compiled.mode} "
            f"projection resets inside {store!r}'s transaction (with its checkpoint) and must "
            "be a plain method there (an async one needs a store whose transactions are "
            "async: PostgreSQL)"
        )
    return None


class ProjectionRunner:
    """Runs one projection instance: catch-up, live delivery, checkpoints, retries, lag."""

    def __init__(
        self,
        projection: Projection,
        *,
        name: str,
        store: EventStore,
        codec: Codec,
        runtime: ProjectionRuntime,
        batch_size: int,
        poll_interval: float,
        max_backoff: float,
        metrics: Metrics | None = None,
        from_position: int = 1,
        slice: ProjectionSlice | None = None,
    ) -> None:
        self.projection = projection
        self.compiled = compile_projection(type(projection))
        self.name = name
        #: the slice of the log this runner handles (None: all of it)
        self.slice = slice
        #: where an in-memory read model starts (a durable one starts from its checkpoint)
        self.from_position = from_position
        self.store = store
        capabilities = store.capabilities()
        #: the store as a TransactionalStore, if it is one (declared in its capabilities)
        self._transactions = capabilities.transactional
        #: why this store cannot run this projection, if it cannot
        self._refusal = transactional_refusal(self.compiled, store, capabilities)
        #: whether handlers are awaited inside the store's transaction (PostgreSQL)
        self._async_transactions = capabilities.async_transactions
        #: whether a failed transaction's read-model writes are undone (not the memory store's)
        self._rolls_back = capabilities.transactions_roll_back
        self.codec = codec
        self.runtime = runtime
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.metrics = metrics
        codec.register_events(self.compiled.event_types)
        # a handler for a base class handles its subclasses' events: they are read too
        handled = with_subclasses(self.compiled.event_types)
        for cls in handled:
            with contextlib.suppress(DefinitionError):  # one no store could hold: never read
                codec.register_events([cls])
        # stored names, old ones (aliases of renamed types) included: the store filters by them
        self.type_names = sorted(
            {
                name
                for cls in handled
                for spec in (event_type_spec(cls),)
                for name in (spec.name, *spec.aliases)
            }
        )
        #: the last position handled (the checkpoint, once loaded)
        self.position = 0
        #: the store's last position, as last seen
        self.head = 0
        self.state = "loading"
        #: whether the start position is known (a waiter may compare with ``position`` then)
        self.loaded = False
        self.last_error: str | None = None
        self._oldest_pending: datetime | None = None
        #: called whenever the position moves (the runtime wakes its waiters)
        self.on_progress: Callable[[], None] = _nothing
        self._lookup_cache: dict[type, _Handler] = dict(self.compiled.handlers)

    @property
    def transactional(self) -> bool:
        """Whether handlers run inside the store's transaction (exactly-once and inline)."""
        return self.compiled.mode != "at_least_once"

    def status(self) -> ProjectionStatus:
        """Return the projection's progress now."""
        lag = max(self.head - self.position, 0)
        seconds = 0.0
        if lag and self._oldest_pending is not None:
            seconds = max((datetime.now(UTC) - self._oldest_pending).total_seconds(), 0.0)
        return ProjectionStatus(
            name=self.name,
            mode=self.compiled.mode,
            state=self.state,
            position=self.position,
            head_position=self.head,
            lag_events=lag,
            lag_seconds=seconds,
            last_error=self.last_error,
            durable=self.compiled.durable,
            slice=self.slice,
        )

    def _advanced(self, position: int) -> None:
        if position > self.position:
            self.position = position
            self.on_progress()

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the position to go on from: the stored checkpoint of a durable read model, just
        before ``from_position`` for one in memory (built again at every start)."""
        if self.compiled.durable:
            await self._until_it_succeeds(self._load_checkpoint)
        else:
            self._advanced(self.from_position - 1)
        self.loaded = True
        self.state = "catching_up"
        self.on_progress()

    async def _load_checkpoint(self) -> None:
        self.position = await self.store.load_checkpoint(self.name)
        self.head = max(self.head, self.position)

    async def run_inline(self) -> None:
        """Catch up in batches, hand the handlers to the store's appends, then follow them.

        Appends by this process run the handlers in their transactions; appends by other
        processes are caught up here (found when polling), so the read model never misses them.
        """
        await self.run(until_caught_up=True)  # the bulk, in batches: not in one append
        store = self._transactional()
        hook = self.handle_inline_async if self._async_transactions else self.handle_inline
        while True:
            # (again) caught up inside one transaction, then called by every append
            await self._until_it_succeeds(lambda: store.add_inline_projection(self.name, hook))
            self.state = "live"
            self.on_progress()  # live: appends from now on run the handlers
            await self._until_it_succeeds(self._follow_inline)

    async def _follow_inline(self) -> None:
        """Return when another process appended (this process's appends run the hook)."""
        store = self.store
        while True:
            self._advanced(await store.load_checkpoint(self.name))
            self.head = max(self.head, await store.head_position())
            if self.head > self.position:
                return
            await poll_for_events(store, self.position, self.poll_interval)

    async def _until_it_succeeds(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds, backing off between tries (50 ms doubling to
        ``max_backoff``); the checkpoint stays before the failing event meanwhile.

        Whatever fails (a handler, the store, a damaged event) is retried: a projection never
        takes its runtime down. A checkpoint another runner moved is reloaded at once.
        """
        backoff = 0.0
        resumed = self.state
        while True:
            try:
                result = await attempt()
            except CheckpointConflictError as exc:
                await self._reload(exc)
                continue
            except Exception as exc:
                if self.state != "failing":
                    resumed = self.state
                backoff = min(max(backoff * 2, 0.05), self.max_backoff)
                self._failed(exc, backoff)
                await anyio.sleep(backoff)
                continue
            if self.state == "failing":
                self.state = resumed
            self.last_error = None
            return result

    async def _reload(self, conflict: CheckpointConflictError) -> None:
        """Go on from where another runner left the checkpoint (its batch was committed)."""
        logger.info(
            "projection checkpoint moved by another runner; going on from there",
            extra={"projection": self.name, "expected": conflict.expected, "at": conflict.actual},
        )
        self.position = conflict.actual
        self.head = max(self.head, self.position)
        self.on_progress()

    def _failed(self, exc: Exception, backoff: float) -> None:
        self.state = "failing"
        self.last_error = str(exc) or type(exc).__name__
        if isinstance(exc, ProjectionError):
            logger.error(
                "projection handler failed; retrying",
                exc_info=exc.__cause__,
                extra={
                    "projection": self.name,
                    "position": exc.position,
                    "stream_id": exc.stream_id,
                    "version": exc.version,
                    "event_type": exc.event_type,
                    "retry_in": backoff,
                },
            )
            return
        self.last_error = f"{type(exc).__name__}: {exc}"
        logger.error(
            "projection failed; retrying",
            exc_info=exc,
            extra={"projection": self.name, "position": self.position, "retry_in": backoff},
        )

    def _transactional(self) -> TransactionalStore:
        """The store, for a projection it can run in its transactions.

        :raises DefinitionError: if it cannot (see :func:`transactional_refusal`)
        """
        if self._refusal is not None:
            raise DefinitionError(self._refusal)
        assert self._transactions is not None
        return self._transactions

    async def run(self, *, until_caught_up: bool = False) -> None:
        """Handle events from the checkpoint on; forever, or until caught up with the head."""
        if self.transactional:
            self._transactional()
        while True:
            caught_up = await self._until_it_succeeds(self._catch_up)
            if caught_up:
                self._oldest_pending = None
                if until_caught_up:
                    return
                if self.state != "rebuilding":
                    self.state = "live"
                await self._until_it_succeeds(
                    lambda: poll_for_events(self.store, self.position, self.poll_interval)
                )

    async def _catch_up(self) -> bool:
        """Handle the events up to the head seen now; return True if there were none."""
        head = await self.store.head_position()
        self.head = max(self.head, head)
        if head <= self.position:
            return True
        if self.state not in ("rebuilding", "failing"):
            self.state = "catching_up"
        batch: list[StoredEvent] = []
        events = self.store.read_all(self.position + 1, to_position=head, types=self.type_names)
        part = self.slice
        async for stored in events:
            if part is not None and not part.holds(stored.stream_id):
                continue  # another slice's: the checkpoint moves past it with the batch
            if not batch:
                self._oldest_pending = stored.recorded_at
            batch.append(stored)
            if len(batch) >= self.batch_size:
                await self._deliver(batch, batch[-1].position)
                batch = []
        # the filtered read skipped the events of other types up to the head
        await self._deliver(batch, head)
        return False

    async def _deliver(self, batch: list[StoredEvent], through: int) -> None:
        """Handle a batch and move the checkpoint to ``through``."""
        if through <= self.position:
            return
        started = time.perf_counter()
        if self.transactional:
            store = self._transactional()
            work: Callable[[Any], Any]
            if self._async_transactions:

                async def work(transaction: Any) -> None:  # awaited inside the transaction
                    await self._call_async(batch, transaction)

            else:
                pending = batch
                if not self._rolls_back:
                    # the store cannot undo what a batch that failed half-way wrote: an event at
                    # a time, each with its checkpoint (then the end of the batch, below)
                    for stored in batch:
                        one = functools.partial(self._call_sync, stored)
                        await store.commit_with_checkpoint(
                            self.name, stored.position, one, expected=self.position
                        )
                        self._advanced(stored.position)
                    pending = []

                def work(transaction: Any) -> None:
                    for stored in pending:
                        self._call_sync(stored, transaction)

            # only if no other runner committed since this batch began (no event twice)
            if through > self.position:
                await store.commit_with_checkpoint(self.name, through, work, expected=self.position)
        else:
            handled = self.position
            try:
                for stored in batch:
                    result = self._call(stored, None)
                    if result is not None:
                        await result
                    handled = stored.position
            except BaseException:
                if handled > self.position:  # keep what was handled: less to redeliver
                    await self._save(handled)
                    self._advanced(handled)
                raise
            await self._save(through)
        self._advanced(through)
        self.head = max(self.head, through)
        self._report(len(batch), time.perf_counter() - started)

    async def _save(self, position: int) -> None:
        """Store the checkpoint of a durable read model (one in memory is built again at every
        start: a stored checkpoint would only cost a write)."""
        if self.compiled.durable:
            await self.store.save_checkpoint(self.name, position)

    def _report(self, events: int, seconds: float) -> None:
        """Count handled events and time the batch, and log it (both only when asked for)."""
        if self.metrics is not None and events:
            labels = {"projection": self.name}
            self.metrics.add(PROJECTION_EVENTS, events, labels)
            self.metrics.record(PROJECTION_DURATION, seconds, labels)

    def handle_inline(self, transaction: Any, batch: list[StoredEvent]) -> None:
        """The store's inline hook: handle the batch inside the append's transaction."""
        started = time.perf_counter()
        for stored in batch:
            self._call_sync(stored, transaction)
        self._report(len(batch), time.perf_counter() - started)

    async def handle_inline_async(self, transaction: Any, batch: list[StoredEvent]) -> None:
        """The inline hook of a store whose transactions are async: handlers, plain or async,
        run inside the append's transaction on the loop."""
        started = time.perf_counter()
        await self._call_async(batch, transaction)
        self._report(len(batch), time.perf_counter() - started)

    async def _call_async(self, batch: list[StoredEvent], transaction: Any) -> None:
        """Handle a batch in a transaction of a store whose transactions are async: one
        handler at a time (they share the transaction's connection)."""
        for stored in batch:
            result = self._call(stored, transaction)
            if result is not None:
                await result

    def _call_sync(self, stored: StoredEvent, transaction: Any) -> None:
        result = self._call(stored, transaction)
        if result is not None:  # refused at definition time; a handler may still return one
            result.close()  # type: ignore[attr-defined]
            msg = f"{self.compiled.mode} handlers must not be coroutines"
            raise _error(self.name, stored, TypeError(msg))

    def _call(self, stored: StoredEvent, transaction: Any) -> Awaitable[None] | None:
        """Decode an event and call its handler; a failure is a ProjectionError naming it.

        The handler runs as caused by the event (commands it sends carry its correlation).
        """
        try:
            event = self.codec.decode_event(
                stored.type, stored.data, where=f" at position {stored.position}"
            )
            handler = self._lookup_cache.get(type(event))
            if handler is None:
                found = _lookup(self.compiled.handlers, type(event))  # type: ignore[arg-type]
                if found is None:
                    return None  # an event of a type this projection does not handle
                handler = cast(_Handler, found)
                self._lookup_cache[type(event)] = handler
            if handler.takes_context:
                record = RecordedEvent.of(event, stored)
                arguments: tuple[Any, ...] = (
                    event,
                    ProjectionContext(record, transaction, self.runtime),
                )
            else:
                arguments = (event,)
            if handler.is_async:
                # the coroutine runs (and sees the cause) when awaited, in _awaited
                return self._awaited(stored, handler.function(self.projection, *arguments))
            started = time.perf_counter() if logger.isEnabledFor(logging.DEBUG) else None
            token = current_cause.set(cause_of(stored.event_id, stored.metadata))
            try:
                result = handler.function(self.projection, *arguments)
            finally:
                current_cause.reset(token)
        except Exception as exc:
            raise _error(self.name, stored, exc) from exc
        if started is not None:
            _log_updated(self.name, stored, started)
        return cast(None, result)

    async def _awaited(self, stored: StoredEvent, result: Awaitable[None]) -> None:
        started = time.perf_counter() if logger.isEnabledFor(logging.DEBUG) else None
        token = current_cause.set(cause_of(stored.event_id, stored.metadata))
        try:
            await result
        except Exception as exc:
            raise _error(self.name, stored, exc) from exc
        finally:
            current_cause.reset(token)
        if started is not None:
            _log_updated(self.name, stored, started)


def _log_updated(name: str, stored: StoredEvent, started: float) -> None:
    logger.debug(
        "projection updated",
        extra={
            "projection": name,
            "event_id": stored.event_id,
            "event_type": stored.type,
            "stream_id": stored.stream_id,
            "version": stored.version,
            "position": stored.position,
            "correlation_id": stored.metadata.get(CORRELATION_ID),
            "processing_time_ms": (time.perf_counter() - started) * 1000,
        },
    )


def _error(name: str, stored: StoredEvent, exc: BaseException) -> ProjectionError:
    """The error a projection handler's failure on ``stored`` is reported as."""
    error = ProjectionError(
        name,
        position=stored.position,
        stream_id=stored.stream_id,
        version=stored.version,
        event_type=stored.type,
        error=exc,
    )
    error.__cause__ = exc
    return error


def _nothing() -> None:
    pass
