"""The runtime's life in a web service: open it, add its projections, wait until they caught
up (within a deadline), serve, then drain and close."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final

import anyio

from .._projection import Projection
from .._runtime import Runtime

logger = logging.getLogger("actorsource.web")

#: the key of the runtime in the application's lifespan state
STATE_KEY: Final = "actorsource_runtime"

#: a projection to add: an instance, or what makes one at each start (its class)
ProjectionSource = Projection | Callable[[], Projection]


@contextlib.asynccontextmanager
async def open_runtime(
    runtime: Runtime | Callable[[], Runtime],
    *,
    projections: Iterable[ProjectionSource] = (),
    catch_up_timeout: float | None = 30.0,
) -> AsyncIterator[Runtime]:
    """Open a runtime, add projections, and wait until they caught up with the store; yield
    the runtime, then process what was accepted and close it on exit.

    For a lifespan of your own (with other resources beside the runtime)::

        @contextlib.asynccontextmanager
        async def lifespan(app):
            async with open_runtime(make_runtime, projections=[Balances]) as runtime:
                yield {STATE_KEY: runtime, ...}

    :param runtime: the runtime, or what makes it (called on entry: a runtime can be entered
        once, and an application's lifespan may run more than once, as in tests)
    :param projections: projection instances, or their classes (or factories), made on entry
        so that an in-memory read model starts empty each time
    :param catch_up_timeout: seconds all projections together may take to reach the store's
        head as it was on entry (``None``: as long as it takes); past it the start fails
        instead of hanging
    :raises WaitTimeoutError: if a projection did not catch up in time (it names the
        projection and where it stood)
    """
    sources = check_projections(projections)
    check_timeout(catch_up_timeout)
    made = runtime if isinstance(runtime, Runtime) else runtime()
    if not isinstance(made, Runtime):
        msg = f"the runtime factory must return a Runtime, got {type(made).__qualname__}"
        raise TypeError(msg)
    async with made:
        added = []
        for source in sources:
            projection = source if isinstance(source, Projection) else source()
            made.add_projection(projection)
            added.append(projection)
        deadline = math.inf if catch_up_timeout is None else anyio.current_time() + catch_up_timeout
        for projection in added:
            left = None if deadline == math.inf else max(deadline - anyio.current_time(), 0.0)
            await made.wait_for_projection(projection, timeout=left)
        logger.info("runtime open, %d projection(s) caught up", len(added))
        yield made


def runtime_lifespan(
    runtime: Runtime | Callable[[], Runtime],
    *,
    projections: Iterable[ProjectionSource] = (),
    catch_up_timeout: float | None = 30.0,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    """Return a lifespan for a Starlette or FastAPI application (``lifespan=``) that runs
    :func:`open_runtime` and puts the runtime in the lifespan state, where
    ``get_runtime`` (and FastAPI's ``RuntimeDep``) find it.

    The arguments are those of :func:`open_runtime`, checked now.
    """
    sources = check_projections(projections)
    check_timeout(catch_up_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with open_runtime(
            runtime, projections=sources, catch_up_timeout=catch_up_timeout
        ) as opened:
            yield {STATE_KEY: opened}

    return lifespan


def check_projections(projections: Iterable[ProjectionSource]) -> list[ProjectionSource]:
    sources = list(projections)
    for source in sources:
        if isinstance(source, Projection) or callable(source):
            continue
        msg = (
            "projections must be Projection instances or their classes (or functions making "
            f"one), got {type(source).__qualname__} {source!r}"
        )
        raise TypeError(msg)
    return sources


def check_timeout(catch_up_timeout: float | None) -> None:
    if catch_up_timeout is None:
        return
    if isinstance(catch_up_timeout, bool) or not isinstance(catch_up_timeout, int | float):
        msg = f"catch_up_timeout must be a number of seconds or None, got {catch_up_timeout!r}"
        raise TypeError(msg)
    if not catch_up_timeout > 0:
        msg = f"catch_up_timeout must be > 0 seconds (or None: no limit), got {catch_up_timeout}"
        raise ValueError(msg)
