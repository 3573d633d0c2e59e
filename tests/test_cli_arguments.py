"""How the command line takes its arguments: options anywhere after the command, and a DSN's
password never echoed, whatever the DSN's shape."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from actorsource import EventStore, NewEvent, Projection, ResetContext, Runtime, handle
from actorsource.cli import main

from .conftest import POSTGRES_DSN, SKIP_WITHOUT_POSTGRES, make_store, postgres_schema
from .domain import Account, Deposit, Deposited, Withdraw

ROOT = Path(__file__).resolve().parent.parent


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _arrangements(positionals: list[str], options: list[list[str]]) -> list[list[str]]:
    """Return ways to place ``options`` among ``positionals``: all of them together in each gap
    (before the first positional, between two, after the last), and each alone in each gap
    with the others last."""
    gaps = range(len(positionals) + 1)
    last = len(positionals)

    def placed(where: dict[int, int]) -> list[str]:
        argv: list[str] = []
        for gap in gaps:
            for index, option in enumerate(options):
                if where.get(index, last) == gap:
                    argv += option
            if gap < last:
                argv.append(positionals[gap])
        return argv

    every = [placed(dict.fromkeys(range(len(options)), gap)) for gap in gaps]
    every += [placed({index: gap}) for index in range(len(options)) for gap in gaps]
    unique: list[list[str]] = []
    for argv in every:
        if argv not in unique:
            unique.append(argv)
    return unique


def _lines(out: str) -> list[Any]:
    return [json.loads(line) for line in out.splitlines()]


# each case: the command, its positionals (DB stands for the store), its options (SCHEMA for
# the store's schema), and what its output must say (which needs every option to take effect)
_Case = tuple[str, list[str], list[list[str]], Callable[[str], object], object]
_CASES: dict[str, _Case] = {
    "streams": (
        "streams",
        ["DB"],
        [["--schema", "SCHEMA"], ["--category", "Account"], ["--json"]],
        lambda out: [(s["stream_id"], s["version"]) for s in _lines(out)],
        [("Account-a", 3), ("Account-b", 1)],
    ),
    "events": (
        "events",
        ["DB", "Account-a"],
        [["--schema", "SCHEMA"], ["--from-version", "2"], ["--to-version", "2"], ["--json"]],
        lambda out: [(e["version"], e["type"]) for e in _lines(out)],
        [(2, "Withdrew")],
    ),
    "tail": (
        "tail",
        ["DB"],
        [
            ["--schema", "SCHEMA"],
            ["--from-position", "2"],
            ["--count", "2"],
            ["--type", "Deposited"],
            ["--json"],
        ],
        lambda out: [(e["position"], e["stream_id"]) for e in _lines(out)],
        [(3, "Account-a"), (4, "Account-b")],
    ),
    "state": (
        "state",
        ["DB", "Account", "a"],
        [["--schema", "SCHEMA"], ["--app", "tests.domain:Account"], ["--version", "2"], ["--json"]],
        lambda out: json.loads(out)["balance"],
        7,
    ),
    "projections": (
        "projections",
        ["DB"],
        [["--schema", "SCHEMA"], ["--json"]],
        lambda out: [(p["name"], p["position"], p["head_position"]) for p in _lines(out)],
        [("balances", 2, 5)],
    ),
    "projections rebuild": (
        "projections",
        ["DB", "rebuild", "balances"],
        [
            ["--schema", "SCHEMA"],
            ["--from-position", "2"],
            ["--app", "tests.test_cli_arguments:BalancesView"],
            ["--json"],
        ],
        lambda out: out,
        "balances: read model reset and checkpoint set to 1; it is rebuilt from position 2 when "
        "its runtime next starts (stop it first; runtime.rebuild_projection rebuilds without "
        "stopping)\n",
    ),
}


class BalancesView(Projection):
    """A durable read model named ``balances``, for ``projections rebuild --app``."""

    name = "balances"
    durable = True
    resets = 0

    @handle
    def deposited(self, event: Deposited) -> None:
        pass

    def reset(self, ctx: ResetContext) -> None:
        type(self).resets += 1


async def _fill(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        a = runtime.ref(Account, "a")
        await a.ask(Deposit(10))
        await a.ask(Withdraw(3))
        await a.ask(Deposit(5))
        await runtime.ref(Account, "b").ask(Deposit(1))
        placed = NewEvent(event_id=str(uuid.uuid4()), type="Placed", data={}, metadata={})
        await runtime.store.append("Order-1", 0, [placed])
        await runtime.store.save_checkpoint("balances", 2)


@pytest.mark.parametrize("case", list(_CASES))
@pytest.mark.parametrize(
    "store_kind", ["sqlite", pytest.param("postgres", marks=SKIP_WITHOUT_POSTGRES)], indirect=True
)
def test_a_commands_options_may_come_before_between_or_after_its_positionals(
    store_kind: str,
    case: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)  # where --app finds tests.domain
    anyio.run(_fill, make_store(store_kind, tmp_path))
    db = POSTGRES_DSN if store_kind == "postgres" else str(tmp_path / "events.db")
    names = {"DB": db, "SCHEMA": postgres_schema(tmp_path)}
    command, positionals, options, summary, expected = _CASES[case]

    for arrangement in _arrangements(positionals, options):
        argv = [command, *(names.get(arg, arg) for arg in arrangement)]
        status, out, err = _run(capsys, argv)

        assert (status, err) == (0, ""), arrangement
        assert summary(out) == expected, arrangement


def test_the_arrangements_put_each_option_in_each_gap() -> None:
    found = _arrangements(["DB", "rebuild", "NAME"], [["--schema", "S"], ["--json"]])

    assert ["--schema", "S", "DB", "rebuild", "NAME", "--json"] in found
    assert ["DB", "--schema", "S", "rebuild", "NAME", "--json"] in found
    assert ["DB", "rebuild", "--json", "NAME", "--schema", "S"] in found
    assert ["DB", "rebuild", "--schema", "S", "--json", "NAME"] in found
    assert ["DB", "rebuild", "NAME", "--schema", "S", "--json"] in found
    assert len(found) == 10  # 4 gaps together, and 2 options alone in 3 gaps besides the last


# -- a DSN's password --------------------------------------------------------------------------

SECRET = "Zq7Xw9"


def _assert_no_secret(text: str) -> None:
    for piece in (SECRET, SECRET[:3], SECRET[3:]):
        assert piece not in text, text


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://app:{SECRET}@[::1/bank",
        f"postgresql://app:{SECRET[:3]}/{SECRET[3:]}@127.0.0.1:1/bank",
        f"postgresql://app:{SECRET[:3]}?{SECRET[3:]}@127.0.0.1:1/bank",
    ],
)
def test_a_command_on_a_malformed_dsn_prints_no_piece_of_the_password(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("asyncpg")
    status, out, err = _run(capsys, ["streams", dsn])

    assert status == 1
    assert err.startswith(
        "actorsource streams: error: cannot connect to PostgreSQL at postgresql://"
    )
    _assert_no_secret(out + err)


@pytest.mark.parametrize(
    "argv",
    [
        [f"postgresql://app:{SECRET}@db/bank", "streams"],  # the command forgotten
        ["streams", "events.db", f"postgresql://app:{SECRET}@db/bank"],  # one too many
        ["events", f"postgresql://app:{SECRET}@db/bank", "Account-a", "--from-version", "x"],
        ["bench", "--store", f"postgres:/app:{SECRET}@db/bank"],  # a mistyped scheme
    ],
)
def test_a_usage_error_does_not_echo_a_dsns_password(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err

    assert exit_.value.code == 2
    assert "error:" in err
    _assert_no_secret(err)


def test_a_mistyped_dsn_taken_for_a_sqlite_file_is_not_echoed_with_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, err = _run(capsys, ["streams", f"postgressql://app:{SECRET}@db/bank"])

    assert status == 1
    assert err == "actorsource streams: error: no database at 'postgressql://app:***@db/bank'\n"
