"""Subject keys: what a store keeps for crypto-shredding (a key per subject, and the streams
that hold a subject's sealed data)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol

from .checks import _is_utf8


class SubjectKeyStore(Protocol):
    """A store's table of subject keys (declared in ``StoreCapabilities.subject_keys``).

    A key is 32 random bytes; a forgotten subject keeps its row with no key (so that a
    forgotten subject is told apart from one never seen), and its links to the streams that
    hold its sealed data.
    """

    async def load_subject_keys(self) -> dict[str, bytes | None]:
        """Return every subject's key (``None``: forgotten)."""
        ...

    async def save_subject_keys(
        self, keys: Mapping[str, bytes], links: Collection[tuple[str, str]]
    ) -> dict[str, bytes]:
        """Store ``keys`` for the subjects that have no live key (new or forgotten ones) and
        the (subject, stream id) ``links``, in one transaction; return the key each subject
        of ``keys`` has now (another writer's, if it stored one first)."""
        ...

    async def forget_subject(self, subject: str) -> tuple[bool, list[str]] | None:
        """Destroy the subject's key and delete the snapshots of the streams linked to it, in
        one transaction; return whether it had a key until now, and those streams (``None``:
        the subject has no row; nothing changed). Forgetting a forgotten subject changes
        nothing."""
        ...


def check_subject(subject: object) -> str:
    """Return ``subject`` if it is a subject id (a non-empty str without NUL).

    :raises ValueError: naming what was wrong
    """
    if not isinstance(subject, str) or not subject or "\x00" in subject:
        msg = f"a subject id is a non-empty str without NUL characters, got {subject!r}"
        raise ValueError(msg)
    if not _is_utf8(subject):
        msg = f"a subject id must be valid Unicode (no lone surrogates), got {subject!r}"
        raise ValueError(msg)
    return subject
