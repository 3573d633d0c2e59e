"""The pure domain core: the class form compiles to a Decider; malformed classes are refused."""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorsource import Aggregate, Decider, DefinitionError, Rejected, apply, command
from actorsource._aggregate import decider_of

from .domain import Account, Deposit, Deposited, Withdraw, Withdrew


def test_aggregate_class_compiles_to_a_decider_with_its_event_types() -> None:
    decider = decider_of(Account)
    assert isinstance(decider, Decider)
    assert decider.name == "Account"
    assert set(decider.event_types) == {Deposited, Withdrew}
    assert decider.initial_state == Account()
    assert decider.initial_state is not decider.initial_state  # fresh for a mutable state


def test_decide_dispatches_on_the_command_type_without_touching_state() -> None:
    decider = decider_of(Account)
    state = Account(balance=5)
    assert decider.decide_events(Withdraw(2), state) == [Withdrew(2)]
    assert state == Account(balance=5)
    with pytest.raises(Rejected):
        decider.decide_events(Withdraw(9), state)


@given(st.lists(st.integers(min_value=1, max_value=100), max_size=30), st.integers(0, 30))
def test_fold_of_snapshot_plus_tail_equals_fold_of_all_events(amounts: list[int], cut: int) -> None:
    decider = decider_of(Account)
    events = [Deposited(a) for a in amounts]
    cut = min(cut, len(events))
    snapshot = decider.fold(events[:cut])
    assert decider.fold(events[cut:], snapshot) == decider.fold(events)


@attrs.frozen
class Ping:
    pass


@attrs.frozen
class Pinged:
    pass


def test_aggregate_must_be_an_attrs_class() -> None:
    class Plain(Aggregate):
        @apply
        def pinged(self, event: Pinged) -> None:
            pass

    with pytest.raises(DefinitionError, match="must be an attrs class"):
        decider_of(Plain)


def test_handler_argument_must_be_annotated() -> None:
    @attrs.define
    class NoAnnotation(Aggregate):
        @command
        def ping(self, cmd):  # type: ignore[no-untyped-def]
            return Pinged()

    with pytest.raises(DefinitionError, match=r"NoAnnotation.ping must annotate its argument"):
        decider_of(NoAnnotation)


def test_fields_without_defaults_are_refused() -> None:
    @attrs.define
    class NoDefault(Aggregate):
        count: int

    with pytest.raises(DefinitionError, match="every field of an aggregate needs a default"):
        decider_of(NoDefault)


def test_two_handlers_for_one_command_type_are_refused() -> None:
    @attrs.define
    class Twice(Aggregate):
        @command
        def one(self, cmd: Ping) -> Pinged:
            return Pinged()

        @command
        def two(self, cmd: Ping) -> Pinged:
            return Pinged()

    with pytest.raises(DefinitionError, match="two @command handlers for Ping: one and two"):
        decider_of(Twice)


def test_union_annotation_handles_each_member_type() -> None:
    @attrs.define
    class Either(Aggregate):
        seen: list[str] = attrs.Factory(list)

        @command
        def any_money(self, cmd: Deposit | Withdraw) -> Deposited:
            return Deposited(cmd.amount)

        @apply
        def deposited(self, event: Deposited) -> None:
            self.seen.append("d")

    decider = decider_of(Either)
    assert decider.decide_events(Withdraw(3), Either()) == [Deposited(3)]
    assert decider.decide_events(Deposit(4), Either()) == [Deposited(4)]


def test_subclass_inherits_and_overrides_handlers_by_name() -> None:
    @attrs.define
    class Strict(Account):
        @command
        def deposit(self, cmd: Deposit) -> Deposited:
            raise Rejected("closed")

    decider = decider_of(Strict)
    with pytest.raises(Rejected, match="closed"):
        decider.decide_events(Deposit(1), Strict())
    assert decider.decide_events(Withdraw(0), Strict()) == [Withdrew(0)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty str name"),
        ({"initial_state_factory": int}, "exactly one of initial_state"),
        ({"snapshot_every": 0}, "snapshot_every must be >= 1"),
        ({"event_types": ["Deposited"]}, "event_types must be classes"),
    ],
)
def test_malformed_decider_is_refused_with_a_clear_message(
    kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "name": "Counter",
        "initial_state": 0,
        "decide": lambda c, s: None,
        "evolve": lambda s, e: s,
        "event_types": [Deposited],
    }
    arguments.update(kwargs)
    with pytest.raises(DefinitionError, match=message):
        Decider(**arguments)


UNUSABLE_CATEGORIES = {
    "a dash": ("Counter-x", "holds '-', which separates the category from the aggregate id"),
    "a NUL": ("Counter\x00", "without NUL characters"),
    "a lone surrogate": ("Counter\udc80", "no lone surrogates"),
}


@pytest.mark.parametrize(
    ("category", "says"), UNUSABLE_CATEGORIES.values(), ids=UNUSABLE_CATEGORIES.keys()
)
def test_stream_category_that_could_share_or_break_streams_is_refused_when_defined(
    category: str, says: str
) -> None:
    message = re.escape(f"Counter: the stream category {category!r}")
    with pytest.raises(DefinitionError, match=message) as caught:

        @attrs.define
        class Counter(Aggregate):
            stream_category = category
            count: int = 0

    assert says in str(caught.value)
    with pytest.raises(DefinitionError, match=re.escape(f"Decider {category!r}: the stream")):
        Decider(
            name=category,
            initial_state=0,
            decide=lambda c, s: None,
            evolve=lambda s, e: s,
            event_types=[Deposited],
        )


def test_class_name_used_as_the_category_is_checked_when_the_class_is_first_used() -> None:
    @attrs.define
    class Counter(Aggregate):
        count: int = 0

    Counter.__name__ = "Counter-x"
    with pytest.raises(DefinitionError, match="the stream category 'Counter-x' holds '-'"):
        decider_of(Counter)
