"""actorsource.testing: each check passes on the right outcome, and names the difference."""

from __future__ import annotations

import inspect
import math
from typing import Any

import attrs
import pytest

from actorsource import (
    Aggregate,
    Decider,
    EventApplyError,
    InMemoryEventStore,
    InvalidEventError,
    Rejected,
    Runtime,
    RuntimeClosedError,
    UnknownCommandError,
    apply,
    command,
)
from actorsource.testing import Given, RuntimeOptions, When, given, runtime

from .domain import Account, Deposit, Deposited, Noop, Opaque, Poke, Withdraw, Withdrew

# -- aggregates that break the rules the kit checks --------------------------------------------


@attrs.frozen
class Attach:
    pass


@attrs.frozen
class Attached:
    thing: Any  # JSON cannot hold an Opaque


@attrs.frozen
class Tag:
    tags: list[str]


@attrs.frozen
class Tagged:
    tags: tuple[str, ...]  # a list put here reads back as a tuple


@attrs.frozen
class Measured:
    value: float


@attrs.frozen
class Bump:
    pass


@attrs.frozen
class Bumped:
    pass


@attrs.frozen
class SpecialBumped(Bumped):  # passes isinstance, but the codec registers exact classes
    pass


@attrs.frozen
class Crack:
    pass


@attrs.frozen
class Cracked:
    pass


@attrs.define
class Box(Aggregate):
    things: int = 0

    @command
    def attach(self, cmd: Attach) -> Attached:
        return Attached(Opaque())

    @command
    def tag(self, cmd: Tag) -> Tagged:
        return Tagged(cmd.tags)  # type: ignore[arg-type]  # the mistake under test

    @apply
    def attached(self, event: Attached) -> None:
        self.things += 1

    @apply
    def tagged(self, event: Tagged) -> None:
        pass

    @apply
    def measured(self, event: Measured) -> None:
        pass


@attrs.define
class Sloppy(Aggregate):
    bumps: int = 0
    special: bool = False

    @command
    def bump(self, cmd: Bump) -> Bumped:
        if self.special:
            return SpecialBumped()
        self.bumps += 1  # wrong: only appliers may change the state
        return Bumped()

    @command
    def crack(self, cmd: Crack) -> Cracked:
        return Cracked()

    @apply
    def bumped(self, event: Bumped) -> None:
        self.bumps += 1

    @apply
    def cracked(self, event: Cracked) -> None:
        raise ValueError("cannot apply a crack")


@attrs.define
class SpecialSloppy(Sloppy):
    special: bool = True


# -- a plain Decider: an immutable counter -----------------------------------------------------


@attrs.frozen
class Add:
    n: int


@attrs.frozen
class Added:
    n: int


def _decide_counter(cmd: Add, total: int) -> list[Added]:
    if cmd.n == 0:
        return []
    if total + cmd.n > 10:
        raise Rejected(f"the counter stops at 10, it is at {total}")
    if cmd.n < 0:
        return [Withdrew(cmd.n)]  # type: ignore[list-item]  # not an event of the counter
    return [Added(cmd.n)]


counter: Decider[Add, Added, int] = Decider(
    name="Counter",
    initial_state=0,
    decide=_decide_counter,
    evolve=lambda total, event: total + event.n,
    event_types=[Added],
)


# -- then --------------------------------------------------------------------------------------


def test_then_passes_when_the_command_decided_exactly_the_events() -> None:
    outcome = given(Account, Deposited(10)).when(Withdraw(4)).then(Withdrew(4))
    assert isinstance(outcome, When)
    assert outcome.events == [Withdrew(4)]


def test_then_names_the_index_and_the_field_that_differ() -> None:
    with pytest.raises(AssertionError) as caught:
        given(Account, Deposited(10)).when(Withdraw(4)).then(Withdrew(5))
    message = str(caught.value)
    assert "first difference at index 0" in message
    assert "expected: Withdrew(amount=5)" in message
    assert "actual:   Withdrew(amount=4)" in message
    assert "amount: expected 5, got 4" in message


def test_then_names_a_missing_event_and_both_counts() -> None:
    with pytest.raises(AssertionError, match=r"decided 1 event, expected 2 events") as caught:
        given(Account, Deposited(10)).when(Withdraw(4)).then(Withdrew(4), Withdrew(1))
    message = str(caught.value)
    assert "first difference at index 1" in message
    assert "actual:   (nothing)" in message


def test_then_names_an_event_of_another_type() -> None:
    with pytest.raises(AssertionError, match="expected a Deposited, got a Withdrew"):
        given(Account, Deposited(10)).when(Withdraw(4)).then(Deposited(4))


def test_then_without_events_means_none() -> None:
    given(Account).when(Noop()).then()
    with pytest.raises(AssertionError, match=r"decided 1 event, expected none") as caught:
        given(Account, Deposited(10)).when(Withdraw(4)).then()
    assert "[0] Withdrew(amount=4)" in str(caught.value)


def test_then_expecting_events_from_a_command_that_decided_none() -> None:
    with pytest.raises(AssertionError, match=r"decided 0 events, expected 1 event"):
        given(Account).when(Noop()).then(Deposited(1))


def test_then_on_a_command_that_raised_names_the_exception() -> None:
    with pytest.raises(AssertionError, match="raised Rejected: insufficient funds") as caught:
        given(Account).when(Withdraw(5)).then(Withdrew(5))
    assert isinstance(caught.value.__cause__, Rejected)


# -- then_state --------------------------------------------------------------------------------


def test_then_state_compares_with_an_expected_state() -> None:
    given(Account, Deposited(10)).when(Withdraw(4)).then_state(Account(balance=6, history=[10, -4]))
    with pytest.raises(AssertionError, match="not the expected one") as caught:
        given(Account, Deposited(10)).when(Withdraw(4)).then_state(
            Account(balance=5, history=[10, -4])
        )
    message = str(caught.value)
    assert "balance: expected 5, got 6" in message
    assert "history" not in message.split("actual:")[1].split("\n", 1)[1]  # equal: not named


def test_then_state_accepts_a_predicate() -> None:
    given(Account, Deposited(10)).when(Withdraw(4)).then_state(lambda a: a.balance == 6)

    def is_empty(account: Account) -> bool:
        return account.balance == 0

    with pytest.raises(AssertionError, match=r"does not satisfy .*is_empty") as caught:
        given(Account, Deposited(10)).when(Withdraw(4)).then_state(is_empty)
    assert "state: Account(balance=6" in str(caught.value)


def test_then_state_after_the_given_events_alone_tests_the_appliers() -> None:
    given(Account, Deposited(10), Withdrew(3)).then_state(lambda a: a.history == [10, -3])
    with pytest.raises(AssertionError, match="balance: expected 8, got 7"):
        given(Account, Deposited(10), Withdrew(3)).then_state(Account(8, [10, -3]))


def test_then_state_on_a_command_that_raised_names_the_exception() -> None:
    with pytest.raises(AssertionError, match=r"cannot check the state after it.*Rejected"):
        given(Account).when(Withdraw(5)).then_state(Account())


# -- raises ------------------------------------------------------------------------------------


def test_raises_passes_and_returns_the_exception() -> None:
    error = given(Account).when(Withdraw(5)).raises(Rejected, match="insufficient")
    assert str(error) == "insufficient funds: balance 0, asked 5"
    assert isinstance(given(Account).when(Poke()).raises(UnknownCommandError), Exception)


def test_raises_fails_when_the_command_succeeded_and_shows_its_events() -> None:
    with pytest.raises(AssertionError, match="expected to raise Rejected, but it decided 1 event"):
        given(Account, Deposited(10)).when(Withdraw(4)).raises(Rejected)
    with pytest.raises(AssertionError, match=r"but it decided 0 events$"):
        given(Account).when(Noop()).raises(Rejected)


def test_raises_fails_on_another_exception_and_names_it() -> None:
    with pytest.raises(AssertionError, match="but it raised UnknownCommandError: Account has no"):
        given(Account).when(Poke()).raises(Rejected)


def test_raises_fails_when_the_message_does_not_match() -> None:
    with pytest.raises(AssertionError, match="does not match 'overdraft'") as caught:
        given(Account).when(Withdraw(5)).raises(Rejected, match="overdraft")
    assert "'insufficient funds: balance 0, asked 5'" in str(caught.value)


# -- what the runtime would refuse: the codec round trip, and handlers that break the rules ---


def test_a_decided_event_that_json_cannot_hold_fails_with_the_codecs_error() -> None:
    with pytest.raises(AssertionError, match="cannot be stored") as caught:
        given(Box).when(Attach())
    message = str(caught.value)
    assert "event [0] decided for Attach()" in message
    assert "not JSON-serializable" in message


def test_a_given_event_that_json_cannot_hold_fails_too() -> None:
    with pytest.raises(AssertionError, match=r"given event \[0\] .* cannot be stored"):
        given(Box, Attached(Opaque()))


def test_a_value_that_does_not_fit_its_field_fails_when_read_back() -> None:
    with pytest.raises(AssertionError, match=r"given event \[1\] Withdrew\(amount=1.5\)") as caught:
        given(Account, Deposited(10), Withdrew(1.5))  # type: ignore[arg-type]
    assert "field 'amount' is typed int but holds float 1.5" in str(caught.value)


def test_an_event_that_reads_back_as_something_else_fails() -> None:
    with pytest.raises(AssertionError, match="is read back from the store as") as caught:
        given(Box).when(Tag(["a"]))
    assert "tags: expected ['a'], got ('a',)" in str(caught.value)


def test_nan_which_json_cannot_hold_fails() -> None:
    with pytest.raises(AssertionError, match="NaN or an infinity"):
        given(Box, Measured(math.nan))


def test_an_event_of_a_type_the_aggregate_does_not_register_fails_and_lists_its_types() -> None:
    with pytest.raises(AssertionError, match="not registered") as caught:
        given(Account, Bumped())
    assert "the types its @apply methods take: " in str(caught.value)
    assert "Deposited" in str(caught.value)
    with pytest.raises(AssertionError, match=r"event \[0\] decided for Bump\(\) SpecialBumped"):
        given(SpecialSloppy).when(Bump())


def test_a_command_handler_that_changes_the_state_fails() -> None:
    with pytest.raises(AssertionError, match=r"handler of Bump\(\) changed the state of Sloppy"):
        given(Sloppy).when(Bump())


def test_an_applier_that_raises_is_the_event_apply_error_ask_would_give() -> None:
    error = given(Sloppy).when(Crack()).raises(EventApplyError, match="cannot apply a crack")
    assert isinstance(error.__cause__, ValueError)
    with pytest.raises(AssertionError, match=r"applying given event \[0\] Cracked\(\) to Sloppy"):
        given(Sloppy, Cracked())


# -- several commands, and independence of the steps -------------------------------------------


def test_when_after_a_success_goes_on_from_its_events() -> None:
    (
        given(Account)
        .when(Deposit(10))
        .then(Deposited(10))
        .when(Withdraw(4))
        .then(Withdrew(4))
        .then_state(Account(balance=6, history=[10, -4]))
    )
    given(Account).when(Deposit(10)).when(Withdraw(11)).raises(Rejected)


def test_when_after_a_failure_is_refused() -> None:
    with pytest.raises(AssertionError, match=r"cannot go on with Deposit\(amount=1\)"):
        given(Account).when(Withdraw(5)).when(Deposit(1))


def test_branches_of_one_given_do_not_see_each_other() -> None:
    opened = given(Account, Deposited(10))
    assert isinstance(opened, Given)
    opened.when(Withdraw(4)).then_state(lambda a: a.balance == 6)
    opened.when(Withdraw(10)).then(Withdrew(10)).then_state(lambda a: a.balance == 0)
    state = opened.state
    state.balance = 1_000  # a copy: the scenario keeps its own
    assert opened.state == Account(balance=10, history=[10])
    outcome = opened.when(Withdraw(1))
    outcome.events.clear()
    assert outcome.events == [Withdrew(1)]
    assert outcome.state.balance == 9


def test_events_and_state_of_a_command_that_raised_name_the_exception() -> None:
    outcome = given(Account).when(Withdraw(5))
    with pytest.raises(AssertionError, match=r"cannot return its events: .* raised Rejected"):
        _ = outcome.events
    with pytest.raises(AssertionError, match="cannot return the state after it"):
        _ = outcome.state


def test_reprs_say_what_happened() -> None:
    assert repr(given(Account, Deposited(1))) == "<Given Account with 1 event>"
    assert repr(given(Account).when(Noop())) == "<When Noop() on Account: decided 0 events>"
    assert repr(given(Account).when(Withdraw(1))) == (
        "<When Withdraw(amount=1) on Account: raised Rejected>"
    )


# -- a plain Decider ---------------------------------------------------------------------------


def test_a_plain_decider_works_the_same() -> None:
    given(counter, Added(2)).when(Add(3)).then(Added(3)).then_state(5)
    given(counter).when(Add(0)).then().then_state(0)
    given(counter, Added(9)).when(Add(2)).raises(Rejected, match="stops at 10, it is at 9")
    given(counter).when(Add(-1)).raises(InvalidEventError, match="Withdrew is not an event type")
    with pytest.raises(AssertionError, match="expected: 6"):
        given(counter, Added(2)).when(Add(3)).then_state(6)
    with pytest.raises(AssertionError, match="the Decider's event_types: Added"):
        given(counter, Withdrew(1))


# -- the runtime helper ------------------------------------------------------------------------


async def test_runtime_is_open_on_a_fresh_in_memory_store_and_closed_after() -> None:
    async with runtime(snapshot_every=2) as opened:
        assert isinstance(opened.store, InMemoryEventStore)
        assert opened.store.is_open
        account = opened.ref(Account, "a")
        await account.ask(Deposit(5))
        await account.ask(Deposit(5))
        assert (await account.state()).balance == 10
        assert opened.statistics().snapshots_saved == 1  # the options reach the runtime
    assert not opened.store.is_open
    with pytest.raises(RuntimeClosedError):
        await account.ask(Deposit(5))
    async with runtime() as other:
        assert (await other.ref(Account, "a").state()).balance == 0  # fresh: nothing shared


async def test_runtime_refuses_an_option_out_of_range() -> None:
    with pytest.raises(ValueError, match="mailbox_size"):
        async with runtime(mailbox_size=0):
            pass


def test_runtime_options_are_the_runtimes_keyword_arguments() -> None:
    parameters = inspect.signature(Runtime).parameters.values()
    keywords = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(RuntimeOptions.__annotations__) == keywords
