"""Reading the log as domain events: the aggregates used, time travel, subscriptions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import Any

from ._aggregate import decider_of
from ._codec import Codec, event_type_spec
from ._decider import Decider
from ._errors import DefinitionError
from ._records import JSONDict, StoredEvent
from ._rehydration import Rehydration
from .stores._base import EventStore
from .stores._subscription import subscribe


class Deciders:
    """The aggregates a runtime uses, by class or Decider, their events registered in its codec.

    Two aggregates never share a stream category: their streams would mix (each would load the
    other's events, and a read of the category would return both).
    """

    def __init__(self, codec: Codec, *, snapshots: bool) -> None:
        self._codec = codec
        #: whether the runtime takes snapshots of every aggregate (else only of those that
        #: say so): their states must be storable
        self._snapshots = snapshots
        self._deciders: dict[object, Decider[Any, Any, Any]] = {}
        #: stream category -> the aggregate (class or Decider) that uses it here, and its Decider
        self._categories: dict[str, tuple[object, Decider[Any, Any, Any]]] = {}

    def decider_of(self, aggregate: Any) -> Decider[Any, Any, Any]:
        """The Decider of an aggregate class (or the Decider itself), its events registered.

        :raises DefinitionError: if another aggregate of this runtime has its stream category,
            an event class has a field the codec cannot store, or the state does and this
            runtime would take snapshots of it
        """
        decider = self._deciders.get(aggregate)
        if decider is None:
            decider = aggregate if isinstance(aggregate, Decider) else decider_of(aggregate)
            claimed = self._categories.get(decider.name)
            if claimed is not None and claimed[1] is not decider:
                msg = (
                    f"{_describe_aggregate(claimed[0])} and {_describe_aggregate(aggregate)} "
                    f"both use the stream category {decider.name!r} in this runtime; give one "
                    "of them another stream_category (a Decider: another name)"
                )
                raise DefinitionError(msg)
            self._codec.register_events(decider.event_types)
            if self._snapshots or decider.snapshot_every:
                # else every snapshot would be skipped, each with a warning
                self._codec.check_state(_describe_aggregate(aggregate), decider.state_type)
            self._deciders[aggregate] = decider
            self._categories[decider.name] = (aggregate, decider)
        return decider

    def in_category(self, category: str) -> Decider[Any, Any, Any] | None:
        """The Decider of the aggregate that uses ``category`` here (None: none does)."""
        found = self._categories.get(category)
        return None if found is None else found[1]

    def categories(self) -> list[str]:
        """The stream categories of the aggregates used here."""
        return list(self._categories)


async def state_at(store: EventStore, rehydration: Rehydration, version: int) -> Any:
    """The state after event ``version``: from the latest usable snapshot at or before it."""
    stream_id = rehydration.stream_id
    snapshot = await store.load_snapshot(stream_id, max_version=version) if version > 0 else None

    async def events_from(after: int) -> AsyncIterator[tuple[int, str, JSONDict]]:
        async for stored in store.read_stream(stream_id, after, version):
            yield stored.version, stored.type, stored.data

    state, _, _ = await rehydration.rehydrate((snapshot, [], False), events_from)
    return state


async def matching_records(
    store: EventStore,
    codec: Codec,
    from_position: int,
    classes: Collection[type] | None,
    categories: list[str] | None,
    *,
    live: bool,
    poll_interval: float,
) -> AsyncIterator[StoredEvent]:
    """The stored events of these classes (their names and aliases) and categories, from
    ``from_position`` on: a catch-up subscription if ``live``, else up to the head now."""
    if classes is not None:
        codec.register_events(classes)
    type_names = (
        sorted(
            {
                name
                for cls in classes
                for spec in (event_type_spec(cls),)
                for name in (spec.name, *spec.aliases)
            }
        )
        if classes is not None
        else None
    )
    if live:
        return subscribe(
            store,
            from_position,
            types=type_names,
            categories=categories,
            poll_interval=poll_interval,
        )
    return store.read_all(
        from_position,
        to_position=await store.head_position(),
        types=type_names,
        categories=categories,
    )


def _describe_aggregate(aggregate: object) -> str:
    """Name an aggregate class, or a Decider by its decide function, for a message."""
    if isinstance(aggregate, Decider):
        decide = aggregate.decide
        where = getattr(decide, "__module__", None), getattr(decide, "__qualname__", None)
        by = f"{where[0]}.{where[1]}" if all(where) else repr(decide)
        return f"Decider {aggregate.name!r} (decide={by})"
    if isinstance(aggregate, type):
        return f"aggregate class {aggregate.__module__}.{aggregate.__qualname__}"
    return repr(aggregate)
