"""actorsource.web: the runtime's lifespan, the typed dependencies, errors as problem details."""

from __future__ import annotations

import subprocess
import sys
import typing
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from actorsource import (
    ActorFailedError,
    ActorsourceError,
    AskTimeoutError,
    CodecError,
    ConcurrencyError,
    EventStore,
    InMemoryEventStore,
    MailboxFullError,
    NewEvent,
    Projection,
    ProjectionContext,
    Rejected,
    Runtime,
    RuntimeClosedError,
    SQLiteEventStore,
    StoreError,
    UnknownCommandError,
    WaitTimeoutError,
    handle,
)
from actorsource.web import (
    PROBLEM_JSON,
    PreconditionFailedError,
    etag,
    if_match_version,
    open_runtime,
    problem_for,
    runtime_lifespan,
)
from actorsource.web.fastapi import IfMatchVersion, RuntimeDep
from actorsource.web.starlette import get_runtime, problem_handler

from .domain import Account, Deposit, Deposited, Withdraw, Withdrew
from .web_clients import asgi_client

ROOT = Path(__file__).resolve().parent.parent


class Balances(Projection):
    def __init__(self) -> None:
        self.by_stream: dict[str, int] = {}

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        stream = ctx.record.stream_id
        self.by_stream[stream] = self.by_stream.get(stream, 0) + event.amount

    @handle
    def withdrew(self, event: Withdrew, ctx: ProjectionContext) -> None:
        stream = ctx.record.stream_id
        self.by_stream[stream] = self.by_stream.get(stream, 0) - event.amount


def _raising(error: Exception) -> Starlette:
    async def endpoint(request: Request) -> JSONResponse:
        raise error

    return Starlette(
        routes=[Route("/", endpoint, methods=["GET", "POST"])],
        exception_handlers={ActorsourceError: problem_handler},
    )


SECRET_DSN = "postgresql://app:hunter2@db.internal/orders"
SECRET_PATH = "/srv/secret/events.db"


@pytest.mark.parametrize(
    ("error", "status", "kind", "members"),
    [
        (UnknownCommandError("Account", "Fly", ["Deposit"]), 400, "unknown-command",
         {"aggregate": "Account", "command": "Fly"}),
        (AskTimeoutError("Account-a", "Deposit", 5.0, processed=True), 504, "timeout",
         {"stream_id": "Account-a", "processed": True}),
        (WaitTimeoutError("projection 'Balances'", target=9, reached=3, timeout=5.0), 504,
         "read-model-timeout", {}),
        (MailboxFullError("Account-a", 1000), 503, "busy", {"stream_id": "Account-a"}),
        (RuntimeClosedError("cannot send to 'Account-a': the runtime is closing"), 503,
         "unavailable", {}),
        (StoreError(f"database {SECRET_PATH} is locked ({SECRET_DSN})"), 503,
         "store-unavailable", {}),
        (ActorFailedError("Account-a", f"cannot read {SECRET_PATH}"), 503,
         "aggregate-unavailable", {"stream_id": "Account-a"}),
        (CodecError(f"cannot decode event at {SECRET_PATH}", type_name="Deposited"), 500,
         "internal", {}),
        (ConcurrencyError("Account-a", 3, 5, retries=30), 409, "conflict",
         {"stream_id": "Account-a", "expected_version": 3, "actual_version": 5}),
        (PreconditionFailedError("*"), 412, "precondition-failed", {}),
    ],
)  # fmt: skip
async def test_each_error_is_a_problem_response_with_its_status_and_no_internals(
    error: Exception, status: int, kind: str, members: dict[str, Any]
) -> None:
    async with asgi_client(_raising(error)) as client:
        response = await client.get("/")
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == f"tag:actorsource,2026:{kind}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert {key: body[key] for key in members} == members
    for secret in ("hunter2", "db.internal", SECRET_PATH, "Traceback", "mailbox_size"):
        assert secret not in response.text


async def test_a_full_mailbox_tells_the_client_when_to_send_again() -> None:
    async with asgi_client(_raising(MailboxFullError("Account-a", 10))) as client:
        response = await client.post("/")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


async def test_a_version_conflict_is_412_for_a_conditional_request_and_409_otherwise() -> None:
    async with asgi_client(_raising(ConcurrencyError("Account-a", 1, 2))) as client:
        conditional = await client.post("/", headers={"If-Match": '"1"'})
        creating = await client.post("/", headers={"If-None-Match": "*"})
        plain = await client.post("/")
    assert (conditional.status_code, creating.status_code, plain.status_code) == (412, 412, 409)
    assert conditional.json()["type"] == "tag:actorsource,2026:version-mismatch"
    assert conditional.json()["actual_version"] == 2
    assert "new ETag" in conditional.json()["detail"]


async def test_a_rejected_command_is_409_naming_the_aggregate_and_the_reason() -> None:
    async def withdraw(request: Request) -> JSONResponse:
        runtime = get_runtime(request)
        await runtime.ref(Account, "a").ask(Withdraw(50))
        return JSONResponse({})

    app = Starlette(
        routes=[Route("/", withdraw, methods=["POST"])],
        lifespan=runtime_lifespan(lambda: Runtime(InMemoryEventStore())),
        exception_handlers={ActorsourceError: problem_handler},
    )
    async with asgi_client(app) as client:
        response = await client.post("/")
    assert response.status_code == 409
    assert response.json() == {
        "type": "tag:actorsource,2026:rejected",
        "title": "Command rejected",
        "status": 409,
        "detail": "insufficient funds: balance 0, asked 50",
        "stream_id": "Account-a",
    }


async def test_a_handler_for_a_rejected_subclass_takes_precedence() -> None:
    class NotFound(Rejected):
        pass

    async def missing(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"missing": str(error)}, 404)

    async def endpoint(request: Request) -> JSONResponse:
        raise NotFound("no order 7")

    app = Starlette(
        routes=[Route("/", endpoint)],
        exception_handlers={ActorsourceError: problem_handler, NotFound: missing},
    )
    async with asgi_client(app) as client:
        response = await client.get("/")
    assert (response.status_code, response.json()) == (404, {"missing": "no order 7"})


def test_an_unexpected_error_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = CodecError("cannot decode event Deposited at /srv/secret")
    with caplog.at_level("ERROR", logger="actorsource.web"):
        problem = problem_for(error)
    assert problem.status == 500
    assert caplog.records[0].exc_info is not None
    assert caplog.records[0].exc_info[1] is error


async def _fill(store: EventStore, count: int) -> None:
    async with store:
        for index in range(count):
            new = NewEvent(str(uuid.uuid4()), "Deposited", {"amount": 1}, {})
            await store.append("Account-a", index, [new])


async def test_the_lifespan_serves_once_the_projections_caught_up(tmp_path: Path) -> None:
    database = tmp_path / "web.db"
    await _fill(SQLiteEventStore(database), 50)

    async def balances(request: Request) -> JSONResponse:
        return JSONResponse(get_runtime(request).projection(Balances).by_stream)

    app = Starlette(
        routes=[Route("/balances", balances)],
        lifespan=runtime_lifespan(
            lambda: Runtime(SQLiteEventStore(database)), projections=[Balances]
        ),
    )
    async with asgi_client(app) as client:  # the first request already sees every event
        assert (await client.get("/balances")).json() == {"Account-a": 50}
    async with asgi_client(app) as client:  # a second start: a new runtime, a new read model
        assert (await client.get("/balances")).json() == {"Account-a": 50}


async def test_a_projection_that_cannot_catch_up_fails_the_start_at_the_deadline(
    tmp_path: Path,
) -> None:
    database = tmp_path / "web.db"
    async with SQLiteEventStore(database) as store:  # an event its handler cannot take
        bad = NewEvent(str(uuid.uuid4()), "Deposited", {"amount": "lots"}, {})
        await store.append("Account-x", 0, [bad])

    with pytest.raises(WaitTimeoutError, match="Balances"):
        async with open_runtime(
            lambda: Runtime(SQLiteEventStore(database)),
            projections=[Balances],
            catch_up_timeout=0.2,
        ):
            pytest.fail("served before the read model caught up")


async def test_open_runtime_takes_a_runtime_and_projection_instances() -> None:
    balances = Balances()
    async with open_runtime(Runtime(InMemoryEventStore()), projections=[balances]) as runtime:
        await runtime.ref(Account, "a").ask(Deposit(3))
        await runtime.wait_for_projection(balances)
        assert runtime.projection(Balances) is balances
        assert balances.by_stream == {"Account-a": 3}


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        ({"projections": ["Balances"]}, TypeError, "projections must be Projection instances"),
        ({"catch_up_timeout": 0}, ValueError, "catch_up_timeout must be > 0"),
        ({"catch_up_timeout": "30"}, TypeError, "catch_up_timeout must be a number"),
    ],
)
def test_lifespan_arguments_are_checked_when_it_is_made(
    arguments: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        runtime_lifespan(lambda: Runtime(InMemoryEventStore()), **arguments)


async def test_a_runtime_factory_returning_something_else_is_named() -> None:
    with pytest.raises(TypeError, match="must return a Runtime, got InMemoryEventStore"):
        async with open_runtime(InMemoryEventStore):  # type: ignore[arg-type]
            pass


async def test_get_runtime_without_the_lifespan_says_how_to_provide_it() -> None:
    async def endpoint(request: Request) -> JSONResponse:
        get_runtime(request)
        return JSONResponse({})

    transport = httpx.ASGITransport(app=Starlette(routes=[Route("/", endpoint)]))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(RuntimeError, match=r"lifespan=runtime_lifespan\(\.\.\.\)"):
            await client.get("/")


def _fastapi_app() -> FastAPI:
    app = FastAPI(
        lifespan=runtime_lifespan(lambda: Runtime(InMemoryEventStore())),
        exception_handlers={ActorsourceError: problem_handler},
    )

    @app.post("/accounts/{account_id}/deposits")
    async def deposit(
        account_id: str, amount: int, runtime: RuntimeDep, expected: IfMatchVersion
    ) -> dict[str, int]:
        recorded = await runtime.ref(Account, account_id).ask(
            Deposit(amount), expected_version=expected
        )
        return {"version": recorded[-1].version}

    @app.get("/accounts/{account_id}")
    async def account(account_id: str, runtime: RuntimeDep) -> JSONResponse:
        state, version = await runtime.ref(Account, account_id).state_and_version()
        return JSONResponse({"balance": state.balance}, headers={"ETag": etag(version)})

    return app


async def test_fastapi_endpoints_get_the_runtime_and_the_if_match_version() -> None:
    async with asgi_client(_fastapi_app()) as client:
        assert (await client.post("/accounts/a/deposits?amount=5")).json() == {"version": 1}
        read = await client.get("/accounts/a")
        assert read.headers["etag"] == '"1"'
        tag = {"If-Match": read.headers["etag"]}
        kept = await client.post("/accounts/a/deposits?amount=7", headers=tag)
        stale = await client.post("/accounts/a/deposits?amount=9", headers=tag)
        starred = await client.post("/accounts/a/deposits?amount=9", headers={"If-Match": "*"})
        assert (await client.get("/accounts/a")).json() == {"balance": 12}
    assert kept.json() == {"version": 2}
    assert (stale.status_code, stale.json()["actual_version"]) == (412, 2)
    assert stale.headers["content-type"] == PROBLEM_JSON
    assert (starred.status_code, starred.json()["type"]) == (
        412,
        "tag:actorsource,2026:precondition-failed",
    )


def test_the_dependencies_are_typed_for_the_endpoints_and_type_checkers() -> None:
    assert typing.get_origin(RuntimeDep) is Annotated
    assert typing.get_args(RuntimeDep)[0] is Runtime
    assert typing.get_args(IfMatchVersion)[0] == int | None


@pytest.mark.parametrize(
    ("header", "version"), [(None, None), ('"0"', 0), ('"12"', 12), (' "3" ', 3)]
)
def test_if_match_names_the_version_of_an_etag(header: str | None, version: int | None) -> None:
    assert if_match_version(header) == version
    if version is not None:
        assert if_match_version(etag(version)) == version


@pytest.mark.parametrize("header", ["*", 'W/"3"', '"3", "4"', "3", '"-1"', '"³"', '""'])
def test_if_match_that_names_no_version_is_a_failed_precondition(header: str) -> None:
    with pytest.raises(PreconditionFailedError, match="If-Match must be the ETag"):
        if_match_version(header)


def test_actorsource_web_imports_without_any_web_framework() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['fastapi'] = None\n"
        "import actorsource.web\n"
        "print(actorsource.web.etag(3))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out == '"3"\n'
