"""The writes queued for the writer's thread, and how their callers hear back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ..._records import (
    AppendResult,
)
from .._base import (
    InlineHook,
    TransactionWork,
)

logger = logging.getLogger("actorsource.stores.sqlite")


@attrs.define(slots=True)
class _Append:
    stream_id: str
    expected_version: int | None
    #: (type, data json (or compressed), metadata json, event_id)
    rows: list[tuple[str, str | bytes, str, str]]
    #: resolved at commit, unless the appender gave ``on_done``
    future: asyncio.Future[AppendResult] | None
    #: called at commit with the result or the error (``append_then``), instead of a future
    on_done: Callable[[AppendResult | BaseException], None] | None = None


@attrs.define(slots=True)
class _SaveSnapshot:
    #: (stream_id, version, schema_version, state json (or compressed))
    row: tuple[str, int, int, str | bytes]
    future: asyncio.Future[None]
    #: delete the stream's snapshots but the ``keep`` latest in the same transaction
    keep: int | None = None


@attrs.define(slots=True)
class _Transact:
    """Read-model work and a checkpoint, committed together (or neither)."""

    name: str
    position: int
    work: TransactionWork[Any] | None  # None: only save the checkpoint
    future: asyncio.Future[Any]
    expected: int | None = None  # where the checkpoint must stand (None: anywhere)


@attrs.define(slots=True)
class _CatchUpInline:
    """Feed a newly added inline projection every event after its checkpoint."""

    name: str
    hook: InlineHook
    future: asyncio.Future[Any]


@attrs.define(slots=True)
class _TimedAppend:
    """An append and its timer writes, committed together (or neither)."""

    stream_id: str
    expected_version: int
    rows: list[tuple[str, str | bytes, str, str]]  # as _Append's (maybe none)
    #: ("set", owner, key, target, command type, data json, due µs, interval, missed) or
    #: ("drop", owner, key)
    timers: list[tuple[Any, ...]]
    future: asyncio.Future[AppendResult]


@attrs.define(slots=True)
class _Work:
    """Timer bookkeeping run in the writer's transaction (a claim, a finished tick)."""

    work: TransactionWork[Any]
    future: asyncio.Future[Any]


_Op = _Append | _SaveSnapshot | _Transact | _CatchUpInline | _TimedAppend | _Work


def _answer_op(op: _Op, outcome: Any) -> None:
    """Tell a write's caller its outcome (an exception is its error), unless it gave up."""
    _answer_ops((op,), (outcome,))


def _answer_ops(ops: Iterable[_Op], outcomes: Iterable[Any]) -> None:
    """Tell each write's caller its outcome (one call per batch, not per write).

    A callback (``append_then``) must not raise: what it raises is logged, and the other
    writers of the batch still hear back.
    """
    for op, outcome in zip(ops, outcomes, strict=True):
        if type(op) is _Append and op.on_done is not None:
            on_done, op.on_done = op.on_done, None  # at most once
            try:
                on_done(outcome)
            except Exception:
                logger.exception("an append's callback failed", extra={"stream_id": op.stream_id})
            continue
        future = op.future
        if future is None or future.done():  # the caller was cancelled; the write stands
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
