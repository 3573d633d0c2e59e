"""DSN redaction: passwords never reach a message, a log line or a repr."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

#: a key whose value is a secret (``password``, ``sslpassword``), in a query string or a
#: key=value DSN
_SECRET_KEY: Final = re.compile(r"\w*password\s*=\s*", re.IGNORECASE)


def _secret_spans(dsn: str) -> list[tuple[int, int]]:
    """Return the (start, end) spans of ``dsn`` that may hold a secret, merged and in order.

    Found without parsing, so that a DSN that cannot be parsed, or that a parser splits in the
    wrong places (an unencoded ``/ ? # @`` in its password), hides its password all the same:
    everything after the first ``:`` following the scheme's ``//`` up to the last ``@`` (the
    password, wherever it ends), and everything after a ``password=`` key to the end of the DSN
    (its value may hold an unencoded ``&``, ``#`` or space).
    """
    spans: list[tuple[int, int]] = []
    scheme = dsn.find("://")
    start = 0 if scheme < 0 else scheme + 3
    at = dsn.rfind("@", start)
    colon = dsn.find(":", start, max(at, start))
    if colon >= 0 and colon + 1 < at:
        spans.append((colon + 1, at))
    key = _SECRET_KEY.search(dsn)
    if key is not None and key.end() < len(dsn):
        spans.append((key.end(), len(dsn)))
    merged: list[tuple[int, int]] = []
    for begin, end in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with each part that may hold a password replaced by ``***``.

    Whatever the DSN's shape: ``postgresql://app:***@host/db``,
    ``postgresql://app@host/db?password=***``, ``host=db password=***``; a malformed DSN
    (``postgresql://app:***@[::1/db``) is hidden in the same places.
    """
    parts: list[str] = []
    shown = 0
    for begin, end in _secret_spans(dsn):
        parts += [dsn[shown:begin], "***"]
        shown = end
    parts.append(dsn[shown:])
    return "".join(parts)


def _secret_words(dsn: str) -> frozenset[str]:
    """Return the words of ``dsn``'s secret parts, as written and percent-decoded, casefolded."""
    words: set[str] = set()
    for begin, end in _secret_spans(dsn):
        secret = dsn[begin:end]
        for text in (secret, unquote(secret)):
            words.update(word.casefold() for word in re.findall(r"\w+", text))
    return frozenset(words)


def _scrub(detail: str, secret_words: frozenset[str]) -> str:
    """Return a driver's error ``detail`` with every word of the DSN's secret parts hidden.

    A driver's message may quote a piece of a malformed DSN (``invalid literal for int():
    's3c'``, when a password's ``/`` made its start the port), so a password can leak through
    the detail as well as through the DSN itself.
    """
    if not secret_words:
        return detail
    return re.sub(
        r"\w+", lambda word: "***" if word[0].casefold() in secret_words else word[0], detail
    )
