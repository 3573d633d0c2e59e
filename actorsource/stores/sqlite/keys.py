"""Subject keys in SQLite (a part of :class:`SQLiteEventStore`): each operation in one
transaction of a connection of its own, as the retention operations are."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping

from .._base import check_subject, utc_now
from .retention import SQLiteRetention


class SQLiteSubjectKeys(SQLiteRetention):
    """The subject keys of :class:`SQLiteEventStore`."""

    async def load_subject_keys(self) -> dict[str, bytes | None]:
        """Return every subject's key (``None``: forgotten)."""
        self._check_open()
        return await self._maintain(_load, transaction=False)  # a read: no write lock

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
        rows = [(subject, key, utc_now().isoformat()) for subject, key in keys.items()]
        pairs = list(links)
        return await self._maintain(lambda conn: _save(conn, rows, pairs))

    async def forget_subject(self, subject: str) -> tuple[bool, list[str]] | None:
        """Destroy the key, delete the linked streams' snapshots; return those streams.

        Deleted content is overwritten (``secure_delete``) and the WAL truncated after, so that
        neither the key nor the snapshots' clear data stay in the file or its WAL (unless a
        reader holds the WAL open meanwhile: it is truncated on a later checkpoint).
        """
        self._check_open()
        check_subject(subject)
        found = await self._maintain(lambda conn: _forget(conn, subject))
        if found is not None:
            await self._maintain(_truncate_wal, transaction=False)
        return found


def _load(conn: sqlite3.Connection) -> dict[str, bytes | None]:
    return dict(conn.execute("SELECT subject, key FROM subject_keys").fetchall())


def _save(
    conn: sqlite3.Connection, rows: list[tuple[str, bytes, str]], links: list[tuple[str, str]]
) -> dict[str, bytes]:
    conn.executemany(
        "INSERT INTO subject_keys (subject, key, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (subject) DO UPDATE SET key = excluded.key, "
        "created_at = excluded.created_at, forgotten_at = NULL WHERE key IS NULL",
        rows,
    )
    conn.executemany(
        "INSERT OR IGNORE INTO subject_streams (subject, stream_id) VALUES (?, ?)", links
    )
    found: dict[str, bytes] = {}
    for subject, _, _ in rows:
        found[subject] = conn.execute(
            "SELECT key FROM subject_keys WHERE subject = ?", (subject,)
        ).fetchone()[0]
    return found


def _forget(conn: sqlite3.Connection, subject: str) -> tuple[bool, list[str]] | None:
    row = conn.execute("SELECT key FROM subject_keys WHERE subject = ?", (subject,)).fetchone()
    if row is None:
        return None
    conn.execute(
        "UPDATE subject_keys SET key = NULL, forgotten_at = coalesce(forgotten_at, ?) "
        "WHERE subject = ?",
        (utc_now().isoformat(), subject),
    )
    streams = [
        row[0]
        for row in conn.execute(
            "SELECT stream_id FROM subject_streams WHERE subject = ? ORDER BY stream_id",
            (subject,),
        )
    ]
    conn.executemany("DELETE FROM snapshots WHERE stream_id = ?", [(s,) for s in streams])
    return row[0] is not None, streams


def _truncate_wal(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
