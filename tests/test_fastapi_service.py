"""The FastAPI example, over real HTTP (uvicorn + httpx) and over httpx's ASGI transport."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from actorsource import InMemoryEventStore, Rejected, Runtime

from .web_clients import asgi_client, http_client

ROOT = Path(__file__).resolve().parent.parent
SUBMITTED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fastapi_service_example", ROOT / "examples" / "fastapi_service.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _example()
# the tutorial's names (its code comes from here and from the example)
Order, SetLine, RemoveLine = example.Order, example.SetLine, example.RemoveLine
Submit = example.Submit


async def test_an_order_decides_its_commands_without_a_web_server() -> None:
    async with Runtime(InMemoryEventStore()) as runtime:
        order = runtime.ref(Order, "7")
        await order.ask(SetLine("apple", 2))
        await order.ask(SetLine("pear", 1))
        await order.ask(Submit(datetime(2026, 3, 1, 12, 0, tzinfo=UTC)))

        with pytest.raises(Rejected, match="the order was submitted"):
            await order.ask(RemoveLine("apple"))

        state, version = await order.state_and_version()
        assert state.lines == {"apple": 2, "pear": 1}
        assert version == 3


@contextlib.asynccontextmanager
async def serve(database: Path, transport: str) -> AsyncIterator[httpx.AsyncClient]:
    app = example.create_app(str(database), clock=lambda: SUBMITTED_AT)
    client = http_client(app) if transport == "uvicorn" else asgi_client(app)
    async with client as opened:
        yield opened


@pytest.fixture(params=["uvicorn", "asgi"])
async def client(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the example service, over real HTTP and over the ASGI transport."""
    async with serve(tmp_path / "orders.db", request.param) as opened:
        yield opened


async def test_commands_answer_with_the_order_and_its_etag(client: httpx.AsyncClient) -> None:
    first = await client.put("/orders/7/lines/apple", json={"quantity": 2})
    assert first.status_code == 200
    assert first.headers["etag"] == '"1"'
    assert first.json() == {"id": "7", "version": 1, "lines": {"apple": 2}, "submitted_at": None}

    await client.put("/orders/7/lines/pear", json={"quantity": 1})
    submitted = await client.post("/orders/7/submission")
    assert submitted.headers["etag"] == '"3"'
    assert submitted.json()["submitted_at"] == "2026-03-01T12:00:00+00:00"

    read = await client.get("/orders/7")
    assert read.headers["etag"] == '"3"'
    assert read.json() == {
        "id": "7",
        "version": 3,
        "lines": {"apple": 2, "pear": 1},
        "submitted_at": "2026-03-01T12:00:00+00:00",
    }


async def test_the_read_model_sees_each_write_at_once(client: httpx.AsyncClient) -> None:
    await client.put("/orders/1/lines/apple", json={"quantity": 2})
    await client.put("/orders/2/lines/pear", json={"quantity": 5})
    await client.post("/orders/2/submission")
    await client.delete("/orders/1/lines/apple")
    await client.put("/orders/1/lines/fig", json={"quantity": 3})

    assert (await client.get("/orders")).json() == [
        {"id": "1", "items": 3, "status": "open"},
        {"id": "2", "items": 5, "status": "submitted"},
    ]
    submitted = await client.get("/orders", params={"status": "submitted"})
    assert submitted.json() == [{"id": "2", "items": 5, "status": "submitted"}]


async def test_if_match_with_a_stale_etag_is_412_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/orders/7/lines/apple", json={"quantity": 2})
    seen = (await client.get("/orders/7")).headers["etag"]
    kept = await client.put(
        "/orders/7/lines/apple", json={"quantity": 3}, headers={"If-Match": seen}
    )
    stale = await client.put(
        "/orders/7/lines/apple", json={"quantity": 9}, headers={"If-Match": seen}
    )

    assert (kept.status_code, kept.headers["etag"]) == (200, '"2"')
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.json() == {
        "type": "tag:actorsource,2026:version-mismatch",
        "title": "Precondition failed",
        "status": 412,
        "detail": "Order-7 is at version 2, not 1: read it again and send the command with "
        "its new ETag",
        "stream_id": "Order-7",
        "expected_version": 1,
        "actual_version": 2,
    }
    assert (await client.get("/orders/7")).json()["lines"] == {"apple": 3}


async def test_a_refused_command_is_409_and_an_invalid_body_422(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/orders/7/lines/apple", json={"quantity": 2})

    refused = await client.delete("/orders/7/lines/kiwi")
    invalid = await client.put("/orders/7/lines/apple", json={"quantity": 0})

    assert refused.status_code == 409
    assert refused.json()["detail"] == "the order has no line 'kiwi'"
    assert refused.json()["stream_id"] == "Order-7"
    assert invalid.status_code == 422  # FastAPI's own validation of the body
    assert (await client.get("/orders/7")).json()["version"] == 1


async def test_time_travel_shows_the_order_as_it_was(client: httpx.AsyncClient) -> None:
    await client.put("/orders/7/lines/apple", json={"quantity": 2})
    await client.put("/orders/7/lines/apple", json={"quantity": 5})
    await client.post("/orders/7/submission")

    then = await client.get("/orders/7/versions/1")
    assert then.json() == {"id": "7", "version": 1, "lines": {"apple": 2}, "submitted_at": None}
    assert (await client.get("/orders/7/versions/3")).json()["submitted_at"] is not None
    beyond = await client.get("/orders/7/versions/4")
    assert beyond.status_code == 404
    assert beyond.json()["detail"] == "order '7' has versions 1 to 3, not 4"


async def test_an_order_that_does_not_exist_is_404(client: httpx.AsyncClient) -> None:
    missing = await client.get("/orders/nope")
    submitted = await client.post("/orders/nope/submission")
    assert (missing.status_code, submitted.status_code) == (404, 404)
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"] == "no order 'nope'"
    assert (await client.get("/orders")).json() == []


async def test_the_read_model_is_whole_again_after_the_service_restarts(tmp_path: Path) -> None:
    database = tmp_path / "orders.db"
    async with serve(database, "uvicorn") as first:
        await first.put("/orders/1/lines/apple", json={"quantity": 2})
        await first.put("/orders/2/lines/pear", json={"quantity": 5})
        await first.post("/orders/2/submission")
        before = (await first.get("/orders")).json()

    async with serve(database, "uvicorn") as second:
        after = (await second.get("/orders")).json()
        etag = (await second.get("/orders/1")).headers["etag"]

    assert (
        after
        == before
        == [
            {"id": "1", "items": 2, "status": "open"},
            {"id": "2", "items": 5, "status": "submitted"},
        ]
    )
    assert etag == '"1"'  # versions are the stream's: the same after a restart
