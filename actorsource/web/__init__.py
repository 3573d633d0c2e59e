"""actorsource in a web service: the runtime's lifespan, errors as problem details (RFC 9457),
ETags of versions.

This package needs no web framework; its adapters do: :mod:`actorsource.web.starlette`
(``pip install 'actorsource[web]'``) and :mod:`actorsource.web.fastapi`
(``pip install 'actorsource[fastapi]'``). docs/web-services.md tells the whole story.
"""

from ._etags import etag as etag
from ._etags import if_match_version as if_match_version
from ._lifespan import STATE_KEY as STATE_KEY
from ._lifespan import open_runtime as open_runtime
from ._lifespan import runtime_lifespan as runtime_lifespan
from ._problems import PROBLEM_JSON as PROBLEM_JSON
from ._problems import PreconditionFailedError as PreconditionFailedError
from ._problems import Problem as Problem
from ._problems import problem_for as problem_for

__all__ = [
    "PROBLEM_JSON",
    "STATE_KEY",
    "PreconditionFailedError",
    "Problem",
    "etag",
    "if_match_version",
    "open_runtime",
    "problem_for",
    "runtime_lifespan",
]
