"""The Starlette side of the web integration (FastAPI builds on it): the runtime from the
lifespan state, and the exception handler that answers with problem details.

Needs Starlette (``pip install 'actorsource[web]'``)::

    from actorsource import ActorsourceError
    from actorsource.web import runtime_lifespan
    from actorsource.web.starlette import get_runtime, problem_handler

    app = Starlette(
        routes=[...],
        lifespan=runtime_lifespan(make_runtime, projections=[Balances]),
        exception_handlers={ActorsourceError: problem_handler},
    )
"""

from __future__ import annotations

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from .._errors import ActorsourceError
from .._runtime import Runtime
from ._lifespan import STATE_KEY
from ._problems import PROBLEM_JSON, problem_for


def get_runtime(connection: HTTPConnection) -> Runtime:
    """Return the runtime that :func:`~actorsource.web.runtime_lifespan` opened for this
    application (from the request's lifespan state; a WebSocket's too).

    :raises RuntimeError: if the application's lifespan did not open one
    """
    state = connection.scope.get("state") or {}
    runtime = state.get(STATE_KEY)
    if not isinstance(runtime, Runtime):
        msg = (
            f"no actorsource runtime in the lifespan state of this application (key "
            f"{STATE_KEY!r}): create it with lifespan=runtime_lifespan(...), or yield "
            "{STATE_KEY: runtime} from your own lifespan; a test client must run the lifespan "
            "(Starlette's TestClient as a context manager does, httpx's ASGITransport does not)"
        )
        raise RuntimeError(msg)
    return runtime


async def problem_handler(request: Request, error: Exception) -> Response:
    """Answer an actorsource error with a problem details response (RFC 9457), as
    :func:`~actorsource.web.problem_for` maps it; register it for :class:`ActorsourceError`
    (a handler for a subclass, such as your own ``Rejected`` subclass, takes precedence).

    A :class:`ConcurrencyError` is a 412 when the request carried ``If-Match`` or
    ``If-None-Match``, a 409 otherwise.
    """
    if not isinstance(error, ActorsourceError):
        raise error  # registered for another class by mistake: not ours to answer
    headers = request.headers
    conditional = "if-match" in headers or "if-none-match" in headers
    problem = problem_for(error, conditional=conditional)
    return JSONResponse(
        problem.body(), problem.status, headers=problem.headers, media_type=PROBLEM_JSON
    )
