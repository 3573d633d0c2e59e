"""The rules of archiving and deleting streams, checked by every store inside its transaction.

A store gathers the facts in the transaction that changes the stream (so that nothing moves
between the check and the change) and asks these functions whether to go ahead. Archiving and
deleting never remove a stream's last event, so a stream's version and the store's head
position never go back, and a later append can never take a version or a position again.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..._errors import StreamArchivedError, StreamDeletedError, StreamNotFoundError
from ..._records import TOMBSTONE_TYPE, JSONDict
from .checks import MAX_VERSION, check_stream_id


def check_archive_args(stream_id: str, through_version: int, max_position: int | None) -> None:
    """Raise a ValueError naming what is wrong with the arguments of ``archive_stream``."""
    check_stream_id(stream_id)
    if not _is_count(through_version) or through_version < 1:
        msg = (
            f"archiving {stream_id!r}: through_version must be an int >= 1, got {through_version!r}"
        )
        raise ValueError(msg)
    if max_position is not None and (not _is_count(max_position) or max_position < 0):
        msg = (
            f"archiving {stream_id!r}: max_position must be an int >= 0 or None, "
            f"got {max_position!r}"
        )
        raise ValueError(msg)


def archive_refusal(
    stream_id: str,
    through_version: int,
    *,
    head: int,
    first_kept: int,
    last_type: str | None,
    last_data: JSONDict | None,
    snapshot_version: int | None,
    through_position: int | None,
    max_position: int | None,
    checkpoints: Mapping[str, int],
) -> Exception | None:
    """Return why a stream's events up to ``through_version`` may not be archived, or None.

    :param head: the stream's last version (0: no events)
    :param first_kept: its first version still stored
    :param last_type: the type of its last event (a tombstone's type: it was deleted)
    :param snapshot_version: the version of its latest snapshot (None: none)
    :param through_position: the position of the event at ``through_version``
    :param checkpoints: every stored checkpoint
    """
    if head == 0:
        return StreamNotFoundError(stream_id, "archive")
    if last_type == TOMBSTONE_TYPE:
        return StreamDeletedError(stream_id, hard=bool((last_data or {}).get("hard")), version=head)
    if through_version < first_kept:
        return None  # archived already: nothing to do
    if through_version >= head:
        msg = (
            f"cannot archive {stream_id!r} through version {through_version}: the stream is at "
            f"version {head}, and its last event is always kept (archive through {head - 1} "
            "at most)"
        )
        return ValueError(msg)
    if snapshot_version is None or snapshot_version < through_version:
        have = (
            "it has no snapshot"
            if snapshot_version is None
            else f"its latest snapshot is at version {snapshot_version}"
        )
        msg = (
            f"cannot archive {stream_id!r} through version {through_version}: {have}, and "
            "only events a snapshot covers can leave the store (save a snapshot first: "
            "ref.snapshot() or a snapshot policy)"
        )
        return ValueError(msg)
    if through_position is None:  # between first_kept and head: always stored
        msg = f"archiving {stream_id!r}: version {through_version} is not stored"
        return ValueError(msg)
    behind = sorted(name for name, position in checkpoints.items() if position < through_position)
    if behind:
        lowest = min(checkpoints[name] for name in behind)
        msg = (
            f"cannot archive {stream_id!r} through version {through_version} (position "
            f"{through_position}): checkpoint {', '.join(map(repr, behind))} has handled only up "
            f"to position {lowest}; archiving never removes an event a projection has not "
            "handled"
        )
        return ValueError(msg)
    if max_position is not None and through_position > max_position:
        msg = (
            f"cannot archive {stream_id!r} through version {through_version} (position "
            f"{through_position}): a reader of this runtime (a projection it runs, "
            f"or a subscription) has handled only up to position {max_position}"
        )
        return ValueError(msg)
    return None


def deletion_refusal(
    stream_id: str, hard: bool, *, head: int, last_type: str | None, last_data: JSONDict | None
) -> Exception | None:
    """Return why a stream may not be deleted (``hard`` or not), or None.

    A soft-deleted stream may still be hard-deleted; nothing else deletes a stream twice.
    """
    if head == 0:
        return StreamNotFoundError(stream_id, "delete")
    if last_type == TOMBSTONE_TYPE:
        was_hard = bool((last_data or {}).get("hard"))
        if was_hard or not hard:
            return StreamDeletedError(stream_id, hard=was_hard, version=head)
    return None


def check_delete_args(stream_id: str, tombstone_type: str, hard: object) -> None:
    """Raise a ValueError naming what is wrong with the arguments of ``delete_stream``."""
    check_stream_id(stream_id)
    if tombstone_type != TOMBSTONE_TYPE:
        msg = (
            f"deleting {stream_id!r}: the tombstone must be a {TOMBSTONE_TYPE} event, "
            f"got {tombstone_type!r}"
        )
        raise ValueError(msg)
    if not isinstance(hard, bool):
        msg = f"deleting {stream_id!r}: hard must be a bool, got {hard!r}"
        raise ValueError(msg)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value <= MAX_VERSION


def before_kept(
    stream_id: str, first_version: int, first_type: str, first_data: JSONDict
) -> Exception:
    """The error for a read of a stream from before its first stored event (``first_*``).

    The first stored event of a hard-deleted stream is its tombstone; of an archived one, the
    first event kept.
    """
    if first_type == TOMBSTONE_TYPE:
        hard = bool(first_data.get("hard"))
        return StreamDeletedError(stream_id, hard=hard, version=first_version)
    return StreamArchivedError(stream_id, first_version)
