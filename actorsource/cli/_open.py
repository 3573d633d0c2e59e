"""Opening the store a command names (a SQLite file or a PostgreSQL DSN), and how a command
fails."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from ..stores.postgres import PostgresEventStore, redact_dsn
from ..stores.sqlite import SQLiteEventStore

#: exit status of a command that failed in an expected way (bad value, missing database)
FAILED: Final = 1

#: exit status when interrupted (Ctrl-C): 128 + SIGINT, as a shell reports it
INTERRUPTED: Final = 130


class CommandError(Exception):
    """Raised by a command for a failure to report as one line (no traceback)."""


def is_dsn(db: str) -> bool:
    """Whether the command line's ``DB`` names a PostgreSQL database."""
    return db.startswith(("postgres://", "postgresql://"))


def open_store(
    db: str, schema: str, *, read_only: bool = True
) -> SQLiteEventStore | PostgresEventStore:
    """Return the (unopened) store ``db`` names.

    Opening it never creates a store: a missing SQLite file is refused here, a PostgreSQL
    schema without a store when it opens. ``read_only`` (every command but a rebuild) also
    keeps it from upgrading or writing anything.
    """
    if is_dsn(db):
        try:
            # the store imports its driver when it is made
            return PostgresEventStore(db, schema=schema, read_only=read_only)
        except ImportError as exc:
            msg = (
                "a PostgreSQL DSN needs the asyncpg driver, which is not installed: "
                "pip install 'actorsource[postgres]'"
            )
            raise CommandError(msg) from exc
    if not Path(db).is_file():
        # opening would create a new, empty database: surely not what was meant (and a
        # mistyped DSN lands here too, so its password is hidden)
        msg = f"no database at {redact_dsn(db)!r}"
        raise CommandError(msg)
    return SQLiteEventStore(db, read_only=read_only)
