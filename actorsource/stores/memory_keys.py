"""The in-memory store's subject keys (a part of :class:`InMemoryEventStore`)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from .._records import SnapshotRecord
from ._base import StoreLifecycle, check_subject


class MemorySubjectKeys(StoreLifecycle):
    """Subject keys in dicts: every operation happens in one step of the loop."""

    _snapshots: dict[str, dict[int, SnapshotRecord]]
    #: subject -> key (None: forgotten)
    _subject_keys: dict[str, bytes | None]
    #: subject -> the streams holding its sealed data
    _subject_streams: dict[str, set[str]]

    async def load_subject_keys(self) -> dict[str, bytes | None]:
        """Return every subject's key (``None``: forgotten)."""
        self._check_open()
        return dict(self._subject_keys)

    async def save_subject_keys(
        self, keys: Mapping[str, bytes], links: Collection[tuple[str, str]]
    ) -> dict[str, bytes]:
        """Store keys for subjects without a live one, and the links; return each key."""
        self._check_open()
        for subject, key in keys.items():
            check_subject(subject)
            if len(key) != 32:
                msg = f"a subject key is 32 bytes, got {len(key)} for {subject!r}"
                raise ValueError(msg)
        found: dict[str, bytes] = {}
        for subject, key in keys.items():
            current = self._subject_keys.get(subject)
            if current is None:
                current = self._subject_keys[subject] = key
            found[subject] = current
        for subject, stream_id in links:
            self._subject_streams.setdefault(subject, set()).add(stream_id)
        return found

    async def forget_subject(self, subject: str) -> tuple[bool, list[str]] | None:
        """Destroy the key, delete the linked streams' snapshots; return those streams."""
        self._check_open()
        check_subject(subject)
        if subject not in self._subject_keys:
            return None
        live = self._subject_keys[subject] is not None
        self._subject_keys[subject] = None
        streams = sorted(self._subject_streams.get(subject, ()))
        for stream_id in streams:
            self._snapshots.pop(stream_id, None)
        return live, streams
