"""The FastAPI side of the web integration: typed dependencies for the runtime and the
``If-Match`` version (needs ``pip install 'actorsource[fastapi]'``)::

    from actorsource import ActorsourceError
    from actorsource.web import runtime_lifespan
    from actorsource.web.fastapi import IfMatchVersion, RuntimeDep, problem_handler

    app = FastAPI(
        lifespan=runtime_lifespan(make_runtime, projections=[Balances]),
        exception_handlers={ActorsourceError: problem_handler},
    )

    @app.post("/accounts/{account_id}/deposits")
    async def deposit(account_id: str, body: DepositBody, runtime: RuntimeDep,
                      expected: IfMatchVersion) -> dict[str, int]:
        ref = runtime.ref(Account, account_id)
        recorded = await ref.ask(Deposit(body.amount), expected_version=expected)
        ...
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from .._runtime import Runtime
from ._etags import if_match_version
from .starlette import get_runtime, problem_handler

__all__ = ["IfMatchVersion", "RuntimeDep", "get_runtime", "if_match", "problem_handler"]


def if_match(
    if_match: Annotated[str | None, Header(description="the ETag a read returned")] = None,
) -> int | None:
    """Return the version the request's ``If-Match`` header names (``None`` without one).

    :raises PreconditionFailedError: if the header names no version (answered with 412)
    """
    return if_match_version(if_match)


#: the application's runtime, for an endpoint's parameter: ``runtime: RuntimeDep``
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

#: the version ``If-Match`` names, or None: ``expected: IfMatchVersion``, then
#: ``ref.ask(cmd, expected_version=expected)``
IfMatchVersion = Annotated[int | None, Depends(if_match)]
