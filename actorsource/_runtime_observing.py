"""What a runtime says about itself: its health checks and its counters.

A part of :class:`Runtime`, apart so that the front door stays readable; it reads the
dispatcher, the counters, the projection host and the store's declared capabilities that
``Runtime.__init__`` composed.
"""

from __future__ import annotations

import attrs

from ._context import Counters
from ._dispatcher import Dispatcher
from ._health import Health, check_health
from ._hosting import ProjectionHost
from ._projection_context import ProjectionStatus
from .stores._base import EventStore, StorageGrowth, StoreCapabilities


@attrs.frozen(slots=True)
class RuntimeStatistics:
    """A snapshot of a runtime's counters (all counts since the runtime opened)."""

    #: actors holding their aggregate's state in memory now
    active_actors: int
    #: actors loaded from the store (snapshot + events), including reloads after failures
    activations: int
    #: actors stopped to free memory (idle timeout, max_active, shutdown)
    passivations: int
    #: commands answered (accepted, rejected or failed)
    commands_processed: int
    #: commands answered with an error
    commands_rejected: int
    #: events durably appended
    events_appended: int
    #: stored events applied while loading actors
    events_replayed: int
    #: snapshots saved
    snapshots_saved: int
    #: appends decided again after another writer moved the stream on
    conflicts_retried: int
    #: loads and appends that failed and stopped an actor
    actor_failures: int
    #: messages waiting in mailboxes now
    queued_messages: int
    #: each projection's position, state and lag (a rebuild in progress is listed too)
    projections: tuple[ProjectionStatus, ...] = ()
    #: how fast the store grows: events per second and bytes per day over a recent window
    #: (``None``: the store does not say, or it is closed)
    storage: StorageGrowth | None = None


class RuntimeObserving:
    """The runtime's health checks and statistics (see :class:`Runtime`)."""

    #: the event store
    store: EventStore
    _capabilities: StoreCapabilities
    _counters: Counters
    _dispatcher: Dispatcher
    _hosting: ProjectionHost

    # -- health ------------------------------------------------------------------------------------

    async def health(
        self,
        *,
        max_writer_lag: float = 5.0,
        max_projection_lag: float = 60.0,
        max_bytes_per_day: float | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109  # a limit per check, as in health endpoints
    ) -> Health:
        """Check the store, its writer and the projections (for a readiness endpoint).

        - ``store``: a read answers within ``timeout`` seconds;
        - ``writer``: no write has waited longer than ``max_writer_lag`` seconds (stores that
          cannot tell pass);
        - ``storage``: the store's growth rate (:class:`StorageGrowth`, events per second and
          bytes per day over its recent window) is at most ``max_bytes_per_day`` (``None``:
          reported, never failing; stores that cannot tell have no such check);
        - ``projection NAME``: the projection is not failing, and its oldest unhandled event is
          at most ``max_projection_lag`` seconds old.
        """
        return await check_health(
            self.store,
            self._capabilities.writer_lag,
            self._hosting.current_statuses(),
            max_writer_lag=max_writer_lag,
            max_projection_lag=max_projection_lag,
            timeout=timeout,
            storage_growth=self._capabilities.storage_growth,
            max_bytes_per_day=max_bytes_per_day,
        )

    # -- statistics ------------------------------------------------------------------------------

    def statistics(self) -> RuntimeStatistics:
        """Return an immutable copy of this runtime's counters."""
        c = self._counters
        return RuntimeStatistics(
            active_actors=self._dispatcher.active,
            activations=c.activations,
            passivations=c.passivations,
            commands_processed=c.commands_processed,
            commands_rejected=c.commands_rejected,
            events_appended=c.events_appended,
            events_replayed=c.events_replayed,
            snapshots_saved=c.snapshots_saved,
            conflicts_retried=c.conflicts_retried,
            actor_failures=c.actor_failures,
            queued_messages=self._dispatcher.queued,
            projections=self._hosting.statuses(),
            storage=self._storage_growth(),
        )

    def _storage_growth(self) -> StorageGrowth | None:
        growth = self._capabilities.storage_growth
        if growth is None or not self.store.is_open:
            return None
        return growth()
