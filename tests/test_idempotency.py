"""The idempotency window on its own: bounded, oldest out first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from actorsource import RecordedEvent
from actorsource._idempotency import IdempotencyWindow


def recorded(tag: str) -> list[RecordedEvent[Any]]:
    return [RecordedEvent(tag, "A-1", 1, 1, f"id-{tag}", datetime.now(UTC), {})]


def test_the_window_answers_what_it_remembers() -> None:
    window = IdempotencyWindow(2)
    first = recorded("c-1")
    window.remember("c-1", first)
    assert window.get("c-1") is first
    assert "c-1" in window
    assert window.get("c-2") is None
    assert "c-2" not in window


def test_the_oldest_command_leaves_a_full_window() -> None:
    window = IdempotencyWindow(2)
    for tag in ("c-1", "c-2", "c-3"):
        window.remember(tag, recorded(tag))
    assert len(window) == 2
    assert window.get("c-1") is None
    assert [window.get(tag) is not None for tag in ("c-2", "c-3")] == [True, True]


@pytest.mark.parametrize("bad", [0, -2, True, 1.0])
def test_a_window_needs_a_positive_int_size(bad: object) -> None:
    with pytest.raises(ValueError, match="int >= 1 of commands"):
        IdempotencyWindow(bad)  # type: ignore[arg-type]  # what is tested
