"""Subject keys in PostgreSQL (a part of :class:`PostgresEventStore`), each operation in one
transaction of a pooled connection."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from .._base import check_subject
from .connection import _Connection
from .retention import PostgresRetention


class PostgresSubjectKeys(PostgresRetention):
    """The subject keys of :class:`PostgresEventStore`."""

    def _keys_tables(self) -> tuple[str, str, str]:
        schema = self._sql.events.rsplit(".", 1)[0]
        return f"{schema}.subject_keys", f"{schema}.subject_streams", f"{schema}.snapshots"

    async def load_subject_keys(self) -> dict[str, bytes | None]:
        """Return every subject's key (``None``: forgotten)."""
        self._check_open()
        keys, _, _ = self._keys_tables()

        async def work(conn: _Connection) -> dict[str, bytes | None]:
            rows = await conn.fetch(f"SELECT subject, key FROM {keys}")
            return {row[0]: None if row[1] is None else bytes(row[1]) for row in rows}

        return await self._in_transaction(work, "reading the subject keys of")

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
        table, streams, _ = self._keys_tables()
        subjects, values = list(keys), list(keys.values())
        pairs = list(links)

        async def work(conn: _Connection) -> dict[str, bytes]:
            await conn.execute(
                f"INSERT INTO {table} (subject, key) SELECT * FROM unnest($1::text[], "
                "$2::bytea[]) ON CONFLICT (subject) DO UPDATE SET key = excluded.key, "
                f"created_at = now(), forgotten_at = NULL WHERE {table}.key IS NULL",
                subjects,
                values,
            )
            await conn.execute(
                f"INSERT INTO {streams} (subject, stream_id) SELECT * FROM unnest($1::text[], "
                "$2::text[]) ON CONFLICT DO NOTHING",
                [pair[0] for pair in pairs],
                [pair[1] for pair in pairs],
            )
            rows = await conn.fetch(
                f"SELECT subject, key FROM {table} WHERE subject = ANY($1::text[])", subjects
            )
            return {row[0]: bytes(row[1]) for row in rows}

        return await self._in_transaction(work, "storing subject keys in")

    async def forget_subject(self, subject: str) -> tuple[bool, list[str]] | None:
        """Destroy the key, delete the linked streams' snapshots; return those streams."""
        self._check_open()
        check_subject(subject)
        table, streams, snapshots = self._keys_tables()

        async def work(conn: _Connection) -> tuple[bool, list[str]] | None:
            found = await conn.fetchrow(
                f"SELECT key IS NOT NULL FROM {table} WHERE subject = $1 FOR UPDATE", subject
            )
            if found is None:
                return None
            await conn.execute(
                f"UPDATE {table} SET key = NULL, forgotten_at = coalesce(forgotten_at, now()) "
                "WHERE subject = $1",
                subject,
            )
            rows = await conn.fetch(
                f"SELECT stream_id FROM {streams} WHERE subject = $1 ORDER BY stream_id", subject
            )
            linked = [row[0] for row in rows]
            await conn.execute(f"DELETE FROM {snapshots} WHERE stream_id = ANY($1::text[])", linked)
            return bool(found[0]), linked

        return await self._in_transaction(work, f"forgetting subject {subject!r} in")
