"""actorsource: event-sourced aggregates as lightweight async actors.

General layout (lower layers never import higher ones; docs/architecture.md has the picture and
the path of one ``ask``)::

    _errors, _tuning   L0  the error tree; opt-in process tuning
    _decider, _aggregate, _records, _ids, _tracing, _policies, _metrics, _context, _models,
    _timers            L1  the pure domain core (Decider, Aggregate sugar), records, event
                           ids, tracing metadata; policies as values, metrics hooks; the
                           record classes (attrs, dataclasses, Pydantic models); timer effects
    _codec, _storable, _exactness, _jsonable, _personal
                       L2  event/state <-> JSON-ready dicts, by stable type names; upcasters;
                           what the codec can store and read back exactly; JSON-ready data;
                           personal fields sealed per subject
    stores/            L3  the EventStore contract and capabilities; memory, SQLite and
                           PostgreSQL stores
    _actor, _activation, _batch, _rehydration, _snapshots, _supervision, _idempotency,
    _routes, _messages, _timer_effects, _process_manager, _shredding
                       L4  one aggregate's mailbox, its loading and batches
    _dispatcher, _refs, _reading, _health, _hosting, _projection, _projection_context,
    _rebuilds, _archiving, _scheduler
                       L5  live actors, refs, time travel, health; projections; retention;
                           timer delivery
    _runtime, _runtime_reading, _runtime_projections, _runtime_observing
                       L6  the runtime: lifecycle and the composition of the rest
    cli, bench, testing, otel, _projection_kit, pytest_plugin, web, _process_router
                       L7  the command line, benchmarks, the test kit, the pytest plugin, the
                           web integration; the process managers' router

This module is the only public surface.
"""

from ._aggregate import Aggregate as Aggregate
from ._aggregate import apply as apply
from ._aggregate import command as command
from ._archiving import Archiver as Archiver
from ._archiving import JsonLinesArchiver as JsonLinesArchiver
from ._archiving import read_archive as read_archive
from ._codec import event_type as event_type
from ._decider import Decider as Decider
from ._dispatcher import RuntimeState as RuntimeState
from ._errors import ActorFailedError as ActorFailedError
from ._errors import ActorsourceError as ActorsourceError
from ._errors import AskTimeoutError as AskTimeoutError
from ._errors import CheckpointConflictError as CheckpointConflictError
from ._errors import ClusterAuthError as ClusterAuthError
from ._errors import ClusterError as ClusterError
from ._errors import ClusterProtocolError as ClusterProtocolError
from ._errors import CodecError as CodecError
from ._errors import ConcurrencyError as ConcurrencyError
from ._errors import DefinitionError as DefinitionError
from ._errors import EventApplyError as EventApplyError
from ._errors import FencedError as FencedError
from ._errors import IncompatibleStoreError as IncompatibleStoreError
from ._errors import InvalidEventError as InvalidEventError
from ._errors import MailboxFullError as MailboxFullError
from ._errors import NaiveDatetimeError as NaiveDatetimeError
from ._errors import NotOwnerError as NotOwnerError
from ._errors import PeerUnavailableError as PeerUnavailableError
from ._errors import ProjectionError as ProjectionError
from ._errors import Rejected as Rejected
from ._errors import RemoteError as RemoteError
from ._errors import RuntimeClosedError as RuntimeClosedError
from ._errors import SnapshotError as SnapshotError
from ._errors import StoreError as StoreError
from ._errors import StreamArchivedError as StreamArchivedError
from ._errors import StreamDeletedError as StreamDeletedError
from ._errors import StreamNotFoundError as StreamNotFoundError
from ._errors import UnknownCommandError as UnknownCommandError
from ._errors import UnknownSubjectError as UnknownSubjectError
from ._errors import VersionNotReachedError as VersionNotReachedError
from ._errors import WaitTimeoutError as WaitTimeoutError
from ._health import Health as Health
from ._health import HealthCheck as HealthCheck
from ._jsonable import jsonable as jsonable
from ._metrics import Metrics as Metrics
from ._metrics import RecordingMetrics as RecordingMetrics
from ._personal import FORGOTTEN as FORGOTTEN
from ._personal import Personal as Personal
from ._personal import personal as personal
from ._policies import Backoff as Backoff
from ._policies import Passivation as Passivation
from ._policies import SnapshotEvery as SnapshotEvery
from ._policies import SnapshotInterval as SnapshotInterval
from ._process_manager import CommandDecided as CommandDecided
from ._process_manager import EventHandled as EventHandled
from ._process_manager import Outcome as Outcome
from ._process_manager import OutcomeReceived as OutcomeReceived
from ._process_manager import ProcessManager as ProcessManager
from ._process_manager import Send as Send
from ._process_manager import on_event as on_event
from ._process_manager import on_outcome as on_outcome
from ._process_router import ProcessRouter as ProcessRouter
from ._projection import Projection as Projection
from ._projection import handle as handle
from ._projection_context import ProjectionContext as ProjectionContext
from ._projection_context import ProjectionStatus as ProjectionStatus
from ._projection_context import ResetContext as ResetContext
from ._records import AppendResult as AppendResult
from ._records import ArchivedStream as ArchivedStream
from ._records import NewEvent as NewEvent
from ._records import RecordedEvent as RecordedEvent
from ._records import SnapshotInfo as SnapshotInfo
from ._records import SnapshotRecord as SnapshotRecord
from ._records import StoredEvent as StoredEvent
from ._records import StreamDeleted as StreamDeleted
from ._records import StreamInfo as StreamInfo
from ._records import SubjectForgotten as SubjectForgotten
from ._refs import AggregateRef as AggregateRef
from ._runtime import Runtime as Runtime
from ._runtime_observing import RuntimeStatistics as RuntimeStatistics
from ._slices import ProjectionSlice as ProjectionSlice
from ._slices import slice_of as slice_of
from ._timers import Cancel as Cancel
from ._timers import Clock as Clock
from ._timers import Missed as Missed
from ._timers import Schedule as Schedule
from ._timers import StoredTimer as StoredTimer
from ._timers import SystemClock as SystemClock
from ._timers import TimerCancel as TimerCancel
from ._timers import Timers as Timers
from ._timers import TimerSchedule as TimerSchedule
from ._tracing import caused_by as caused_by
from ._tuning import tune_gc as tune_gc
from ._tuning import tune_switch_interval as tune_switch_interval
from .cluster import Cluster as Cluster
from .cluster import ClusterView as ClusterView
from .stores._base import ClusterStore as ClusterStore
from .stores._base import EventStore as EventStore
from .stores._base import GrowthMeter as GrowthMeter
from .stores._base import StorageGrowth as StorageGrowth
from .stores._base import StoreCapabilities as StoreCapabilities
from .stores._base import SubjectKeyStore as SubjectKeyStore
from .stores._base import TimerStore as TimerStore
from .stores._base import TransactionalStore as TransactionalStore
from .stores._subscription import subscribe as subscribe
from .stores.memory import InMemoryEventStore as InMemoryEventStore
from .stores.postgres import PostgresEventStore as PostgresEventStore
from .stores.sqlite import SQLiteEventStore as SQLiteEventStore

__all__ = [  # noqa: RUF022  # plain sorted() order (FORGOTTEN among the classes), as tests check
    "ActorFailedError",
    "ActorsourceError",
    "Aggregate",
    "AggregateRef",
    "AppendResult",
    "ArchivedStream",
    "Archiver",
    "AskTimeoutError",
    "Backoff",
    "Cancel",
    "CheckpointConflictError",
    "Clock",
    "Cluster",
    "ClusterAuthError",
    "ClusterError",
    "ClusterProtocolError",
    "ClusterStore",
    "ClusterView",
    "CodecError",
    "CommandDecided",
    "ConcurrencyError",
    "Decider",
    "DefinitionError",
    "EventApplyError",
    "EventHandled",
    "EventStore",
    "FORGOTTEN",
    "FencedError",
    "GrowthMeter",
    "Health",
    "HealthCheck",
    "InMemoryEventStore",
    "IncompatibleStoreError",
    "InvalidEventError",
    "JsonLinesArchiver",
    "MailboxFullError",
    "Metrics",
    "Missed",
    "NaiveDatetimeError",
    "NewEvent",
    "NotOwnerError",
    "Outcome",
    "OutcomeReceived",
    "Passivation",
    "PeerUnavailableError",
    "Personal",
    "PostgresEventStore",
    "ProcessManager",
    "ProcessRouter",
    "Projection",
    "ProjectionContext",
    "ProjectionError",
    "ProjectionSlice",
    "ProjectionStatus",
    "RecordedEvent",
    "RecordingMetrics",
    "Rejected",
    "RemoteError",
    "ResetContext",
    "Runtime",
    "RuntimeClosedError",
    "RuntimeState",
    "RuntimeStatistics",
    "SQLiteEventStore",
    "Schedule",
    "Send",
    "SnapshotError",
    "SnapshotEvery",
    "SnapshotInfo",
    "SnapshotInterval",
    "SnapshotRecord",
    "StorageGrowth",
    "StoreCapabilities",
    "StoreError",
    "StoredEvent",
    "StoredTimer",
    "StreamArchivedError",
    "StreamDeleted",
    "StreamDeletedError",
    "StreamInfo",
    "StreamNotFoundError",
    "SubjectForgotten",
    "SubjectKeyStore",
    "SystemClock",
    "TimerCancel",
    "TimerSchedule",
    "TimerStore",
    "Timers",
    "TransactionalStore",
    "UnknownCommandError",
    "UnknownSubjectError",
    "VersionNotReachedError",
    "WaitTimeoutError",
    "apply",
    "caused_by",
    "command",
    "event_type",
    "handle",
    "jsonable",
    "on_event",
    "on_outcome",
    "personal",
    "read_archive",
    "slice_of",
    "subscribe",
    "tune_gc",
    "tune_switch_interval",
]

__version__ = "0.1.0"

# tracebacks and reprs say actorsource.Runtime, not actorsource._runtime.Runtime
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("actorsource."):
        _obj.__module__ = __name__
del _name, _obj
