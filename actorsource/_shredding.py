"""Crypto-shredding: this runtime's subject keys kept in step with the store's.

The codec seals personal fields with keys from its key ring (see ``_personal``). Here the key
ring is filled from the store as the runtime opens, and new subjects get their keys (and
their links to the streams holding their data) stored before the events that use them.
``forget`` destroys a subject's key in the store, then here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ._codec import Codec
from ._errors import StoreError, UnknownSubjectError
from ._ids import new_event_id
from ._personal import new_key
from ._records import NewEvent, SubjectForgotten
from .stores._base import EventStore, SubjectKeyStore, check_subject

logger = logging.getLogger("actorsource.personal")


class Shredder:
    """Keeps the codec's key ring and the store's subject keys in step."""

    def __init__(self, codec: Codec, keys: SubjectKeyStore | None, store_name: str) -> None:
        self.codec = codec
        self.keys = keys
        self.store_name = store_name

    def _store(self, doing: str) -> SubjectKeyStore:
        if self.keys is None:
            msg = (
                f"cannot {doing}: {self.store_name} keeps no subject keys (its capabilities "
                "have no subject_keys); use a store that does (memory, SQLite, PostgreSQL)"
            )
            raise StoreError(msg)
        return self.keys

    async def open(self) -> None:
        """Read the store's subject keys into the key ring."""
        if self.keys is not None:
            self.codec.keyring.set_keys(await self.keys.load_subject_keys())

    async def seal(self, stream_id: str, new_events: Sequence[NewEvent]) -> None:
        """Seal the personal fields of ``new_events`` that the batch could not seal: store
        keys for their new subjects (and links to ``stream_id``) first."""
        codec = self.codec
        ring = codec.keyring
        specs = [(new, codec.personal_of(new.type)) for new in new_events]
        missing: set[str] = set()
        for new, spec in specs:
            if spec:
                missing |= ring.missing(spec, new.data, stream_id, new.type)
        if missing:
            store = self._store("store personal fields")
            # always fresh keys: a key this runtime held for a subject forgotten since must
            # never come back
            stored = await store.save_subject_keys(
                {subject: new_key() for subject in missing},
                [(subject, stream_id) for subject in missing],
            )
            ring.set_keys(dict(stored))
            ring.links.update((subject, stream_id) for subject in missing)
        for new, spec in specs:
            if spec:
                ring.seal(spec, new.data, new.type)

    async def forget(self, subject: str, store: EventStore) -> list[str]:
        """Destroy the subject's key in the store and here, then record
        :class:`SubjectForgotten` (once per key destroyed); return the streams whose snapshots
        were deleted (they held its data in clear)."""
        check_subject(subject)
        keys = self._store(f"forget subject {subject!r}")
        found = await keys.forget_subject(subject)
        if found is None:
            raise UnknownSubjectError(subject)
        live, streams = found
        self.codec.keyring.forget(subject)
        if live:
            type_name, data = self.codec.encode_event(SubjectForgotten(subject))
            event = NewEvent(new_event_id(), type_name, data, {})
            await store.append(f"$forgotten-{subject}", None, [event])
        logger.info("subject forgotten", extra={"subject": subject, "streams": len(streams)})
        return streams
