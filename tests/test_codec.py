"""The codec: stable type names, JSON-ready dicts, clear decode errors."""

from __future__ import annotations

import enum
import re
from datetime import UTC, date, datetime
from typing import Any, Literal, NewType

import attrs
import orjson
import pytest

from actorsource import CodecError, DefinitionError
from actorsource._codec import Codec

from .domain import Account, Deposited


@attrs.frozen
class Rich:
    when: datetime
    tags: frozenset[str]
    amounts: dict[str, int]
    note: str | None = None


def test_event_round_trips_through_its_type_name() -> None:
    codec = Codec()
    codec.register_events([Rich])
    event = Rich(datetime(2026, 1, 2, tzinfo=UTC), frozenset({"a"}), {"x": 1})
    name, data = codec.encode_event(event)
    stored = orjson.loads(orjson.dumps(data))  # what a store gives back
    assert name == "Rich"
    assert stored["when"] == "2026-01-02T00:00:00+00:00"
    assert codec.decode_event(name, stored) == event


def test_missing_optional_field_takes_its_default() -> None:
    codec = Codec()
    codec.register_events([Rich])
    decoded = codec.decode_event(
        "Rich", {"when": "2026-01-02T00:00:00+00:00", "tags": [], "amounts": {}}
    )
    assert isinstance(decoded, Rich) and decoded.note is None


def test_unknown_type_name_is_a_codec_error_naming_it_and_the_place() -> None:
    codec = Codec()
    codec.register_events([Deposited])
    with pytest.raises(CodecError, match=r"unknown event type 'Gone' \(stream 's', version 3\)"):
        codec.decode_event("Gone", {}, where=" (stream 's', version 3)")


def test_data_that_does_not_fit_the_class_names_the_field() -> None:
    codec = Codec()
    codec.register_events([Deposited])
    with pytest.raises(CodecError, match="amount") as caught:
        codec.decode_event("Deposited", {"amount": "lots"})
    assert caught.value.type_name == "Deposited"


def test_unregistered_event_class_cannot_be_encoded() -> None:
    with pytest.raises(CodecError, match="not registered"):
        Codec().encode_event(Deposited(1))


def test_two_classes_claiming_one_name_are_refused() -> None:
    codec = Codec()
    codec.register_events([Deposited])

    @attrs.frozen
    class Deposited2:
        amount: int

    Deposited2.__name__ = "Deposited"
    with pytest.raises(DefinitionError, match="claimed by both"):
        codec.register_events([Deposited2])


def test_state_round_trips() -> None:
    codec = Codec()
    state = Account(balance=3, history=[1, 2])
    assert codec.decode_state(codec.encode_state(state), Account) == state


@pytest.mark.parametrize(
    "data",
    [{"amount": 1.5}, {"amount": "5"}, {"amount": True}, {"amount": None}],
    ids=["float", "str", "bool", "null"],
)
def test_a_stored_value_of_the_wrong_type_is_refused_not_coerced(data: dict[str, object]) -> None:
    codec = Codec()
    codec.register_events([Deposited])
    with pytest.raises(CodecError, match=r"expected int @ \$\.amount"):
        codec.decode_event("Deposited", data)


def test_event_data_that_is_not_an_object_is_refused() -> None:
    codec = Codec()
    codec.register_events([Deposited])
    with pytest.raises(CodecError, match="must be a JSON object, got list"):
        codec.decode_event("Deposited", [1])  # type: ignore[arg-type]


def test_a_state_that_is_not_an_object_is_refused_not_read_as_defaults() -> None:
    with pytest.raises(CodecError, match="expected a JSON object for Account, got list"):
        Codec().decode_state({"state": [3, [1]]}, Account)


def test_an_int_in_a_float_field_is_a_float() -> None:
    @attrs.frozen
    class Priced:
        price: float

    codec = Codec()
    codec.register_events([Priced])
    decoded = codec.decode_event("Priced", {"price": 5})
    assert isinstance(decoded, Priced) and decoded.price == 5.0
    assert type(decoded.price) is float


@attrs.frozen
class Line:
    sku: str
    quantity: int = 1


@attrs.frozen
class Ordered:
    lines: list[Line]


def test_a_nested_record_stored_as_a_list_is_refused_not_read_as_defaults() -> None:
    codec = Codec()
    codec.register_events([Ordered])
    with pytest.raises(CodecError, match=r"expected Line @ \$\.lines\[0\]"):
        codec.decode_event("Ordered", {"lines": [["abc", 2]]})
    decoded = codec.decode_event("Ordered", {"lines": [{"sku": "abc"}]})
    assert decoded == Ordered([Line("abc", 1)])


class Tier(enum.Enum):
    GOLD = "gold"
    SILVER = 2


SKU = NewType("SKU", str)


@attrs.frozen
class Branch:
    name: str
    children: list[Branch] = attrs.Factory(list)


@attrs.frozen
class Typed:
    """Every field of a type whose values read back from JSON as they were."""

    rich: Rich
    order: Ordered
    tree: Branch
    tier: Tier
    kind: Literal["a", "b"]
    sku: SKU
    pair: tuple[int, str]
    many: tuple[float, ...]
    unique: set[int]
    raw: bytes
    day: date
    either: int | str | None
    maybe: Line | None


@attrs.frozen
class HoldsAny:
    value: Any


@attrs.frozen
class HoldsObject:
    value: object


@attrs.frozen
class HoldsIntKeys:
    by_id: dict[int, str]


@attrs.frozen
class HoldsBareList:
    items: list  # type: ignore[type-arg]


@attrs.frozen
class HoldsAnyDeep:
    lines: list[dict[str, Any]]


@attrs.frozen
class HoldsUnionOfRecords:
    thing: Line | Branch


@attrs.frozen
class Converted:
    amount: int = attrs.field(converter=abs)


@attrs.frozen
class Unannotated:
    value = attrs.field()


INEXACT = [
    HoldsAny,
    HoldsBareList,
    HoldsAnyDeep,
    HoldsUnionOfRecords,
    Converted,
    Unannotated,
]


def test_codec_knows_once_per_class_which_event_classes_may_not_read_back_as_they_were() -> None:
    codec = Codec()
    typed = Typed(
        Rich(datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), frozenset({"x"}), {"a": 1}),
        Ordered([Line("abc", 2)]),
        Branch("root", [Branch("leaf")]),
        Tier.SILVER,
        "b",
        SKU("sku-1"),
        (1, "one"),
        (1.5, 2.5),
        {1, 2},
        b"\x00\xff",
        date(2024, 1, 2),
        "either",
        Line("x"),
    )
    codec.register_events([Typed, Deposited, *INEXACT])
    assert codec.inexact == set(INEXACT)
    # what the codec calls exact is: it reads back equal, every value of the same type
    name, data = codec.encode_event(typed)
    read_back = codec.decode_event(name, orjson.loads(orjson.dumps(data)))
    assert read_back == typed
    assert [type(getattr(read_back, f.name)) for f in attrs.fields(Typed)] == [
        type(getattr(typed, f.name)) for f in attrs.fields(Typed)
    ]


@pytest.mark.parametrize(
    ("cls", "says"),
    [
        (HoldsObject, "field 'value' of HoldsObject is typed object, which the codec cannot read"),
        (HoldsIntKeys, "field 'by_id' of HoldsIntKeys is typed dict[int, str]: JSON holds"),
    ],
)
def test_an_event_class_the_codec_could_not_read_back_is_refused_when_registered(
    cls: type, says: str
) -> None:
    codec = Codec()
    with pytest.raises(DefinitionError, match=re.escape(says)):
        codec.register_events([cls])
    with pytest.raises(CodecError, match="not registered"):  # nothing half-registered
        codec.encode_event(cls({}))


def test_a_state_class_is_compiled_once_for_every_codec_of_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each runtime has a codec of its own; the function cattrs generates (and compiles) to read
    a state class is made on the first read and reused by every later codec."""
    import actorsource._codec as codec_module

    made: list[type] = []
    make = codec_module.make_dict_structure_fn

    def counting(cls: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(cls)
        return make(cls, *args, **kwargs)

    monkeypatch.setattr(codec_module, "make_dict_structure_fn", counting)

    @attrs.define
    class Ledger:
        entries: int = 0
        owner: str = ""

    first, second = Codec(), Codec()
    encoded = first.encode_state(Ledger(3, "ann"))
    assert first.decode_state(encoded, Ledger) == Ledger(3, "ann")
    assert second.decode_state(encoded, Ledger) == Ledger(3, "ann")
    assert made == [Ledger]
