"""jsonable: states and events as JSON-ready data, in the form the stores keep them."""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from datetime import UTC, date, datetime

import attrs
import pytest

from actorsource import (
    Aggregate,
    CodecError,
    EventStore,
    Runtime,
    apply,
    command,
    event_type,
    jsonable,
)

from .domain import Opaque


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


@attrs.frozen
class Schedule:
    at: datetime
    on: date
    ticket: str
    priority: Priority
    tags: frozenset[str]
    window: tuple[int, int]


@event_type(name="Scheduled", version=2, upcasters={1: lambda data: data})
@attrs.frozen
class Scheduled:
    at: datetime
    on: date
    ticket: str
    priority: Priority
    tags: frozenset[str]
    window: tuple[int, int]


@attrs.define
class Planner(Aggregate):
    last: Scheduled | None = None
    by_day: dict[date, int] = attrs.Factory(dict)

    @command
    def schedule(self, cmd: Schedule) -> Scheduled:
        return Scheduled(cmd.at, cmd.on, cmd.ticket, cmd.priority, cmd.tags, cmd.window)

    @apply
    def scheduled(self, event: Scheduled) -> None:
        self.last = event
        self.by_day[event.on] = self.by_day.get(event.on, 0) + 1


AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
TICKET = "T-1"
SCHEDULE = Schedule(AT, date(2026, 3, 2), TICKET, Priority.HIGH, frozenset({"x"}), (9, 17))


async def test_an_event_is_the_data_the_store_holds_for_it(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        [recorded] = await runtime.ref(Planner, "p").ask(SCHEDULE)
    [stored] = [event async for event in store.read_stream("Planner-p")]
    data = dict(stored.data)
    del data["$version"]  # the schema version is the store's business, not the response's
    assert (
        jsonable(recorded.event)
        == data
        == {
            "at": "2026-03-01T12:30:00+00:00",
            "on": "2026-03-02",
            "ticket": "T-1",
            "priority": "high",
            "tags": ["x"],
            "window": [9, 17],
        }
    )


async def test_a_state_becomes_plain_json_data(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Planner, "p")
        await ref.ask(SCHEDULE)
        state = await ref.state()
    data = jsonable(state)
    assert data["last"]["at"] == "2026-03-01T12:30:00+00:00"
    assert data["by_day"] == {"2026-03-02": 1}
    assert json.loads(json.dumps(data)) == data  # the stdlib encoder takes it as it is


async def test_a_recorded_event_carries_its_type_data_and_place(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        recorded = await runtime.ref(Planner, "p").ask(SCHEDULE, metadata={"user": "ann"})
    [data] = jsonable(recorded)
    assert data["type"] == "Scheduled"
    assert data["data"]["ticket"] == TICKET
    assert (data["stream_id"], data["version"], data["position"]) == ("Planner-p", 1, 1)
    assert data["event_id"] == recorded[0].event_id
    assert data["recorded_at"] == recorded[0].recorded_at.isoformat()
    assert data["metadata"]["user"] == "ann"
    assert json.loads(json.dumps(data)) == data


def test_stdlib_dataclasses_and_plain_values_are_taken_too() -> None:
    @dataclasses.dataclass
    class Line:
        sku: str
        quantity: int
        added: date

    assert jsonable(Line("a", 2, date(2026, 1, 5))) == {
        "sku": "a",
        "quantity": 2,
        "added": "2026-01-05",
    }
    assert jsonable({"n": 1, "when": AT}) == {"n": 1, "when": "2026-03-01T12:30:00+00:00"}
    assert jsonable([Priority.LOW, None]) == ["low", None]
    ticket = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert jsonable({"ticket": ticket}) == {"ticket": str(ticket)}


def test_a_value_the_codec_cannot_take_raises_a_codec_error_naming_its_class() -> None:
    @attrs.frozen
    class Holder:
        thing: Opaque

    with pytest.raises(CodecError, match=r"cannot turn .*Holder into JSON data"):
        jsonable(Holder(Opaque()))
