"""Argument checks every store makes at its door, before anything is queued or sent."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from ..._errors import NaiveDatetimeError
from ..._records import NewEvent, SnapshotRecord

#: the largest version or position a store can hold (SQLite and Postgres hold signed 64 bits)
MAX_VERSION: Final = 2**63 - 1


def check_stream_id(stream_id: object) -> str:
    """Return ``stream_id`` if it is a non-empty str, else raise a ValueError naming it."""
    if type(stream_id) is str and stream_id and stream_id.isascii():
        return stream_id  # almost every id: spare the calls below
    if not isinstance(stream_id, str) or not stream_id:
        msg = f"a stream id must be a non-empty str, got {stream_id!r}"
        raise ValueError(msg)
    if not _is_utf8(stream_id):
        # caught here: in a SQLite batch it would fail the other appends of the batch too
        msg = f"a stream id must be valid Unicode (no lone surrogates), got {stream_id!r}"
        raise ValueError(msg)
    return stream_id


def check_append(stream_id: str, expected_version: int | None, events: Sequence[NewEvent]) -> None:
    """Raise a ValueError naming what is wrong with the arguments of an append."""
    if not (type(stream_id) is str and stream_id and stream_id.isascii()):
        check_stream_id(stream_id)  # almost every id passes above: spare the call
    if expected_version is not None and (
        not isinstance(expected_version, int)
        or isinstance(expected_version, bool)
        or expected_version < 0
    ):
        msg = (
            f"expected_version of an append to {stream_id!r} must be an int >= 0 or None, "
            f"got {expected_version!r}"
        )
        raise ValueError(msg)
    if not events:
        msg = f"an append to {stream_id!r} needs at least one event"
        raise ValueError(msg)
    for event in events:
        event_id, type_name = event.event_id, event.type
        if (
            type(event_id) is str
            and type(type_name) is str
            and event_id
            and type_name
            and event_id.isascii()
            and type_name.isascii()
        ):
            continue  # almost every event: spare the checks below
        for field, value in (("event_id", event_id), ("type", type_name)):
            if not isinstance(value, str) or not value or not _is_utf8(value):
                msg = (
                    f"the {field} of an event appended to {stream_id!r} must be a non-empty str "
                    f"of valid Unicode, got {value!r}"
                )
                raise ValueError(msg)


def check_checkpoint(name: object, position: object = 0) -> str:
    """Return a checkpoint ``name`` if it and ``position`` are valid, else raise a ValueError.

    A name is what every store can hold and find again exactly: a non-empty str of valid
    Unicode without NUL (PostgreSQL's text cannot hold NUL).
    """
    if not isinstance(name, str) or not name or not _is_utf8(name) or "\x00" in name:
        msg = (
            "a checkpoint name (a projection's name) must be a non-empty str of valid Unicode "
            f"without NUL, got {name!r}"
        )
        raise ValueError(msg)
    if not _is_int(position) or not 0 <= position <= MAX_VERSION:  # type: ignore[operator]
        msg = (
            f"checkpoint {name!r}: a position must be an int from 0 to {MAX_VERSION}, "
            f"got {position!r}"
        )
        raise ValueError(msg)
    return name


def check_filters(
    types: Collection[str] | None, categories: Collection[str] | None
) -> tuple[frozenset[str] | None, tuple[str, ...] | None]:
    """Return the type names and stream-id prefixes ``read_all`` filters by (``None``: all).

    :raises ValueError: if a filter is a bare str (a common slip for ``[str]``) or holds a
        non-str
    """
    found: list[Any] = []
    for what, given in (("types", types), ("categories", categories)):
        if given is None:
            found.append(None)
            continue
        if isinstance(given, str):
            msg = f"read_all {what} must be a collection of str, got the str {given!r}"
            raise ValueError(msg)
        items = list(given)
        bad = [item for item in items if not isinstance(item, str) or not item]
        if bad:
            msg = f"read_all {what} must be non-empty strs, got {bad[0]!r}"
            raise ValueError(msg)
        found.append(items)
    type_names, category_names = found
    return (
        None if type_names is None else frozenset(type_names),
        None if category_names is None else tuple(f"{c}-" for c in category_names),
    )


def check_command_ids(command_ids: Collection[str]) -> list[str]:
    """Return the command ids ``find_command_events`` looks for, sorted, without repeats.

    :raises ValueError: if ``command_ids`` is a bare str (a common slip for ``[str]``) or holds
        a non-str, an empty str, a str that is not valid Unicode or one holding NUL (which
        no store can look up exactly: PostgreSQL's text refuses it, SQLite's JSON functions
        do not match it)
    """
    if isinstance(command_ids, str):
        msg = f"command_ids must be a collection of str, got the str {command_ids!r}"
        raise ValueError(msg)
    ids = set(command_ids)
    for command_id in ids:
        if (
            not isinstance(command_id, str)
            or not command_id
            or not _is_utf8(command_id)
            or "\x00" in command_id
        ):
            msg = (
                "command ids must be non-empty strs of valid Unicode without NUL, "
                f"got {command_id!r}"
            )
            raise ValueError(msg)
    return sorted(ids)


def matches(
    stored_type: str,
    stream_id: str,
    types: frozenset[str] | None,
    prefixes: tuple[str, ...] | None,
) -> bool:
    """Whether an event passes ``read_all``'s type and category filters."""
    if types is not None and stored_type not in types:
        return False
    return prefixes is None or stream_id.startswith(prefixes)


def check_time(what: str, value: datetime | None) -> datetime | None:
    """Return ``value`` in UTC; a naive datetime is refused (its time zone would be a guess).

    :raises NaiveDatetimeError: if ``value`` has no time zone
    """
    if value is None:
        return None
    if not isinstance(value, datetime):
        msg = f"{what} must be a datetime, got {value!r}"
        raise ValueError(msg)
    if value.tzinfo is None:
        raise NaiveDatetimeError(what, value)
    return value.astimezone(UTC)


def check_snapshot(snapshot: SnapshotRecord) -> None:
    """Raise a ValueError naming what is wrong with a snapshot to save."""
    check_stream_id(snapshot.stream_id)
    for field, value in (
        ("version", snapshot.version),
        ("schema_version", snapshot.schema_version),
    ):
        if not _is_int(value) or not 0 <= value <= MAX_VERSION:
            msg = (
                f"the {field} of a snapshot of {snapshot.stream_id!r} must be an int from 0 "
                f"to {MAX_VERSION}, got {value!r}"
            )
            raise ValueError(msg)


def check_keep(keep: object) -> int | None:
    """Return how many snapshots a save keeps (``None``: all), else raise a ValueError."""
    if keep is not None and (not _is_int(keep) or not 1 <= keep <= MAX_VERSION):  # type: ignore[operator]
        msg = (
            f"keep must be an int from 1 to {MAX_VERSION} (snapshots kept per stream) or None, "
            f"got {keep!r}"
        )
        raise ValueError(msg)
    return keep  # type: ignore[return-value]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
