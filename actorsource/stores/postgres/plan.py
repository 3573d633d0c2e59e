"""What the writer sends: the queued writes, a batch's plan (rows as arrays for one statement),
and the outcomes it resolves to."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import attrs

from ..._errors import ConcurrencyError, StoreError
from ..._records import AppendResult
from .._base import Fence, refused_event_ids

#: JSON text that JSONB would not give back as it was: NUL (JSONB refuses it), a number with an
#: exponent (``numeric`` prints ``1e+16`` as an integer) and negative zero (``numeric`` has none).
#: Numbers are matched as tokens (after ``:``, ``,`` or ``[`` in orjson's compact text), so that
#: the hex digits of the UUIDs every event's metadata holds ("0195e3...") do not count as
#: exponents; a string that happens to look like one only costs an exact copy.
_NOT_JSONB_EXACT: Final = re.compile(r"\\u0000|[:,\[]-?[0-9][0-9.]*[eE]|[:,\[]-0\.0(?![0-9])")


def _check_no_nul(what: str, value: str) -> None:
    if "\x00" in value:
        msg = f"{what} cannot hold NUL characters in PostgreSQL (text refuses them), got {value!r}"
        raise ValueError(msg)


#: the types of JSON values that JSONB gives back as they were (NUL aside): no float
_EXACT_IN_JSONB: Final = frozenset({str, int, bool, type(None)})


def _jsonb_columns(text: str, value: object) -> tuple[str | None, str | None]:
    """Return what goes into a JSONB column and its exact-text column for JSON ``text``."""
    if "\\u0000" not in text and _without_floats(value):
        # the common case, decided without scanning the text (the search below costs ~8 us
        # on a typical metadata dict of three UUIDs)
        return text, None
    if len(text) < 3 or not _NOT_JSONB_EXACT.search(text):
        return text, None  # JSONB gives it back as it was
    if "\\u0000" in text and _has_nul(value):
        return None, text
    return text, text


def _without_floats(value: object) -> bool:
    """Whether ``value`` is made of dicts, lists, str, int, bool and None only (False for
    anything else, whose JSON text is then searched)."""
    items: Iterable[object]
    if isinstance(value, dict):
        items = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return type(value) in _EXACT_IN_JSONB
    for item in items:
        if type(item) not in _EXACT_IN_JSONB and not _without_floats(item):
            return False
    return True


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


#: one event's row: (type, data for JSONB, exact data, metadata for JSONB, exact metadata, id);
#: data compressed by the writer is bytes in place of the data for JSONB
_Row = tuple[str, str | bytes | None, str | None, str | None, str | None, str]


@attrs.define(slots=True)
class _Append:
    stream_id: str
    expected_version: int | None
    rows: list[_Row]
    future: asyncio.Future[AppendResult]
    #: whether a row's data is longer than the store's ``compress_over`` (the writer then
    #: compresses it: its row holds the compressed bytes as its data, and no exact text)
    large: bool = False
    #: the shard lease the append must still hold when it commits (None: unfenced)
    fence: Fence | None = None


#: a snapshot's row: (stream_id, version, schema_version, state for JSONB, exact state,
#: compressed state)
_SnapshotRow = tuple[str, int, int, str | None, str | None, bytes | None]


@attrs.define(slots=True)
class _SaveSnapshot:
    row: _SnapshotRow
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
    data: list[str | bytes | None] = attrs.Factory(list)
    data_text: list[str | None] = attrs.Factory(list)
    metadata: list[str | None] = attrs.Factory(list)
    metadata_text: list[str | None] = attrs.Factory(list)
    event_ids: list[str] = attrs.Factory(list)
    #: each stream the batch appends to, and the version it must be at before the batch
    check_streams: list[str] = attrs.Factory(list)
    check_heads: list[int] = attrs.Factory(list)
    #: the snapshots to save (a later save of one stream and version replaces an earlier one)
    snapshots: dict[tuple[str, int], _SnapshotRow] = attrs.Factory(dict)
    #: per op: an append's (offset of its first row, its last version), or the error it fails
    #: with; None for a snapshot
    outcomes: list[tuple[int, int] | AppendResult | BaseException | None] = attrs.Factory(list)
    #: the head of each stream the batch appended to, after it
    heads: dict[str, int] = attrs.Factory(dict)


def _plan(batch: Sequence[_Op], heads: Mapping[str, int], stored: set[str] | None) -> _Plan:
    """Decide a batch: versions, conflicts and duplicates, one outcome per op.

    With ``stored`` (the batch's event ids found in the table) ``heads`` are facts read under
    the lock, and the plan is final. Without, ``heads`` are what the writer last saw, and an
    append's expected version is taken as its stream's head: the append function checks
    under the lock that each stream's last stored version is its planned head, and the unique
    constraint refuses an event id stored before.

    :raises _NeedFacts: if an append has no expected version and its stream's head is unknown
    """
    plan = _Plan()
    running: dict[str, int] = {}
    used: set[str] = set()
    rows: list[_Row] = []  # the rows to insert, turned into columns at the end
    outcomes = plan.outcomes
    for op in batch:
        if isinstance(op, _SaveSnapshot):
            plan.snapshots[op.row[:2]] = op.row
            outcomes.append(None)
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
            outcomes.append(ConcurrencyError(stream_id, expected, head))
            continue
        added = op.rows
        count = len(added)
        if count == 1 and stored is None and added[0][5] not in used:
            used.add(added[0][5])  # the common case, without the general check's lists
        else:
            ids = [row[5] for row in added]
            refused = _refused_ids(stream_id, ids, used, stored)
            if refused is not None:
                outcomes.append(refused)
                continue
            used.update(ids)
        if stored is None and stream_id not in plan.heads:
            # the stream's first append in the batch, planned on a head the writer believes:
            # the server checks it under the lock (a head the writer saw may be stale, and
            # the versions after it archived or deleted since, which the unique
            # (stream, version) index cannot see)
            plan.check_streams.append(stream_id)
            plan.check_heads.append(head)
        outcomes.append((len(rows), head + count))
        rows += added
        if count == 1:
            plan.stream_ids.append(stream_id)
            plan.versions.append(head + 1)
        else:
            plan.stream_ids += [stream_id] * count
            plan.versions += range(head + 1, head + count + 1)
        head += count
        running[stream_id] = plan.heads[stream_id] = head
    if rows:
        columns = list(zip(*rows, strict=True))
        plan.types = list(columns[0])
        plan.data = list(columns[1])
        plan.data_text = list(columns[2])
        plan.metadata = list(columns[3])
        plan.metadata_text = list(columns[4])
        plan.event_ids = list(columns[5])
    if stored is not None:
        plan.heads = running  # facts, for the streams that failed too
    return plan


def _refused_ids(
    stream_id: str, ids: list[str], used: set[str], stored: set[str] | None
) -> StoreError | None:
    """The error for an append whose event ids repeat or already exist, or None."""
    msg = refused_event_ids(
        stream_id, ids, lambda i: i in used or (stored is not None and i in stored)
    )
    if msg is None:
        return None
    return StoreError(f"{msg}; nothing of this append was stored")


class _Sent:
    """Whether a batch's writing statement went to the server (its outcome is then unknown
    when the connection fails)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False


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
