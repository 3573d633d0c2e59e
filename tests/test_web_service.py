"""The web service example, over real HTTP: uvicorn on a free port, httpx as the client."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest
import uvicorn

from actorsource import NewEvent, SQLiteEventStore

ROOT = Path(__file__).resolve().parent.parent


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "web_service_example", ROOT / "examples" / "web_service.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.asynccontextmanager
async def serve(database: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Serve the example over ``database`` with uvicorn on a free local port; stop on exit."""
    app = _example().create_app(str(database))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110  # uvicorn offers no startup event
                await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            yield http
        server.should_exit = True


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the example service."""
    async with serve(tmp_path / "web.db") as http:
        yield http


async def test_commands_over_http_and_the_read_model_sees_each_write(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/accounts/a/deposits", json={"amount": 100})
    assert first.status_code == 201
    assert first.json() == {"version": 1, "position": 1}
    assert (await client.get("/balances")).json() == {"Account-a": 100}  # read-your-writes

    assert (await client.post("/accounts/a/withdrawals", json={"amount": 30})).status_code == 201
    await client.post("/accounts/b/deposits", json={"amount": 5})

    assert (await client.get("/accounts/a")).json() == {"balance": 70}
    assert (await client.get("/balances")).json() == {"Account-a": 70, "Account-b": 5}


async def test_a_refused_command_is_409_with_the_reason_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/accounts/a/deposits", json={"amount": 10})

    refused = await client.post("/accounts/a/withdrawals", json={"amount": 50})
    invalid = await client.post("/accounts/a/deposits", json={"amount": "lots"})

    assert refused.status_code == 409
    assert refused.json() == {"error": "insufficient funds: balance 10, asked 50"}
    assert invalid.status_code == 422
    assert (await client.get("/accounts/a")).json() == {"balance": 10}
    assert (await client.get("/balances")).json() == {"Account-a": 10}


async def test_the_read_model_is_whole_again_after_the_service_restarts(tmp_path: Path) -> None:
    database = tmp_path / "web.db"
    async with serve(database) as first:
        await first.post("/accounts/a/deposits", json={"amount": 100})
        await first.post("/accounts/a/withdrawals", json={"amount": 30})
        await first.post("/accounts/b/deposits", json={"amount": 5})
        before = (await first.get("/balances")).json()

    async with serve(database) as second:
        after = (await second.get("/balances")).json()
        await second.post("/accounts/b/deposits", json={"amount": 1})
        later = (await second.get("/balances")).json()

    assert before == {"Account-a": 70, "Account-b": 5}
    assert after == before  # built again from the log, not resumed into an empty dict
    assert later == {"Account-a": 70, "Account-b": 6}


_SERVER = """
import sys
import uvicorn
sys.path.insert(0, {examples!r})
from web_service import create_app
uvicorn.run(create_app({database!r}, catch_up_timeout={timeout}), host="127.0.0.1", port=0,
            timeout_graceful_shutdown=2)
"""


def test_sigterm_while_the_lifespan_waits_for_the_read_model_stops_the_server(
    tmp_path: Path,
) -> None:
    database = tmp_path / "web.db"

    async def fill() -> None:  # an event its handler cannot take: it never catches up
        async with SQLiteEventStore(database) as store:
            bad = NewEvent(str(uuid.uuid4()), "Deposited", {"amount": "lots"}, {})
            await store.append("Account-x", 0, [bad])

    anyio.run(fill)
    script = tmp_path / "server.py"
    script.write_text(
        _SERVER.format(examples=str(ROOT / "examples"), database=str(database), timeout=5.0)
    )
    with subprocess.Popen(
        [sys.executable, str(script)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as process:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # the projection fails on the event: the wait goes on
            seen.append(line)
            if "projection handler failed" in line:
                break
        process.send_signal(signal.SIGTERM)
        try:  # the wait's deadline bounds the start: the server stops instead of hanging
            _, rest = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode != 0
    assert "did not reach position 1" in rest, "".join(seen) + rest
