"""Rules of appending that every store follows the same way: which stream heads a writer
remembers, and when a refused append is the retry of one already committed."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .checks import MAX_VERSION


class KnownHeads(dict[str, int]):
    """Stream id -> head version, as last written or checked by one store's writer, the most
    recently used last; at most ``limit`` of them (the oldest are forgotten first).

    A plain dict underneath: the writer's lookups cost what a dict's cost.
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        #: how many heads are kept
        self.limit = limit

    def remember(self, heads: Mapping[str, int]) -> None:
        """Record ``heads`` as the newest, then forget the oldest beyond the limit."""
        for stream_id, version in heads.items():
            self.pop(stream_id, None)
            self[stream_id] = version
        excess = len(self) - self.limit
        if excess > 0:
            # islice, not list(self): once the limit is reached every batch evicts, and
            # copying all the keys a batch would cost more than the batch
            for stream_id in list(itertools.islice(self, excess)):
                del self[stream_id]


def retry_start(expected: int | None, first_stored_version: int | None, count: int) -> int | None:
    """The version an earlier append of ``count`` events would have started after, or None
    when there cannot be one.

    "These versions" follow ``expected``; for ``None`` (append anywhere), the version at which
    the append's first event id is stored (``first_stored_version``, None if it is not).
    """
    if expected is None:
        if first_stored_version is None:
            return None
        start = first_stored_version - 1
    else:
        start = expected
    if start + count > MAX_VERSION:
        return None
    return start


def prior_append(
    event_ids: Sequence[str], start: int, stored: Sequence[Sequence[Any]]
) -> tuple[int, int, Any] | None:
    """Whether exactly these events were appended before, at these versions, in one commit.

    An append refused for its version or its event ids may be the very append committed
    earlier, whose reply was lost (a retry): then it returns that commit's result. Stores look
    only on their failure paths, so an ordinary append pays nothing.

    :param event_ids: the append's event ids, in order
    :param start: from :func:`retry_start`
    :param stored: the stream's rows at versions ``start + 1 ..`` ``start + len(event_ids)``,
        as ``(event_id, position, recorded_at)`` in version order
    :return: ``(version, first position, recorded_at)`` of the earlier append, or None
    """
    if [row[0] for row in stored] != list(event_ids):
        return None
    first_position, recorded_at = stored[0][1], stored[0][2]
    # one commit: positions in sequence and one commit time, as an AppendResult reports them
    if any(row[1] != first_position + i or row[2] != recorded_at for i, row in enumerate(stored)):
        return None
    return start + len(event_ids), first_position, recorded_at


def refused_event_ids(
    stream_id: str, event_ids: Sequence[str], is_stored: Callable[[str], bool]
) -> str | None:
    """Why an append's event ids are refused, or None: one appears twice in the append, or
    one is already stored (``is_stored`` says; asked only when none repeats)."""
    seen: set[str] = set()
    for event_id in event_ids:
        if event_id in seen:
            return f"event id {event_id!r} appears twice in one append to {stream_id!r}"
        seen.add(event_id)
    taken = next((event_id for event_id in event_ids if is_stored(event_id)), None)
    if taken is None:
        return None
    return f"event id {taken!r} is already stored (appending to {stream_id!r})"
