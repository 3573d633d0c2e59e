"""The web service example, over real HTTP: uvicorn on a free port, httpx as the client."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest
import uvicorn

ROOT = Path(__file__).resolve().parent.parent


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "web_service_example", ROOT / "examples" / "web_service.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the example service, served by uvicorn on a free local port."""
    app = _example().create_app(str(tmp_path / "web.db"))
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
