"""Records: what the runtime hands to a store, what a store hands back, and what callers receive.

The raw records (:class:`NewEvent`, :class:`StoredEvent`, :class:`SnapshotRecord`) hold JSON-ready
data only (``dict`` payloads, ``str`` type names): stores never see domain classes. The codec turns
domain events into raw records and back; :class:`RecordedEvent` is what ``ask`` returns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

import attrs

E = TypeVar("E")

JSONDict = dict[str, Any]


@attrs.frozen(slots=True)
class NewEvent:
    """An event about to be appended: a stable type name and JSON-ready data."""

    #: unique id of the event (a UUID string); appending the same id twice is refused
    event_id: str
    #: the event's stored type name (by default its class name)
    type: str
    #: the event's fields, JSON-ready
    data: JSONDict
    #: free metadata (correlation ids, user ids, ...), JSON-ready
    metadata: JSONDict


@attrs.frozen(slots=True)
class StoredEvent:
    """An event as the store holds it (what ``read_stream`` and ``read_all`` yield)."""

    #: the stream (one aggregate instance) the event belongs to
    stream_id: str
    #: the event's place in its stream, starting at 1
    version: int
    #: the event's place in the whole store: global, in commit order, gap-free unless events
    #: were archived or streams hard-deleted (their positions are then missing)
    position: int
    #: the event's stored type name
    type: str
    #: the event's fields
    data: JSONDict
    #: the event's metadata
    metadata: JSONDict
    #: unique id of the event
    event_id: str
    #: when the store committed the event (UTC)
    recorded_at: datetime


@attrs.frozen(slots=True)
class AppendResult:
    """What a successful append reports: the events took versions and positions in sequence."""

    #: the stream's version after the append (the last new event's version)
    version: int
    #: the global position of the first appended event (the others follow it one by one)
    first_position: int
    #: commit time of the append (UTC)
    recorded_at: datetime


@attrs.frozen(slots=True)
class StreamInfo:
    """A stream's summary, as ``list_streams`` reports it."""

    #: the stream's id
    stream_id: str
    #: the version of its last event
    version: int
    #: when its last event was committed (UTC)
    last_recorded_at: datetime


@attrs.frozen(slots=True)
class SnapshotRecord:
    """A saved aggregate state: the state after the event at ``version``."""

    #: the stream the snapshot belongs to
    stream_id: str
    #: the stream version the state includes
    version: int
    #: the encoded state
    state: JSONDict
    #: the aggregate's snapshot schema version at the time of saving
    schema_version: int = 1
    #: when the snapshot was saved (UTC); set by the store
    recorded_at: datetime | None = None


#: the stored type name of a stream's tombstone (:class:`StreamDeleted`); a ``$`` name, which
#: no class name can be, so that it never collides with an application's event type
TOMBSTONE_TYPE = "$StreamDeleted"


@attrs.frozen(slots=True)
class StreamDeleted:
    """The tombstone a deleted stream ends with: a system event, stored as ``$StreamDeleted``.

    Projections that want to know of deletions handle it like any event (``@handle`` a method
    taking a ``StreamDeleted``); it reaches them in log order, after the stream's last event.
    Its fields are a storage format, like any event's.
    """

    # the codec's stored-name attribute (a plain str: records sit below the codec)
    __actorsource_event_type__ = TOMBSTONE_TYPE

    #: the deleted stream
    stream_id: str
    #: whether the stream's events were removed (hard delete) or kept readable (soft delete)
    hard: bool


#: the stored type name of :class:`SubjectForgotten`
FORGOTTEN_TYPE = "$SubjectForgotten"


@attrs.frozen(slots=True)
class SubjectForgotten:
    """What ``Runtime.forget`` records once a subject's key is destroyed: a system event,
    stored as ``$SubjectForgotten`` in the stream ``$forgotten-{subject}``.

    Read models built from personal fields are theirs to clean: a projection handles it like
    any event (``@handle`` a method taking a ``SubjectForgotten``) and deletes what it holds
    of ``subject``. Its fields are a storage format, like any event's.
    """

    # the codec's stored-name attribute (a plain str: records sit below the codec)
    __actorsource_event_type__ = FORGOTTEN_TYPE

    #: the forgotten subject's id
    subject: str


@attrs.frozen(slots=True)
class ArchivedStream:
    """What archiving did to one stream (what ``Runtime.archive`` returns, one per stream)."""

    #: the stream
    stream_id: str
    #: the first version archived this time
    first_version: int
    #: the last version archived this time; the stream's events now start after it
    last_version: int
    #: where the archiver put them (its own words: a file path for :class:`JsonLinesArchiver`)
    location: str


@attrs.frozen(slots=True)
class SnapshotInfo:
    """One saved snapshot of a stream, without its state, as ``list_snapshots`` reports it."""

    #: the stream the snapshot belongs to
    stream_id: str
    #: the stream version the state includes
    version: int
    #: the aggregate's snapshot schema version at the time of saving
    schema_version: int
    #: when the snapshot was saved (UTC)
    recorded_at: datetime


@attrs.frozen(slots=True)
class RecordedEvent(Generic[E]):
    """A domain event once it is durable, as ``ask`` returns it."""

    #: the event object
    event: E
    #: the stream the event belongs to
    stream_id: str
    #: the event's place in its stream, starting at 1
    version: int
    #: the event's global position in the store
    position: int
    #: unique id of the event
    event_id: str
    #: when the store committed the event (UTC)
    recorded_at: datetime
    #: the event's metadata
    metadata: JSONDict

    @classmethod
    def of(cls, event: E, stored: StoredEvent) -> RecordedEvent[E]:
        """Return the recorded form of a stored event, decoded into ``event``."""
        return cls(
            event,
            stored.stream_id,
            stored.version,
            stored.position,
            stored.event_id,
            stored.recorded_at,
            stored.metadata,
        )
