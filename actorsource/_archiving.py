"""Retention: archiving the events snapshots cover, deleting streams, and the archive files.

Archiving moves a stream's oldest events out of the hot store: the archiver receives them
first (:class:`JsonLinesArchiver` writes gzip'd JSON lines), then the store removes them in
one transaction that checks again that they are behind the stream's latest snapshot, before
its last event, and handled by every reader (each stored checkpoint, and the positions the
runtime's own in-memory readers stand at).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

import anyio.to_thread

from ._errors import StoreError, StreamArchivedError, StreamDeletedError, StreamNotFoundError
from ._ids import new_event_id
from ._records import TOMBSTONE_TYPE, AppendResult, ArchivedStream, NewEvent, StoredEvent
from .stores._base import EventStore, StoreCapabilities, check_stream_id

logger = logging.getLogger("actorsource.archive")

#: a store's ``archive_stream`` (see :class:`StoreCapabilities`)
ArchiveStream = Callable[[str, int, int | None], Awaitable[int]]
#: a store's ``delete_stream`` (see :class:`StoreCapabilities`)
DeleteStream = Callable[[str, NewEvent, bool], Awaitable[AppendResult]]


class Archiver(Protocol):
    """Receives a stream's events before they leave the store.

    It must have stored them durably when it returns (the store removes them next); what it
    returns names where they went (a file path, an object key), reported back to the caller.
    If it raises, nothing is removed.
    """

    async def __call__(self, stream_id: str, events: Sequence[StoredEvent]) -> str: ...


class JsonLinesArchiver:
    """Writes each archived run of a stream to one gzip'd JSON-lines file in ``directory``.

    The file is ``<stream id>.<first version>-<last version>.jsonl.gz``: the stream id
    percent-encoded (``/``, ``%`` and other characters unsafe in file names escaped), the
    versions zero-padded to 12 digits so that a directory listing sorts a stream's files in
    order. One line per event, a JSON object with the :class:`StoredEvent` fields
    (``recorded_at`` in ISO 8601). It is written to a temporary file, flushed to disk and
    then renamed, so that a file either holds its whole run or does not exist. Read one back
    with :func:`read_archive` (or ``zcat``).

    :param directory: where the files go (created if missing)
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"JsonLinesArchiver({str(self.directory)!r})"

    def path_for(self, stream_id: str, first_version: int, last_version: int) -> Path:
        """Return the file holding ``stream_id``'s events ``first_version`` to ``last_version``."""
        name = urllib.parse.quote(stream_id, safe="-_@+=,")
        return self.directory / f"{name}.{first_version:012d}-{last_version:012d}.jsonl.gz"

    async def __call__(self, stream_id: str, events: Sequence[StoredEvent]) -> str:
        """Write ``events`` (one stream's, in version order) to their file; return its path."""
        path = self.path_for(stream_id, events[0].version, events[-1].version)
        await anyio.to_thread.run_sync(_write_lines, path, list(events))
        return str(path)


def read_archive(path: str | os.PathLike[str]) -> Iterator[StoredEvent]:
    """Yield the events of an archive file that :class:`JsonLinesArchiver` wrote, in order."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            item = json.loads(line)
            yield StoredEvent(
                item["stream_id"],
                item["version"],
                item["position"],
                item["type"],
                item["data"],
                item["metadata"],
                item["event_id"],
                datetime.fromisoformat(item["recorded_at"]),
            )


def _write_lines(path: Path, events: list[StoredEvent]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".archiving-")
    try:
        with os.fdopen(handle, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0) as zipped:
                for event in events:
                    zipped.write(_line(event).encode())
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # the rename is durable once the directory is
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _line(event: StoredEvent) -> str:
    item = {
        "stream_id": event.stream_id,
        "version": event.version,
        "position": event.position,
        "type": event.type,
        "data": event.data,
        "metadata": event.metadata,
        "event_id": event.event_id,
        "recorded_at": event.recorded_at.isoformat(),
    }
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n"


async def archive_stream(
    store: EventStore,
    remove: ArchiveStream,
    stream_id: str,
    archiver: Archiver,
    *,
    through_version: int | None,
    max_position: int | None,
    explicit: bool,
) -> ArchivedStream | None:
    """Archive what may leave the store of one stream; return what was done (None: nothing).

    :param remove: the store's ``archive_stream``
    :param through_version: archive no further than this version (None: as far as allowed)
    :param max_position: the lowest position a reader of this runtime stands at
    :param explicit: the stream was named: refuse what cannot be done, rather than skip it
    """
    head = await store.stream_version(stream_id)
    if head == 0:
        raise StreamNotFoundError(stream_id, "archive")
    async for last in store.read_stream(stream_id, head, head):
        if last.type == TOMBSTONE_TYPE:
            if not explicit:
                return None
            deleted = StreamDeletedError(stream_id, hard=bool(last.data.get("hard")), version=head)
            raise deleted
    snapshot = await store.load_snapshot(stream_id)
    if explicit and through_version is not None:
        past_snapshot = snapshot is None or through_version > snapshot.version
        if past_snapshot or through_version >= head:
            await remove(stream_id, through_version, max_position)  # refused: says why
    limit = min(head - 1, snapshot.version if snapshot is not None else 0)
    if through_version is not None:
        limit = min(limit, through_version)
    checkpoints = await store.list_checkpoints()
    bounds = [*checkpoints.values(), *([max_position] if max_position is not None else [])]
    bound = min(bounds, default=None)
    events = await _archivable(store, stream_id, limit, bound)
    if not events:
        if explicit:
            # the store says why not (deleted, no snapshot, a reader behind), or does nothing
            # when it is archived that far already
            wanted = through_version if through_version is not None else max(limit, 1)
            await remove(stream_id, wanted, max_position)
        return None
    location = await archiver(stream_id, events)
    removed = await remove(stream_id, events[-1].version, max_position)
    logger.info(
        "events archived",
        extra={
            "stream_id": stream_id,
            "from_version": events[0].version,
            "to_version": events[-1].version,
            "event_count": removed,
            "location": location,
        },
    )
    return ArchivedStream(stream_id, events[0].version, events[-1].version, location)


async def _archivable(
    store: EventStore, stream_id: str, limit: int, bound: int | None
) -> list[StoredEvent]:
    """The stream's stored events up to version ``limit`` and position ``bound``."""
    if limit < 1:
        return []
    start = 1
    while True:
        events: list[StoredEvent] = []
        try:
            async for event in store.read_stream(stream_id, start, limit):
                if bound is not None and event.position > bound:
                    break
                events.append(event)
        except StreamArchivedError as exc:
            if exc.first_kept_version <= start:
                raise
            start = exc.first_kept_version  # archived before: go on from what is stored
            continue
        return events


def archiving_capability(store: EventStore, capabilities: StoreCapabilities) -> ArchiveStream:
    """The store's ``archive_stream``, or a clear error if it has none."""
    remove = capabilities.archive_stream
    if remove is None:
        msg = f"{store!r} cannot archive events (its capabilities have no archive_stream)"
        raise StoreError(msg)
    return remove


def deleting_capability(store: EventStore, capabilities: StoreCapabilities) -> DeleteStream:
    """The store's ``delete_stream``, or a clear error if it has none."""
    delete = capabilities.delete_stream
    if delete is None:
        msg = f"{store!r} cannot delete streams (its capabilities have no delete_stream)"
        raise StoreError(msg)
    return delete


def tombstone(stream_id: str, hard: bool) -> NewEvent:
    """The tombstone event a deleted stream ends with (a :class:`StreamDeleted`)."""
    check_stream_id(stream_id)
    return NewEvent(new_event_id(), TOMBSTONE_TYPE, {"stream_id": stream_id, "hard": hard}, {})


class Retention:
    """A runtime's archiving and deleting (see :meth:`Runtime.archive`,
    :meth:`Runtime.delete_stream`)."""

    def __init__(
        self,
        store: EventStore,
        capabilities: StoreCapabilities,
        reader_positions: Callable[[], list[int]],
        passivate: Callable[[str], object],
    ) -> None:
        self.store = store
        self.capabilities = capabilities
        #: the positions this runtime's in-memory readers have handled up to
        self.reader_positions = reader_positions
        #: passivate a stream's live actor, if it is idle
        self.passivate = passivate

    async def archive(
        self,
        stream: str | None,
        category: str | None,
        archiver: Archiver,
        through_version: int | None,
    ) -> list[ArchivedStream]:
        """See :meth:`Runtime.archive`."""
        remove = archiving_capability(self.store, self.capabilities)
        if stream is not None and category is not None:
            msg = "archive() takes stream= or category= (or neither, for every stream), not both"
            raise ValueError(msg)
        if through_version is not None:
            if stream is None:
                msg = "archive(through_version=...) needs stream= (versions are per stream)"
                raise ValueError(msg)
            if (
                not isinstance(through_version, int)
                or isinstance(through_version, bool)
                or through_version < 1
            ):
                msg = f"through_version must be an int >= 1, got {through_version!r}"
                raise ValueError(msg)
        if not callable(archiver):
            msg = f"archiver must be an async callable (a JsonLinesArchiver...), got {archiver!r}"
            raise ValueError(msg)
        if stream is not None:
            streams = [check_stream_id(stream)]
        else:
            if category is not None and (not isinstance(category, str) or not category):
                msg = f"category must be a non-empty str, got {category!r}"
                raise ValueError(msg)
            streams = [info.stream_id for info in await self.store.list_streams(category)]
        positions = self.reader_positions()
        max_position = min(positions) if positions else None
        done: list[ArchivedStream] = []
        for stream_id in streams:
            archived = await archive_stream(
                self.store,
                remove,
                stream_id,
                archiver,
                through_version=through_version,
                max_position=max_position,
                explicit=stream is not None,
            )
            if archived is not None:
                done.append(archived)
        return done

    async def delete(self, stream_id: str, hard: bool) -> AppendResult:
        """See :meth:`Runtime.delete_stream`."""
        delete = deleting_capability(self.store, self.capabilities)
        result = await delete(stream_id, tombstone(stream_id, hard), hard)
        # an idle live actor goes now; a busy one's next append meets the tombstone's version
        # and its reload the tombstone itself
        self.passivate(stream_id)
        logger.info(
            "stream deleted",
            extra={"stream_id": stream_id, "hard": hard, "version": result.version},
        )
        return result
