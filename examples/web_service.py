"""An asyncio web service that embeds the runtime: Starlette, with the lifespan hook.

The runtime opens when the application starts and drains when it stops; endpoints send
commands to aggregates and read a projection::

    POST /accounts/{id}/deposits     {"amount": 100}  -> 201 {"version": 1, "position": 1}
    POST /accounts/{id}/withdrawals  {"amount": 30}   -> 201, or 409 {"error": "..."} if refused
    GET  /accounts/{id}                               -> 200 {"balance": 70, "version": 2}
    GET  /balances                                    -> 200 {"Account-a": 70, ...}

The balances read model lives in memory: an at-least-once projection, built again from the
log whenever the service starts, so it is whole after a restart. The lifespan waits (with a
deadline) until it has caught up before serving; a POST waits until it has seen the POST's own
events before answering, so a GET right after it sees them (read-your-writes).

Run it with ``python examples/web_service.py [PORT]`` (needs ``pip install starlette uvicorn``).
"""

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import attrs
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from actorsource import (
    Aggregate,
    Projection,
    ProjectionContext,
    Rejected,
    Runtime,
    SQLiteEventStore,
    apply,
    command,
    handle,
)


@attrs.frozen
class Deposit:
    amount: int


@attrs.frozen
class Withdraw:
    amount: int


@attrs.frozen
class Deposited:
    amount: int


@attrs.frozen
class Withdrew:
    amount: int


@attrs.define
class Account(Aggregate):
    balance: int = 0

    @command
    def deposit(self, cmd: Deposit) -> Deposited:
        if cmd.amount <= 0:
            raise Rejected(f"deposit must be positive, got {cmd.amount}")
        return Deposited(cmd.amount)

    @command
    def withdraw(self, cmd: Withdraw) -> Withdrew:
        if cmd.amount > self.balance:
            raise Rejected(f"insufficient funds: balance {self.balance}, asked {cmd.amount}")
        return Withdrew(cmd.amount)

    @apply
    def deposited(self, event: Deposited) -> None:
        self.balance += event.amount

    @apply
    def withdrew(self, event: Withdrew) -> None:
        self.balance -= event.amount


class Balances(Projection):
    """Balances by stream, in memory (built again from the log at every start)."""

    def __init__(self) -> None:
        self.by_account: dict[str, int] = {}

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        key = ctx.record.stream_id
        self.by_account[key] = self.by_account.get(key, 0) + event.amount

    @handle
    def withdrew(self, event: Withdrew, ctx: ProjectionContext) -> None:
        key = ctx.record.stream_id
        self.by_account[key] = self.by_account.get(key, 0) - event.amount


def create_app(database: str = "web.db", *, catch_up_timeout: float = 30.0) -> Starlette:
    """Return the application; its runtime lives as long as the application runs.

    :param catch_up_timeout: seconds the start may take to bring the read model up to date;
        past it the start fails (and the server stops) instead of hanging
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with Runtime(SQLiteEventStore(database), passivate_after=60.0) as runtime:
            runtime.add_projection(Balances())
            # caught up before serving, within a deadline: a start never hangs
            await runtime.wait_for_projection(Balances, timeout=catch_up_timeout)
            yield {"runtime": runtime}

    async def move(request: Request, make: Any) -> JSONResponse:
        runtime: Runtime = request.state.runtime
        body = await request.json()
        amount = body.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool):
            return JSONResponse({"error": f"amount must be an integer, got {amount!r}"}, 422)
        account = runtime.ref(Account, request.path_params["account_id"])
        try:
            recorded = await account.ask(make(amount), timeout=5.0)
        except Rejected as exc:
            return JSONResponse({"error": str(exc)}, 409)
        last = recorded[-1]
        # read-your-writes: answer once the read model has seen this write
        await runtime.wait_for_projection(Balances, last.position, timeout=5.0)
        return JSONResponse({"version": last.version, "position": last.position}, 201)

    async def deposit(request: Request) -> JSONResponse:
        return await move(request, Deposit)

    async def withdraw(request: Request) -> JSONResponse:
        return await move(request, Withdraw)

    async def account(request: Request) -> JSONResponse:
        runtime: Runtime = request.state.runtime
        ref = runtime.ref(Account, request.path_params["account_id"])
        state = await ref.state()
        return JSONResponse({"balance": state.balance})

    async def balances(request: Request) -> JSONResponse:
        runtime: Runtime = request.state.runtime
        return JSONResponse(runtime.projection(Balances).by_account)

    return Starlette(
        routes=[
            Route("/accounts/{account_id}/deposits", deposit, methods=["POST"]),
            Route("/accounts/{account_id}/withdrawals", withdraw, methods=["POST"]),
            Route("/accounts/{account_id}", account, methods=["GET"]),
            Route("/balances", balances, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    uvicorn.run(create_app(), host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
