"""ETags of aggregate versions, and the versions that ``If-Match`` headers name."""

from __future__ import annotations

from ._problems import PreconditionFailedError


def etag(version: int) -> str:
    """Return the strong ETag of a version of an aggregate: ``"3"`` (quotes included)."""
    return f'"{version}"'


def if_match_version(header: str | None) -> int | None:
    """Return the version an ``If-Match`` header names (``None`` without the header), for
    ``ref.ask(..., expected_version=)``.

    :raises PreconditionFailedError: if the header is not one ETag made by :func:`etag`
        (``*``, a weak ETag, a list, another form): no version can match it, so the request
        is refused with 412 rather than run unconditionally
    """
    if header is None:
        return None
    text = header.strip()
    digits = text[1:-1]
    if len(text) >= 3 and text[0] == text[-1] == '"' and digits.isascii() and digits.isdigit():
        return int(digits)
    raise PreconditionFailedError(header)
