"""The installed ``actorsource`` command, run as a user runs it: in a process of its own, its
output piped or on a terminal, interrupted, and against stores it must not change."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import anyio
import pytest

import actorsource
from actorsource import NewEvent, Runtime, SQLiteEventStore
from actorsource.cli._table import display_width
from actorsource.stores.postgres.schema import SCHEMA_VERSION as POSTGRES_SCHEMA
from actorsource.stores.sqlite.schema import SCHEMA_VERSION as SQLITE_SCHEMA

from .conftest import POSTGRES_DSN, SKIP_WITHOUT_POSTGRES, make_store, postgres_schema
from .domain import Account, Deposit, Withdraw

ROOT = Path(__file__).resolve().parent.parent

#: the console script pip installed beside this interpreter
COMMAND = Path(sys.executable).parent / "actorsource"


def _env(**changes: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # --app finds tests.domain
    env.pop("COLUMNS", None)
    env.pop("NO_COLOR", None)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed command to its end."""
    assert COMMAND.is_file(), f"the actorsource command is not installed at {COMMAND}"
    return subprocess.run(
        [str(COMMAND), *argv],
        capture_output=True,
        text=True,
        env=env or _env(),
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def _hiding(tmp_path: Path, module: str) -> dict[str, str]:
    """An environment in which ``module`` cannot be imported (as if not installed)."""
    where = tmp_path / f"without_{module}"
    where.mkdir()
    (where / "sitecustomize.py").write_text(f"import sys\nsys.modules[{module!r}] = None\n")
    return _env(PYTHONPATH=f"{where}{os.pathsep}{ROOT}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Two accounts, and a checkpoint behind the head."""
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


@pytest.fixture
def big_db(tmp_path: Path) -> Path:
    """Far more output than a pipe holds: 2,000 events with long data."""
    path = tmp_path / "big.db"

    async def fill() -> None:
        async with SQLiteEventStore(path) as store:
            for start in range(0, 2000, 500):
                events = [
                    NewEvent(str(uuid.uuid4()), "Noted", {"text": "x" * 300}, {})
                    for _ in range(500)
                ]
                await store.append("Notes-1", start, events)

    anyio.run(fill)
    return path


def _lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


# -- --version, exit statuses -------------------------------------------------------------------


def test_version_prints_the_installed_distributions_version() -> None:
    done = run("--version")

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"actorsource {metadata.version('actorsource')}\n"
    assert metadata.version("actorsource") == actorsource.__version__


def test_version_falls_back_to_the_packages_own_outside_an_installation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from actorsource.cli import version

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)

    assert version() == actorsource.__version__


def test_python_dash_m_actorsource_is_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "actorsource", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, f"actorsource {actorsource.__version__}\n")


def test_a_usage_error_exits_2_and_a_failed_command_1_each_with_one_reason(
    db: Path, tmp_path: Path
) -> None:
    usage = run("events", str(db), "--limit", "x")
    failed = run("events", str(db), "Account-zzz")

    assert usage.returncode == 2
    assert usage.stderr.startswith("usage: actorsource events")
    assert "error: argument --limit: must be a positive whole number, got 'x'" in usage.stderr
    assert failed.returncode == 1
    assert failed.stderr == "actorsource events: error: stream 'Account-zzz' has no events\n"


# -- pipes and interrupts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["events"], ["events", "--json"], ["tail", "--from-position", "1"]],
    ids=["events", "events --json", "tail"],
)
def test_a_reader_that_closes_early_gets_no_traceback_and_a_clean_exit(
    big_db: Path, argv: list[str]
) -> None:
    with subprocess.Popen(
        [str(COMMAND), argv[0], str(big_db), *argv[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()  # like `| head -1`: one line, then gone
        process.stdout.close()
        err = process.stderr.read().decode()
        status = process.wait(timeout=60)

    assert first  # it did print
    assert err == ""
    assert status == 0


def test_ctrl_c_exits_130_without_a_traceback(db: Path) -> None:
    with subprocess.Popen(
        [str(COMMAND), "tail", str(db), "--from-position", "1", "--poll", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        for _ in range(4):  # the history printed: it now waits for new events
            assert process.stdout.readline()
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=60)
        err = process.stderr.read().decode()

    assert err == ""
    assert status == 130


# -- tables that fit ----------------------------------------------------------------------------


def _on_terminal(argv: list[str], columns: int) -> str:
    """Run the command with its stdout on a terminal ``columns`` wide; return what it showed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    attributes = termios.tcgetattr(follower)
    attributes[1] &= ~termios.ONLCR  # no \r added to each line
    termios.tcsetattr(follower, termios.TCSANOW, attributes)
    with subprocess.Popen(
        [str(COMMAND), *argv],
        stdout=follower,
        stderr=subprocess.PIPE,
        env=_env(NO_COLOR="1"),
    ) as process:
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end closed
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=60) == 0
    os.close(leader)
    return shown.decode()


def test_a_table_fits_the_terminal_cutting_wide_cells_with_an_ellipsis(big_db: Path) -> None:
    shown = _on_terminal(["events", str(big_db), "--limit", "3"], columns=80)
    lines = shown.splitlines()

    assert len(lines) == 4
    assert max(display_width(line) for line in lines) <= 80
    assert lines[0].split()[:4] == ["position", "stream", "version", "type"]
    assert lines[1].split()[:4] == ["1", "Notes-1", "1", "Noted"]
    assert '{"text":"' in lines[1]
    assert "…" in lines[1]  # the data was cut


def test_a_table_fits_a_narrow_terminal_and_keeps_every_row(db: Path) -> None:
    wide = _on_terminal(["streams", str(db)], columns=200).splitlines()
    narrow = _on_terminal(["streams", str(db)], columns=30).splitlines()

    assert max(display_width(line) for line in narrow) <= 30
    assert [line.split()[0] for line in narrow] == [line.split()[0] for line in wide]


def test_json_and_a_pipe_get_every_cell_whole(big_db: Path) -> None:
    as_json = _on_terminal(["events", str(big_db), "--limit", "2", "--json"], columns=40)
    piped = run("events", str(big_db), "--limit", "2")

    assert [e["data"] for e in _lines(as_json)] == [{"text": "x" * 300}] * 2
    assert piped.returncode == 0
    assert all(f'{{"text":"{"x" * 300}"}}' in line for line in piped.stdout.splitlines()[1:])
    assert "…" not in piped.stdout


def test_columns_fits_piped_output_too(big_db: Path) -> None:
    done = run("events", str(big_db), "--limit", "2", env=_env(COLUMNS="60"))

    assert done.returncode == 0
    assert max(display_width(line) for line in done.stdout.splitlines()) <= 60


# -- events --from / --limit --------------------------------------------------------------------


def test_events_prints_the_whole_log_from_a_position_up_to_a_limit(db: Path) -> None:
    everything = run("events", str(db), "--json")
    some = run("events", str(db), "--from", "2", "--limit", "2", "--json")
    table = run("events", str(db), "--from", "4")
    of_a_stream = run("events", str(db), "Account-a", "--limit", "2", "--json")

    assert [e["position"] for e in _lines(everything.stdout)] == [1, 2, 3, 4]
    assert [(e["position"], e["stream_id"]) for e in _lines(some.stdout)] == [
        (2, "Account-a"),
        (3, "Account-a"),
    ]
    assert table.stdout.splitlines()[0].split()[:3] == ["position", "stream", "version"]
    assert table.stdout.splitlines()[1].split()[:4] == ["4", "Account-b", "1", "Deposited"]
    assert [e["version"] for e in _lines(of_a_stream.stdout)] == [1, 2]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--from", "-1"), ("--from", "0"), ("--from", "1.5"), ("--from", "two"), ("--limit", "-2")],
)
def test_events_refuses_a_position_or_limit_that_is_not_a_positive_whole_number(
    db: Path, option: str, value: str
) -> None:
    done = run("events", str(db), option, value)

    assert done.returncode == 2
    assert done.stdout == ""
    assert f"argument {option}: must be a" in done.stderr
    assert f"got {value!r}" in done.stderr


def test_events_help_says_what_from_means() -> None:
    done = run("events", "--help")

    assert done.returncode == 0
    assert "global position" in done.stdout
    assert "the store's whole log" in done.stdout


def test_events_of_a_stream_refuses_a_global_from(db: Path) -> None:
    done = run("events", str(db), "Account-a", "--from", "2")

    assert done.returncode == 1
    assert "--from is a position in the whole log" in done.stderr
    assert "use --from-version" in done.stderr


# -- info ----------------------------------------------------------------------------------------


def test_info_summarizes_a_sqlite_store(db: Path) -> None:
    as_json = run("info", str(db), "--json")
    text = run("info", str(db))

    facts = json.loads(as_json.stdout)
    assert as_json.returncode == 0
    assert facts["store"] == "sqlite"
    assert (facts["schema_version"], facts["current_schema_version"]) == (
        SQLITE_SCHEMA,
        SQLITE_SCHEMA,
    )
    assert (facts["streams"], facts["events"], facts["head_position"]) == (2, 4, 4)
    assert facts["size_bytes"] == db.stat().st_size > 0
    assert facts["projections"] == [{"name": "balances", "position": 2, "lag_events": 2}]
    lines = text.stdout.splitlines()
    assert lines[0].split(maxsplit=1) == ["store", f"SQLite {db}"]
    assert ["schema", "version", str(SQLITE_SCHEMA)] in [line.split() for line in lines]
    assert ["events", "4"] in [line.split() for line in lines]
    assert lines[-1].split()[:3] == ["balances", "2", "2"]


@pytest.mark.parametrize(
    "store_kind", [pytest.param("postgres", marks=SKIP_WITHOUT_POSTGRES)], indirect=True
)
def test_info_summarizes_a_postgres_store(store_kind: str, tmp_path: Path) -> None:
    async def fill() -> None:
        async with Runtime(make_store(store_kind, tmp_path)) as runtime:
            await runtime.ref(Account, "pg").ask(Deposit(4))
            await runtime.store.save_checkpoint("balances", 1)

    anyio.run(fill)
    schema = postgres_schema(tmp_path)
    done = run("info", POSTGRES_DSN, "--schema", schema, "--json")

    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert (facts["store"], facts["schema"], facts["schema_version"]) == (
        "postgresql",
        schema,
        POSTGRES_SCHEMA,
    )
    assert (facts["streams"], facts["events"], facts["head_position"]) == (1, 1, 1)
    assert facts["projections"] == [{"name": "balances", "position": 1, "lag_events": 0}]


# -- looking never creates or changes anything ------------------------------------------------

READERS = [
    ["info"],
    ["streams"],
    ["events"],
    ["events", "Account-a"],
    ["tail", "--from-position", "1", "--count", "1"],
    ["state", "Account", "a", "--app", "tests.domain:Account"],
    ["projections"],
]


@pytest.mark.parametrize("argv", READERS, ids=[" ".join(a[:2]) for a in READERS])
def test_no_command_creates_a_missing_sqlite_file(tmp_path: Path, argv: list[str]) -> None:
    missing = tmp_path / "typo.db"
    done = run(argv[0], str(missing), *argv[1:])

    assert done.returncode == 1
    assert done.stderr == f"actorsource {argv[0]}: error: no database at {str(missing)!r}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def postgres_store(postgres_dsn: str, tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL store in this test's schema, with Account-a at version 1."""
    from .conftest import drop_schema, run_sync

    async def fill() -> None:
        async with Runtime(make_store("postgres", tmp_path)) as runtime:
            await runtime.ref(Account, "a").ask(Deposit(4))

    anyio.run(fill)
    yield postgres_schema(tmp_path)
    run_sync(drop_schema(postgres_dsn, postgres_schema(tmp_path)))
    run_sync(drop_schema(postgres_dsn, postgres_schema(tmp_path) + "_typo"))


def _schema_exists(schema: str) -> bool:
    import asyncpg  # type: ignore[import-untyped]

    async def look() -> bool:
        conn = await asyncpg.connect(POSTGRES_DSN)
        try:
            found = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
        finally:
            await conn.close()
        return found is not None

    return bool(anyio.run(look))


WRITERS = [["projections", "rebuild", "balances", "--app", "tests.test_cli_arguments"]]


@pytest.mark.parametrize(
    "argv", READERS + WRITERS, ids=[" ".join(a[:2]) for a in READERS + WRITERS]
)
def test_no_command_creates_a_mistyped_postgres_schema_and_it_names_those_with_a_store(
    postgres_store: str, argv: list[str]
) -> None:
    typo = postgres_store + "_typo"
    done = run(argv[0], POSTGRES_DSN, "--schema", typo, *argv[1:])

    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        f"actorsource {argv[0]}: error: no actorsource store in schema {typo!r} of postgresql://"
    )
    assert postgres_store in line.partition("; schemas with a store: ")[2]
    assert not _schema_exists(typo)


def test_a_missing_asyncpg_is_one_line_saying_what_to_install(tmp_path: Path) -> None:
    done = run("streams", "postgresql://app@db.invalid/bank", env=_hiding(tmp_path, "asyncpg"))

    assert done.returncode == 1
    assert done.stderr == (
        "actorsource streams: error: a PostgreSQL DSN needs the asyncpg driver, which is not "
        "installed: pip install 'actorsource[postgres]'\n"
    )


@pytest.fixture
def version_1_db(db: Path) -> Path:
    """The fixture's database as version 1 of the SQLite schema was (no checkpoints table)."""
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE checkpoints")
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    return db


@pytest.mark.parametrize("argv", READERS, ids=[" ".join(a[:2]) for a in READERS])
def test_an_older_store_is_read_as_it_is_and_never_upgraded(
    version_1_db: Path, argv: list[str]
) -> None:
    done = run(argv[0], str(version_1_db), *argv[1:])

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout
    with sqlite3.connect(version_1_db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "checkpoints" not in tables


def test_info_says_an_older_store_is_read_as_it_is(version_1_db: Path) -> None:
    facts = json.loads(run("info", str(version_1_db), "--json").stdout)
    text = run("info", str(version_1_db)).stdout

    assert (facts["schema_version"], facts["current_schema_version"]) == (1, SQLITE_SCHEMA)
    assert facts["projections"] == []
    older = f"schema version    1 (older than this actorsource's {SQLITE_SCHEMA}: read as it is"
    assert older in text


# -- bench -------------------------------------------------------------------------------------


def test_bench_says_the_eventsourcing_peer_is_missing_and_how_to_add_it(tmp_path: Path) -> None:
    env = _hiding(tmp_path, "eventsourcing")
    table = run("bench", "--quick", "-w", "W1", "--dir", str(tmp_path), env=env)
    as_json = run("bench", "--quick", "-w", "W1", "--dir", str(tmp_path), "--json", env=env)
    left_out = run("bench", "--quick", "-w", "W1", "--dir", str(tmp_path), "--no-peer", env=env)

    assert table.returncode == 0, table.stderr
    hint = "pip install 'actorsource[bench]'"
    assert "eventsourcing (the Python peer) is not installed" in table.stdout
    assert hint in table.stdout
    assert hint in table.stderr  # said as it runs, too
    assert hint in json.loads(as_json.stdout)["peer_skipped"]
    assert hint not in left_out.stdout + left_out.stderr
