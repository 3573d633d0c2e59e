"""``actorsource timers``: a store's durable timers, due, late, by aggregate."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from actorsource import Runtime, SQLiteEventStore
from actorsource.cli import main

from .timer_domain import Nudge, Order, Place, TickLater


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with a timer due in 15 minutes, one due now, one going to another stream."""
    path = tmp_path / "events.db"

    async def fill() -> None:
        async with Runtime(SQLiteEventStore(path)) as runtime:
            await runtime.ref(Order, "1").ask(Place(minutes=15))
            await runtime.ref(Order, "2").ask(TickLater(seconds=0))
            await runtime.ref(Order, "3").ask(Nudge("3"))

    anyio.run(fill)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _owners(out: str) -> list[str]:
    return [json.loads(line)["owner"] for line in out.splitlines()]


def test_timers_lists_every_timer_with_its_status(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "timers", str(db))
    lines = out.splitlines()

    assert status == 0
    assert lines[0].split() == ["owner", "key", "target", "command", "due", "at", "every", "status"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"Order-1", "Order-2", "Order-3"}
    assert rows["Order-1"][-1] == "waiting"
    assert rows["Order-2"][-1] == "due"
    assert rows["Order-3"][2] == "Shop-s"


def test_timers_shows_only_due_late_or_one_aggregates_timers_when_asked(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    due = _run(capsys, "timers", str(db), "--due", "--json")[1]
    late = _run(capsys, "timers", str(db), "--late", "--late-after", "0", "--json")[1]
    not_late = _run(capsys, "timers", str(db), "--late", "--json")[1]
    by_target = _run(capsys, "timers", str(db), "--aggregate", "Shop-s", "--json")[1]

    assert _owners(due) == ["Order-2"]
    assert _owners(late) == ["Order-2"]
    assert json.loads(late)["status"] == "late"
    assert not_late == ""
    assert _owners(by_target) == ["Order-3"]


def test_timers_of_a_missing_database_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(capsys, "timers", str(tmp_path / "none.db"))

    assert status == 1
    assert out == ""
    assert err.startswith("actorsource timers: error: no database at")
