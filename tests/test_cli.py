"""The inspection commands: streams, events, tail, state, projections."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from actorsource import Runtime, SQLiteEventStore
from actorsource.cli import main

from .conftest import SKIP_WITHOUT_POSTGRES
from .domain import Account, Deposit, Withdraw

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with two accounts and an order-like stream, and one checkpoint."""
    path = tmp_path / "events.db"

    async def fill() -> None:
        async with Runtime(SQLiteEventStore(path)) as runtime:
            a = runtime.ref(Account, "a")
            await a.ask(Deposit(10))
            await a.ask(Withdraw(3))
            await a.ask(Deposit(5))
            await runtime.ref(Account, "b").ask(Deposit(1))
            await runtime.store.save_checkpoint("balances", 2)

    anyio.run(fill)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_streams_lists_each_stream_with_its_version(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "streams", str(db))
    lines = out.splitlines()

    assert status == 0
    assert lines[0].split() == ["stream", "version", "last", "write", "(UTC)"]
    assert [line.split()[:2] for line in lines[1:]] == [["Account-a", "3"], ["Account-b", "1"]]


def test_streams_json_is_one_object_per_stream_filtered_by_category(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "streams", str(db), "--category", "Account", "--json")
    found = [json.loads(line) for line in out.splitlines()]

    assert status == 0
    assert [(s["stream_id"], s["version"]) for s in found] == [("Account-a", 3), ("Account-b", 1)]
    assert datetime.fromisoformat(found[0]["last_recorded_at"]) <= datetime.now(UTC)
    assert _run(capsys, "streams", str(db), "--category", "Order", "--json")[1] == ""


def test_events_prints_a_streams_events_in_a_version_range(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "events", str(db), "Account-a", "--from-version", "2", "--json")
    found = [json.loads(line) for line in out.splitlines()]

    assert status == 0
    assert [(e["version"], e["type"], e["data"]) for e in found] == [
        (2, "Withdrew", {"amount": 3}),
        (3, "Deposited", {"amount": 5}),
    ]
    table = _run(capsys, "events", str(db), "Account-a", "--to-version", "1")[1].splitlines()
    assert table[0].split()[:3] == ["version", "position", "type"]
    assert table[1].split()[:3] == ["1", "1", "Deposited"]
    assert '{"amount":10}' in table[1]


def test_state_rebuilds_an_aggregate_with_the_users_classes(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    app = "tests.domain:Account"

    now = _run(capsys, "state", str(db), "Account", "a", "--app", app, "--json")
    then = _run(capsys, "state", str(db), "Account", "a", "--app", app, "--version", "2", "--json")
    whole_module = _run(capsys, "state", str(db), "Account", "b", "--app", "tests.domain")
    before = _run(
        capsys, "state", str(db), "Account", "a", "--app", app, "--at", "2000-01-01T00:00:00"
    )

    assert now[0] == 0 and json.loads(now[1])["balance"] == 12
    assert json.loads(then[1])["balance"] == 7
    assert json.loads(whole_module[1])["balance"] == 1  # pretty JSON by default
    assert json.loads(before[1])["balance"] == 0


def test_state_of_an_unknown_category_names_what_was_found(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    status, out, err = _run(capsys, "state", str(db), "Order", "a", "--app", "tests.domain")

    assert status == 1
    assert out == ""
    assert err.count("\n") == 1  # one line, no traceback
    assert "no aggregate of category 'Order'" in err
    assert "Account" in err


def test_projections_lists_positions_and_lag(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "projections", str(db), "--json")
    (balances,) = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert (balances["name"], balances["position"], balances["head_position"]) == (
        "balances",
        2,
        4,
    )
    assert balances["lag_events"] == 2
    assert balances["lag_seconds"] >= 0


def test_projections_forget_removes_a_retired_projection_s_checkpoint(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(capsys, "projections", str(db), "forget", "nobody")
    assert (status, out) == (1, "")
    assert "no checkpoint named 'nobody' (checkpoints: 'balances')" in err

    status, out, _ = _run(capsys, "projections", str(db), "forget", "balances")
    assert status == 0
    assert out.startswith("balances: checkpoint removed; archiving no longer waits for it")
    assert _run(capsys, "projections", str(db), "--json")[1] == ""


def test_projections_rebuild_without_the_application_is_refused_and_changes_nothing(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(capsys, "projections", str(db), "rebuild", "balances")

    assert (status, out) == (1, "")
    assert err.count("\n") == 1  # one line
    assert "needs the application to clear its read model: pass --app" in err
    after = json.loads(_run(capsys, "projections", str(db), "--json")[1])
    assert after["position"] == 2  # unchanged


def test_projections_rebuild_of_a_durable_read_model_without_reset_is_refused(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    app = "tests.workers.projector:ExactlyOnce"  # a durable read model, no reset
    status, out, err = _run(capsys, "projections", str(db), "rebuild", "seen", "--app", app)
    unknown = _run(capsys, "projections", str(db), "rebuild", "nope", "--app", app)

    assert (status, out) == (1, "")
    assert err.count("\n") == 1
    assert "projection 'seen' is durable" in err
    assert "has no reset(self, ctx)" in err
    assert unknown[0] == 1
    assert "no projection named 'nope' at --app" in unknown[2]
    assert "(found: seen)" in unknown[2]
    after = json.loads(_run(capsys, "projections", str(db), "--json")[1])
    assert after["position"] == 2  # unchanged


def _read_side(cwd: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "read_side.py")],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _balances(path: Path) -> list[tuple[str, int]]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT account, balance FROM balances ORDER BY account").fetchall()


def test_projections_rebuild_with_the_application_gives_the_table_a_fresh_run_gives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _read_side(tmp_path)
    fresh = _balances(tmp_path / "read_side.db")

    monkeypatch.chdir(ROOT / "examples")  # where --app finds read_side
    database = str(tmp_path / "read_side.db")
    status, out, err = _run(
        capsys, "projections", database, "rebuild", "Balances", "--app", "read_side"
    )
    assert (status, err) == (0, "")
    assert "Balances: read model reset and checkpoint set to 0" in out
    with pytest.raises(Exception, match="no such table"):
        _balances(tmp_path / "read_side.db")  # cleared with the checkpoint

    again = _read_side(tmp_path)  # the next start delivers every event once into it
    assert fresh == [("Account-alice", 75), ("Account-bob", 30)]
    assert _balances(tmp_path / "read_side.db") == fresh
    assert again == first


def test_a_missing_database_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.db"
    status, _, err = _run(capsys, "streams", str(missing))

    assert status == 1
    assert err == f"actorsource streams: error: no database at {str(missing)!r}\n"
    assert not missing.exists()  # not created by looking


def test_events_of_an_empty_stream_is_an_error(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run(capsys, "events", str(db), "Account-zzz")
    assert status == 1
    assert "stream 'Account-zzz' has no events" in err


def test_tail_prints_history_from_a_position(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(
        capsys, "tail", str(db), "--from-position", "2", "--count", "2", "--type", "Deposited"
    )
    assert status == 0
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["3", "Account-a@3", "Deposited"],
        ["4", "Account-b@1", "Deposited"],
    ]


def test_tail_follows_events_another_process_appends(db: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "actorsource.cli", "tail", str(db), "--count", "1"]
    with subprocess.Popen(
        [*command, "--poll", "0.05", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as tail:

        async def append_until_seen() -> None:
            async with Runtime(SQLiteEventStore(db)) as runtime:
                # the tail starts at the head it finds: keep appending until it has printed
                with anyio.fail_after(30):
                    while tail.poll() is None:
                        await runtime.ref(Account, "c").ask(Deposit(2))
                        await anyio.sleep(0.1)

        anyio.run(append_until_seen)
        out, err = tail.communicate(timeout=30)

    assert tail.returncode == 0, err
    (line,) = out.splitlines()
    event = json.loads(line)
    assert (event["stream_id"], event["type"], event["data"]) == (
        "Account-c",
        "Deposited",
        {"amount": 2},
    )
    assert event["position"] > 4


@pytest.mark.parametrize(
    "store_kind", [pytest.param("postgres", marks=SKIP_WITHOUT_POSTGRES)], indirect=True
)
def test_streams_and_events_read_a_postgres_store_by_dsn(
    store_kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .conftest import POSTGRES_DSN, make_store, postgres_schema

    async def fill() -> None:
        async with Runtime(make_store(store_kind, tmp_path)) as runtime:
            await runtime.ref(Account, "pg").ask(Deposit(4))

    anyio.run(fill)
    schema = postgres_schema(tmp_path)

    streams = _run(capsys, "streams", POSTGRES_DSN, "--schema", schema, "--json")
    events = _run(capsys, "events", POSTGRES_DSN, "Account-pg", "--schema", schema, "--json")

    assert streams[0] == 0, streams[2]
    assert [json.loads(line)["stream_id"] for line in streams[1].splitlines()] == ["Account-pg"]
    assert json.loads(events[1])["data"] == {"amount": 4}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_colours_unless_no_color_is_set(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actorsource.cli import parser
    from actorsource.cli._commands import run_command

    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = _Terminal()
    assert run_command(parser().parse_args(["streams", str(db)]), coloured) == 0
    monkeypatch.setenv("NO_COLOR", "1")
    plain = _Terminal()
    assert run_command(parser().parse_args(["streams", str(db)]), plain) == 0

    assert coloured.getvalue().startswith("\033[1;36mstream")
    assert "\033[1mAccount-a" in coloured.getvalue()
    assert "\033[" not in plain.getvalue()
    assert plain.getvalue().splitlines()[1].split()[:2] == ["Account-a", "3"]
