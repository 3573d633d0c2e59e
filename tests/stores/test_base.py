"""The rules every store shares: the known-heads cache and the retry of an append."""

from __future__ import annotations

import pytest

from actorsource import CodecError, NewEvent
from actorsource.stores._base import (
    MAX_VERSION,
    KnownHeads,
    encode_json,
    encode_rows,
    prior_append,
    retry_start,
)


def test_known_heads_forget_the_least_recently_written_first() -> None:
    heads = KnownHeads(3)
    heads.remember({"a": 1, "b": 1, "c": 1})
    heads.remember({"a": 2})  # written again: now the newest
    heads.remember({"d": 1})
    assert dict(heads) == {"c": 1, "a": 2, "d": 1}
    assert list(heads) == ["c", "a", "d"]


def test_retry_start_follows_the_expected_version_or_the_stored_first_event() -> None:
    assert retry_start(4, None, 2) == 4
    assert retry_start(None, 7, 2) == 6
    assert retry_start(None, None, 2) is None  # the first event is not stored: no retry
    assert retry_start(MAX_VERSION - 1, None, 2) is None  # versions no store can hold


def test_prior_append_needs_the_same_events_in_one_commit() -> None:
    stored = [("e1", 10, "t"), ("e2", 11, "t")]
    assert prior_append(["e1", "e2"], 3, stored) == (5, 10, "t")
    assert prior_append(["e1", "e3"], 3, stored) is None  # other events
    assert prior_append(["e1", "e2"], 3, [("e1", 10, "t"), ("e2", 12, "t")]) is None
    assert prior_append(["e1", "e2"], 3, [("e1", 10, "t"), ("e2", 11, "u")]) is None


def test_encode_rows_writes_what_encode_json_writes_for_each_event() -> None:
    shared = {"command_id": "c", "note": None}
    events = [
        NewEvent("e1", "T", {"x": 1.5, "y": None}, shared),
        NewEvent("e2", "U", {}, shared),
        NewEvent("e3", "T", {"x": [1, "a"]}, {}),
    ]
    assert encode_rows(events) == [
        (e.type, encode_json(e.data, "data", e), encode_json(e.metadata, "metadata", e), e.event_id)
        for e in events
    ]


@pytest.mark.parametrize("what", ["data", "metadata"])
@pytest.mark.parametrize("bad", [float("nan"), object()])
def test_encode_rows_refuses_what_json_cannot_hold_as_encode_json_does(
    what: str, bad: object
) -> None:
    good = NewEvent("e1", "T", {"x": 1}, {"k": "v"})
    value = {"x": bad}
    event = NewEvent("e2", "T", value, {}) if what == "data" else NewEvent("e2", "T", {}, value)
    with pytest.raises(CodecError) as expected:
        encode_json(value, what, event)
    with pytest.raises(CodecError) as refused:
        encode_rows([good, event])
    assert str(refused.value) == str(expected.value)
