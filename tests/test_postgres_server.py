"""Where the PostgreSQL tests find a server (``tests/postgres_server.py``): the DSN given, a
throwaway server from the installed PostgreSQL, or a skip that says how to enable them."""

from __future__ import annotations

from pathlib import Path

import pytest

from actorsource import PostgresEventStore

from .postgres_server import NO_POSTGRES, POSTGRES_OFF, Choice, ThrowawayServer, choose, find_bindir
from .stores.test_contract import event


def _never() -> Path | None:
    raise AssertionError("the binaries are not looked for when a DSN is given")


def test_a_dsn_given_is_used_and_no_server_is_started() -> None:
    env = {"ACTORSOURCE_TEST_POSTGRES_DSN": "postgresql:///x", "ACTORSOURCE_TEST_POSTGRES": "0"}

    assert choose(env, _never) == Choice("dsn", "postgresql:///x")


def test_without_a_dsn_the_installed_postgresql_is_started() -> None:
    assert choose({}, lambda: Path("/opt/pg/bin")) == Choice("throwaway", "/opt/pg/bin")


def test_without_a_dsn_or_postgresql_the_skip_says_how_to_enable_the_tests() -> None:
    choice = choose({"ACTORSOURCE_TEST_POSTGRES_DSN": ""}, lambda: None)

    assert choice == Choice("skip", NO_POSTGRES)
    assert "\n" not in NO_POSTGRES
    assert "ACTORSOURCE_TEST_POSTGRES_DSN" in NO_POSTGRES
    assert "PostgreSQL installed" in NO_POSTGRES


def test_the_tests_can_be_switched_off_where_postgresql_is_installed() -> None:
    assert choose({"ACTORSOURCE_TEST_POSTGRES": "0"}, lambda: Path("/x")) == Choice(
        "skip", POSTGRES_OFF
    )


BINDIR = find_bindir()


@pytest.mark.skipif(BINDIR is None, reason="PostgreSQL is not installed here")
async def test_a_throwaway_server_takes_a_store_and_is_gone_once_stopped() -> None:
    assert BINDIR is not None
    server = ThrowawayServer(BINDIR)
    try:
        server.start()
        async with PostgresEventStore(server.dsn, schema="throwaway") as store:
            assert (await store.append("a", 0, [event()])).first_position == 1
    finally:
        server.stop()

    assert not server.root.exists()


class _Item:
    """What the server's start-up looks at of a collected test."""

    def __init__(self, *, fixtures: tuple[str, ...] = (), marker: str | None = None) -> None:
        self.fixturenames = fixtures
        self._marker = marker

    def get_closest_marker(self, name: str) -> object | None:
        return object() if name == self._marker else None


def test_a_test_needs_the_server_through_its_fixture_or_its_marker() -> None:
    from .conftest import _needs_postgres

    assert _needs_postgres(_Item(fixtures=("postgres_dsn",)))  # type: ignore[arg-type]
    # a hypothesis state machine or a helper-made store has no fixture: the marker says so
    assert _needs_postgres(_Item(marker="postgres"))  # type: ignore[arg-type]
    assert not _needs_postgres(_Item(fixtures=("tmp_path",), marker="slow"))  # type: ignore[arg-type]
