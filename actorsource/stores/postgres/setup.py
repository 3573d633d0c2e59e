"""Creating, upgrading and recognising a store's schema (a part of :class:`PostgresEventStore`)."""

from __future__ import annotations

import logging

from ..._errors import IncompatibleStoreError, StoreError
from .connection import _Connection, store_schemas
from .schema import SCHEMA_VERSION, _lock_key, _migrations

logger = logging.getLogger("actorsource.stores.postgres")


class PostgresSchemaSetup:
    """The store's schema: made or brought to this version on open, never touched when it is
    not ours or newer."""

    schema: str
    _where: str
    _append_lock: int
    _channel: str
    _errors: tuple[type[BaseException], ...]

    async def _migrate(self, conn: _Connection) -> None:
        """Create the schema, or bring it to this version; refuse what is not ours or newer."""
        version = await self._schema_version(conn)
        if version == SCHEMA_VERSION:
            return
        try:
            async with conn.transaction():
                # openers that race for a new schema take turns; the second finds it made
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1)", _lock_key("migrate", self.schema)
                )
                version = await self._schema_version(conn)
                if version == SCHEMA_VERSION:
                    return
                if version == 0:
                    exists = await conn.fetchval(
                        "SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema
                    )
                    if not exists:  # IF NOT EXISTS would still need the right to create one
                        await conn.execute(f'CREATE SCHEMA "{self.schema}"')
                steps = _migrations(self.schema, self._append_lock, self._channel)
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in steps[step]:
                        await conn.execute(statement)
                await conn.execute(
                    f'INSERT INTO "{self.schema}".actorsource_schema (version) VALUES ($1) '
                    "ON CONFLICT (singleton) DO UPDATE SET version = excluded.version, "
                    "updated_at = now()",
                    SCHEMA_VERSION,
                )
        except StoreError:
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split())
            msg = (
                f"cannot create or upgrade the actorsource schema {self.schema!r} at "
                f"{self._where}: {type(exc).__name__}: {detail}"
            )
            raise StoreError(msg) from exc
        logger.info("schema %r at version %d", self.schema, SCHEMA_VERSION, extra={"from": version})

    async def _existing_version(self, conn: _Connection) -> int:
        """Return the version of the store in the schema; raise, naming the schemas that hold
        one, if there is none (or it is not ours, or newer)."""
        version = await self._schema_version(conn)
        if version > 0:
            return version
        try:
            found = ", ".join(await store_schemas(conn)) or "none"
        except self._errors as exc:
            detail = " ".join(str(exc).split())
            msg = f"cannot list the schemas at {self._where}: {type(exc).__name__}: {detail}"
            raise StoreError(msg) from exc
        msg = (
            f"no actorsource store in schema {self.schema!r} of {self._where}; schemas with a "
            f"store: {found} (opened read-only: nothing is created)"
        )
        raise StoreError(msg)

    async def _schema_version(self, conn: _Connection) -> int:
        """Return the schema's version (0: no store yet); raise if it is not ours or newer."""
        try:
            rows = await conn.fetch(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = $1 AND c.relname = ANY($2::text[])",
                self.schema,
                ["actorsource_schema", "events", "snapshots", "checkpoints"],
            )
            tables = {row[0] for row in rows}
            if "actorsource_schema" not in tables:
                if tables:
                    msg = (
                        f"schema {self.schema!r} at {self._where} is not an actorsource store: it "
                        f"holds tables {', '.join(sorted(tables))} and no actorsource_schema "
                        "table; refusing to touch it (choose another schema=)"
                    )
                    raise IncompatibleStoreError(msg)
                return 0
            version = await conn.fetchval(
                f'SELECT max(version) FROM "{self.schema}".actorsource_schema'
            )
        except StoreError:
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split())
            msg = f"cannot read schema {self.schema!r} at {self._where}: {detail}"
            raise StoreError(msg) from exc
        if version is None:
            msg = (
                f"schema {self.schema!r} at {self._where} has an empty actorsource_schema table, "
                "so its version is unknown; refusing to touch it"
            )
            raise IncompatibleStoreError(msg)
        if version > SCHEMA_VERSION:
            msg = (
                f"schema {self.schema!r} at {self._where} has actorsource schema version "
                f"{version}, newer than this version of actorsource reads ({SCHEMA_VERSION}); "
                "upgrade actorsource"
            )
            raise IncompatibleStoreError(msg)
        return int(version)
