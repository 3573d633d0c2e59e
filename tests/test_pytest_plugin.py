"""The pytest plugin, as a user's project meets it: installed, loaded by its entry point, with
anyio's plugin, beside the project's own fixtures. Each test runs pytest on a small project in
a subprocess (pytester)."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["pytester"]

DOMAIN = """
import attrs

from actorsource import Aggregate, apply, command


@attrs.frozen
class Add:
    amount: int


@attrs.frozen
class Added:
    amount: int


@attrs.define
class Counter(Aggregate):
    total: int = 0

    @command
    def add(self, cmd: Add) -> Added:
        return Added(cmd.amount)

    @apply
    def added(self, event: Added) -> None:
        self.total += event.amount
"""

CONFTEST = """
import pytest


@pytest.fixture
def actorsource_runtime_options():
    return {"max_active": 1}


@pytest.fixture
def runtime():
    return "the project's own runtime fixture"


@pytest.fixture
def store():
    return "the project's own store fixture"
"""

TESTS = """
from actorsource import InMemoryEventStore, PostgresEventStore, Runtime, SQLiteEventStore

from domain import Add, Counter


async def test_memory(actorsource_runtime: Runtime) -> None:
    ref = actorsource_runtime.ref(Counter, "c")
    await ref.ask(Add(2))
    await ref.ask(Add(3))
    assert (await ref.state()).total == 5
    assert isinstance(actorsource_runtime.store, InMemoryEventStore)


async def test_memory_is_fresh_per_test(actorsource_runtime: Runtime) -> None:
    assert (await actorsource_runtime.ref(Counter, "c").state()).total == 0


async def test_sqlite(actorsource_sqlite_runtime: Runtime, tmp_path) -> None:
    await actorsource_sqlite_runtime.ref(Counter, "c").ask(Add(1))
    assert isinstance(actorsource_sqlite_runtime.store, SQLiteEventStore)
    assert (tmp_path / "actorsource.db").exists()


async def test_options_reach_the_runtime(actorsource_sqlite_runtime: Runtime) -> None:
    assert actorsource_sqlite_runtime.max_active == 1


async def test_postgres(actorsource_postgres_runtime: Runtime) -> None:
    assert isinstance(actorsource_postgres_runtime.store, PostgresEventStore)
    await actorsource_postgres_runtime.ref(Counter, "c").ask(Add(4))
    assert (await actorsource_postgres_runtime.ref(Counter, "c").state()).total == 4


async def test_every_store(actorsource_store) -> None:
    async with Runtime(actorsource_store) as runtime:
        await runtime.ref(Counter, "c").ask(Add(1))
    assert [e.type async for e in actorsource_store.read_all()] == ["Added"]


def test_own_fixtures_are_left_alone(runtime, store) -> None:
    assert runtime == "the project's own runtime fixture"
    assert store == "the project's own store fixture"
"""


def _project(pytester: pytest.Pytester, *, mode: str = "auto") -> None:
    pytester.makepyfile(domain=DOMAIN, conftest=CONFTEST, test_user=TESTS)
    pytester.makeini(
        f"""
        [pytest]
        anyio_mode = {mode}
        filterwarnings = error
        addopts = -p no:cacheprovider
        """
    )


def test_the_fixtures_give_users_tests_runtimes_and_stores_beside_their_own(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACTORSOURCE_TEST_POSTGRES_DSN", raising=False)
    _project(pytester)

    result = pytester.runpytest_subprocess("-rs")

    result.assert_outcomes(passed=7, skipped=2)
    # one line each, saying how to run them
    result.stdout.fnmatch_lines(
        2
        * [
            "SKIPPED [[]1[]] test_user.py:*: actorsource PostgreSQL fixtures need a test "
            "database: set ACTORSOURCE_TEST_POSTGRES_DSN to a postgresql:// URI*"
        ]
    )


def test_the_fixtures_work_with_anyio_in_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_strict="""
        import pytest

        from actorsource import Runtime


        @pytest.mark.anyio
        async def test_marked(actorsource_runtime: Runtime) -> None:
            assert actorsource_runtime.statistics().activations == 0
        """
    )
    pytester.makeini(
        """
        [pytest]
        anyio_mode = strict
        filterwarnings = error
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)


def test_a_test_on_another_anyio_backend_is_skipped_saying_why(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_backend="""
        import pytest


        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return request.param


        async def test_runtime(actorsource_runtime) -> None:
            pass
        """
    )
    pytester.makeini("[pytest]\nanyio_mode = auto\n")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")

    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*actorsource runs on asyncio, not on the 'trio' anyio backend*"])


@pytest.mark.skipif(
    not os.environ.get("ACTORSOURCE_TEST_POSTGRES_DSN"),
    reason="needs ACTORSOURCE_TEST_POSTGRES_DSN (a postgresql:// URI of a test database)",
)
async def test_with_a_database_each_postgres_test_gets_a_schema_dropped_after_it(
    pytester: pytest.Pytester,
) -> None:
    import asyncpg  # type: ignore[import-untyped]

    dsn = os.environ["ACTORSOURCE_TEST_POSTGRES_DSN"]
    _project(pytester)

    result = pytester.runpytest_subprocess("-k", "postgres or every_store")

    result.assert_outcomes(passed=4)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        left = await connection.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'actorsource\\_test\\_%'"
        )
    finally:
        await connection.close()
    assert left == []
