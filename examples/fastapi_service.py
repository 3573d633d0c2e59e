"""A FastAPI service over actorsource: orders with ETags and If-Match, a read model, and time
travel.

::

    PUT    /orders/{id}/lines/{sku}       {"quantity": 2}  -> 200 the order, ETag
    DELETE /orders/{id}/lines/{sku}                        -> 200 the order, ETag
    POST   /orders/{id}/submission                         -> 200 the order, ETag
    GET    /orders/{id}                                    -> 200 the order, ETag; 404
    GET    /orders/{id}/versions/{version}                 -> 200 the order as it was then
    GET    /orders?status=open                             -> 200 the read model

Every command endpoint honours ``If-Match`` (the ETag a read returned): a stale one is refused
with 412 and changes nothing. A command the order's rules refuse is a 409, an invalid body a
422, both as problem details (``application/problem+json``).

The read model lives in memory: built again from the log at every start (the lifespan waits
until it caught up, within a deadline) and awaited after each write (read-your-writes).

Run it with ``python examples/fastapi_service.py [PORT]`` (needs
``pip install 'actorsource[fastapi]' uvicorn``), then open http://127.0.0.1:8000/docs.
"""

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import attrs
import uvicorn
from fastapi import FastAPI, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from actorsource import (
    ActorsourceError,
    Aggregate,
    Projection,
    ProjectionContext,
    Rejected,
    Runtime,
    SQLiteEventStore,
    apply,
    command,
    handle,
    jsonable,
)
from actorsource.web import PROBLEM_JSON, Problem, etag, runtime_lifespan
from actorsource.web.fastapi import IfMatchVersion, RuntimeDep, problem_handler

# -- the domain: an order, its commands and its events


@attrs.frozen
class SetLine:
    sku: str
    quantity: int


@attrs.frozen
class RemoveLine:
    sku: str


@attrs.frozen
class Submit:
    at: datetime


@attrs.frozen
class LineSet:  # events are storage formats: their names and fields are a contract
    sku: str
    quantity: int


@attrs.frozen
class LineRemoved:
    sku: str


@attrs.frozen
class Submitted:
    at: datetime


@attrs.define
class Order(Aggregate):
    lines: dict[str, int] = attrs.Factory(dict)
    submitted_at: datetime | None = None

    @command
    def set_line(self, cmd: SetLine) -> LineSet:
        self._still_open()
        if cmd.quantity < 1:
            raise Rejected(f"a quantity is at least 1, got {cmd.quantity}")
        return LineSet(cmd.sku, cmd.quantity)

    @command
    def remove_line(self, cmd: RemoveLine) -> LineRemoved:
        self._still_open()
        if cmd.sku not in self.lines:
            raise Rejected(f"the order has no line {cmd.sku!r}")
        return LineRemoved(cmd.sku)

    @command
    def submit(self, cmd: Submit) -> Submitted:
        self._still_open()
        if not self.lines:
            raise Rejected("an empty order cannot be submitted")
        return Submitted(cmd.at)

    def _still_open(self) -> None:
        if self.submitted_at is not None:
            raise Rejected(f"the order was submitted at {self.submitted_at.isoformat()}")

    @apply
    def line_set(self, event: LineSet) -> None:
        self.lines[event.sku] = event.quantity

    @apply
    def line_removed(self, event: LineRemoved) -> None:
        del self.lines[event.sku]

    @apply
    def submitted(self, event: Submitted) -> None:
        self.submitted_at = event.at


# -- the read model: one summary per order, in memory


class OrderSummaries(Projection):
    """Each order's item count and status (built again from the log at every start)."""

    def __init__(self) -> None:
        self.lines: dict[str, dict[str, int]] = {}
        self.submitted: set[str] = set()

    @handle
    def line_set(self, event: LineSet, ctx: ProjectionContext) -> None:
        self.lines.setdefault(ctx.record.stream_id, {})[event.sku] = event.quantity

    @handle
    def line_removed(self, event: LineRemoved, ctx: ProjectionContext) -> None:
        self.lines[ctx.record.stream_id].pop(event.sku, None)

    @handle
    def submitted(self, event: Submitted, ctx: ProjectionContext) -> None:
        self.submitted.add(ctx.record.stream_id)

    def summaries(self, status: str | None = None) -> list[dict[str, Any]]:
        found = []
        for stream_id, lines in sorted(self.lines.items()):
            state = "submitted" if stream_id in self.submitted else "open"
            if status in (None, state):
                order_id = stream_id.removeprefix("Order-")
                found.append({"id": order_id, "items": sum(lines.values()), "status": state})
        return found


# -- the HTTP API


class LineBody(BaseModel):
    quantity: int = Field(gt=0, le=1000)


def create_app(
    database: str = "orders.db",
    *,
    catch_up_timeout: float = 30.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    """Return the application; its runtime lives as long as the application runs.

    :param catch_up_timeout: seconds the start may take to bring the read model up to date;
        past it the start fails (and the server stops) instead of hanging
    :param clock: the time a submission is stamped with
    """
    app = FastAPI(
        title="Orders",
        lifespan=runtime_lifespan(
            lambda: Runtime(SQLiteEventStore(database), passivate_after=60.0),
            projections=[OrderSummaries],
            catch_up_timeout=catch_up_timeout,
        ),
        exception_handlers={ActorsourceError: problem_handler},
    )

    async def decide(
        runtime: Runtime, order_id: str, cmd: object, expected: int | None, response: Response
    ) -> dict[str, Any]:
        """Send a command (only if the order is at the If-Match version), wait until the read
        model saw it, and answer with the order and its new ETag."""
        ref = runtime.ref(Order, order_id)
        recorded = await ref.ask(cmd, expected_version=expected, timeout=5.0)
        if recorded:  # read-your-writes: a GET /orders right after sees this write
            await runtime.wait_for_projection(OrderSummaries, recorded[-1].position, timeout=5.0)
        state, version = await ref.state_and_version()
        response.headers["ETag"] = etag(version)
        return {"id": order_id, "version": version, **jsonable(state)}

    @app.put("/orders/{order_id}/lines/{sku}")
    async def set_line(
        order_id: str,
        sku: str,
        body: LineBody,
        *,
        runtime: RuntimeDep,
        expected: IfMatchVersion,
        response: Response,
    ) -> dict[str, Any]:
        return await decide(runtime, order_id, SetLine(sku, body.quantity), expected, response)

    @app.delete("/orders/{order_id}/lines/{sku}")
    async def remove_line(
        order_id: str, sku: str, runtime: RuntimeDep, expected: IfMatchVersion, response: Response
    ) -> dict[str, Any]:
        return await decide(runtime, order_id, RemoveLine(sku), expected, response)

    @app.post("/orders/{order_id}/submission", response_model=None)
    async def submit(
        order_id: str, runtime: RuntimeDep, expected: IfMatchVersion, response: Response
    ) -> dict[str, Any] | JSONResponse:
        if not await runtime.ref(Order, order_id).exists():
            return not_found(f"no order {order_id!r}")
        return await decide(runtime, order_id, Submit(clock()), expected, response)

    @app.get("/orders/{order_id}", response_model=None)
    async def read_order(
        order_id: str, runtime: RuntimeDep, response: Response
    ) -> dict[str, Any] | JSONResponse:
        state, version = await runtime.ref(Order, order_id).state_and_version()
        if version == 0:
            return not_found(f"no order {order_id!r}")
        response.headers["ETag"] = etag(version)
        return {"id": order_id, "version": version, **jsonable(state)}

    @app.get("/orders/{order_id}/versions/{version}", response_model=None)
    async def order_as_it_was(
        order_id: str, version: int, runtime: RuntimeDep
    ) -> dict[str, Any] | JSONResponse:
        _, current = await runtime.ref(Order, order_id).state_and_version()
        if not 1 <= version <= current:
            return not_found(f"order {order_id!r} has versions 1 to {current}, not {version}")
        state = await runtime.state_at(Order, order_id, version=version)
        return {"id": order_id, "version": version, **jsonable(state)}

    @app.get("/orders")
    async def list_orders(
        runtime: RuntimeDep, status: Annotated[Literal["open", "submitted"] | None, Query()] = None
    ) -> list[dict[str, Any]]:
        return runtime.projection(OrderSummaries).summaries(status)

    return app


def not_found(detail: str) -> JSONResponse:
    """A 404 as problem details, like the errors the problem handler answers."""
    problem = Problem(404, "about:blank", "Not Found", detail)
    return JSONResponse(problem.body(), problem.status, media_type=PROBLEM_JSON)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    uvicorn.run(create_app(), host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
