"""The retention commands: archive, delete."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from actorsource import Runtime, SnapshotEvery, SQLiteEventStore, read_archive
from actorsource.cli import main

from .domain import Account, Deposit


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Account-a with 3 events and a snapshot at version 2; Account-b with one event."""
    path = tmp_path / "events.db"

    async def fill() -> None:
        async with Runtime(SQLiteEventStore(path), snapshot=SnapshotEvery(2)) as runtime:
            for amount in (1, 2, 3):
                await runtime.ref(Account, "a").ask(Deposit(amount))
            await runtime.ref(Account, "b").ask(Deposit(1))

    anyio.run(fill)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_archive_writes_the_files_and_names_them(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = tmp_path / "archive"
    status, out, _ = _run(capsys, "archive", str(db), "--to", str(files), "--json")

    assert status == 0
    [line] = [json.loads(line) for line in out.splitlines()]
    path = files / "Account-a.000000000001-000000000002.jsonl.gz"
    assert line == {
        "stream_id": "Account-a",
        "first_version": 1,
        "last_version": 2,
        "location": str(path),
    }
    assert [e.data for e in read_archive(path)] == [{"amount": 1}, {"amount": 2}]
    status, out, _ = _run(capsys, "archive", str(db), "--to", str(files))
    assert (status, out) == (0, "nothing to archive\n")


def test_archive_and_delete_refuse_an_unknown_stream_in_one_line(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(
        capsys, "archive", str(db), "--stream", "Account-x", "--to", str(tmp_path)
    )
    assert (status, out) == (1, "")
    assert err == (
        "actorsource archive: error: cannot archive stream 'Account-x': it has no events; "
        "check the stream id (an aggregate's stream id is its category, '-', and its id)\n"
    )
    status, _, err = _run(capsys, "delete", str(db), "Account-x")
    assert status == 1
    assert err.startswith("actorsource delete: error: cannot delete stream 'Account-x'")


def test_delete_leaves_a_tombstone_and_refuses_a_second_time(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "delete", str(db), "Account-a", "--hard")
    assert (status, out) == (0, "Account-a hard-deleted: tombstone at version 4, position 5\n")
    status, _, err = _run(capsys, "delete", str(db), "Account-a")
    assert status == 1
    assert "'Account-a' was hard-deleted (its events removed) at version 4" in err
    status, out, _ = _run(capsys, "events", str(db), "Account-a", "--from-version", "4", "--json")
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["$StreamDeleted"]
