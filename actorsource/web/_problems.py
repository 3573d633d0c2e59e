"""actorsource errors as HTTP problem details (RFC 9457), whatever the web framework.

Each error class maps to a status and a problem type; the body names the aggregate and the
reason in words a client can show, never internals: the messages of store and codec errors
(which may hold file paths, DSNs or class names) stay in the server's log.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import attrs

from .._errors import (
    ActorFailedError,
    ActorsourceError,
    AskTimeoutError,
    ConcurrencyError,
    MailboxFullError,
    Rejected,
    RuntimeClosedError,
    StoreError,
    UnknownCommandError,
    WaitTimeoutError,
)

logger = logging.getLogger("actorsource.web")

#: the media type of a problem details body
PROBLEM_JSON: Final = "application/problem+json"

#: the problem types' URIs start with this (tag URIs, RFC 4151: identifiers, not pages)
PROBLEM_TYPE_PREFIX: Final = "tag:actorsource,2026:"

#: seconds a client is told to wait before sending again to a full mailbox
RETRY_AFTER_SECONDS: Final = 1


class PreconditionFailedError(ActorsourceError):
    """Raised when an ``If-Match`` header names no version of an aggregate (``*``, a weak or
    foreign ETag, a list): the condition cannot hold, so the request is refused (412)."""

    def __init__(self, header: str) -> None:
        self.header = header
        msg = (
            f"If-Match must be the ETag of one version of the aggregate, as a read returned it "
            f'(such as "3"), got {header!r}'
        )
        super().__init__(msg)


@attrs.frozen
class Problem:
    """An HTTP problem details response (RFC 9457): its status, body members and headers."""

    #: the HTTP status code
    status: int
    #: the problem type's URI (the client's key to tell problems apart)
    type: str
    #: a short summary of the problem type
    title: str
    #: what happened this time, for the client
    detail: str
    #: extension members (``stream_id``, versions, ...)
    extensions: dict[str, Any] = attrs.field(factory=dict)
    #: response headers beside the content type (``Retry-After``)
    headers: dict[str, str] = attrs.field(factory=dict)

    def body(self) -> dict[str, Any]:
        """Return the JSON body: ``type``, ``title``, ``status``, ``detail`` and extensions."""
        return {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extensions,
        }


def problem_for(error: ActorsourceError, *, conditional: bool = False) -> Problem:
    """Return the problem details response for an actorsource error.

    ============================  ======  ================================================
    error                         status  why
    ============================  ======  ================================================
    ``Rejected``                  409     the aggregate's rules refuse the command in its
                                          current state (the request itself was well formed)
    ``ConcurrencyError``          412     with ``If-Match``/``If-None-Match``: the version
                                          the client read is not the current one
    ``ConcurrencyError``          409     without: other writers kept changing the aggregate
    ``PreconditionFailedError``   412     ``If-Match`` names no version
    ``UnknownCommandError``       400     the aggregate has no such command
    ``AskTimeoutError``           504     no outcome in time (``processed``: it may be stored)
    ``WaitTimeoutError``          504     a read model did not catch up in time
    ``MailboxFullError``          503     too many commands queued; ``Retry-After``
    ``RuntimeClosedError``        503     the service is starting or stopping
    ``StoreError``                503     the event store failed (the cause is logged)
    ``ActorFailedError``          503     the aggregate could not be loaded (logged)
    any other                     500     a bug: logged with its traceback
    ============================  ======  ================================================

    :param conditional: the request carried ``If-Match`` or ``If-None-Match``
    """
    if isinstance(error, Rejected):
        return _rejected(error)
    if isinstance(error, ConcurrencyError):
        return _conflict(error, conditional)
    if isinstance(error, PreconditionFailedError):
        return Problem(412, _type("precondition-failed"), "Precondition failed", str(error))
    if isinstance(error, UnknownCommandError):
        detail = f"{error.aggregate} does not handle the command {error.command_type}"
        extensions = {"aggregate": error.aggregate, "command": error.command_type}
        return Problem(400, _type("unknown-command"), "Unknown command", detail, extensions)
    if isinstance(error, AskTimeoutError):
        return _ask_timeout(error)
    if isinstance(error, WaitTimeoutError):
        detail = "a read model did not catch up in time; read again shortly"
        return Problem(504, _type("read-model-timeout"), "Read model not up to date", detail)
    if isinstance(error, MailboxFullError):
        detail = f"too many commands are waiting for {error.stream_id}; send again shortly"
        return Problem(
            503,
            _type("busy"),
            "Aggregate busy",
            detail,
            {"stream_id": error.stream_id},
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(error, RuntimeClosedError):
        detail = "the service is starting or shutting down; send again shortly"
        return Problem(503, _type("unavailable"), "Service unavailable", detail)
    if isinstance(error, StoreError):
        _log_server_side(error, "event store failed")
        detail = "the event store could not be reached or failed; send again shortly"
        return Problem(503, _type("store-unavailable"), "Event store unavailable", detail)
    if isinstance(error, ActorFailedError):
        _log_server_side(error, "aggregate could not be loaded")
        detail = f"{error.stream_id} could not be loaded; send again shortly"
        return Problem(
            503,
            _type("aggregate-unavailable"),
            "Aggregate unavailable",
            detail,
            {"stream_id": error.stream_id},
        )
    logger.error("request failed", exc_info=error)
    detail = "the server failed to process the request; the failure is logged"
    return Problem(500, _type("internal"), "Internal server error", detail)


def _type(name: str) -> str:
    return PROBLEM_TYPE_PREFIX + name


def _rejected(error: Rejected) -> Problem:
    extensions: dict[str, Any] = {}
    if error.stream_id is not None:
        extensions["stream_id"] = error.stream_id
    detail = str(error) or "the command was rejected"
    return Problem(409, _type("rejected"), "Command rejected", detail, extensions)


def _conflict(error: ConcurrencyError, conditional: bool) -> Problem:
    extensions = {
        "stream_id": error.stream_id,
        "expected_version": error.expected_version,
        "actual_version": error.actual_version,
    }
    if conditional:
        detail = (
            f"{error.stream_id} is at version {error.actual_version}, not "
            f"{error.expected_version}: read it again and send the command with its new ETag"
        )
        return Problem(412, _type("version-mismatch"), "Precondition failed", detail, extensions)
    detail = f"{error.stream_id} kept changing while the command was decided; send it again"
    return Problem(409, _type("conflict"), "Concurrent change", detail, extensions)


def _ask_timeout(error: AskTimeoutError) -> Problem:
    if error.processed:
        outcome = "its outcome is unknown: it may have been stored"
    else:
        outcome = "it was withdrawn and will not run: it is safe to send again"
    detail = f"{error.command_type} to {error.stream_id} got no outcome in time; {outcome}"
    extensions = {"stream_id": error.stream_id, "processed": error.processed}
    return Problem(504, _type("timeout"), "Command timed out", detail, extensions)


def _log_server_side(error: ActorsourceError, what: str) -> None:
    logger.warning("%s: %s", what, error, exc_info=error)
