"""``info DB``: what a store holds, at a glance."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, TextIO

from ..stores.postgres import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
from ..stores.postgres import PostgresEventStore, redact_dsn
from ..stores.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from ..stores.sqlite import SQLiteEventStore
from ._inspect import checkpoints
from ._table import KEY, cell, dumps, pad, paint, styled, table


async def info(
    store: SQLiteEventStore | PostgresEventStore, args: argparse.Namespace, out: TextIO
) -> None:
    """The store's kind and place, schema version, streams, events, head, size (SQLite) and
    projections with their checkpoints."""
    head = await store.head_position()
    streams = await store.list_streams()
    rows = await checkpoints(store)
    facts: dict[str, Any] = {}
    if isinstance(store, SQLiteEventStore):
        current = SQLITE_SCHEMA_VERSION
        facts |= {"store": "sqlite", "path": str(store.path)}
    else:
        current = POSTGRES_SCHEMA_VERSION
        facts |= {"store": "postgresql", "dsn": redact_dsn(args.db), "schema": store.schema}
    facts |= {
        "schema_version": store.schema_version,
        "current_schema_version": current,
        "streams": len(streams),
        # positions are 1, 2, ... with no gaps: the head is the number of events
        "events": head,
        "head_position": head,
        "last_recorded_at": (
            max(s.last_recorded_at for s in streams).isoformat() if streams else None
        ),
    }
    if isinstance(store, SQLiteEventStore):
        facts |= {"size_bytes": _size(store.path), "wal_bytes": _size(_wal(store.path))}
    facts["projections"] = [
        {"name": name, "position": position, "lag_events": lag}
        for name, position, _, lag, _ in rows
    ]
    if args.json:
        out.write(dumps(facts) + "\n")
        return
    last = max((s.last_recorded_at for s in streams), default=None)
    rows_shown = [(name, position, lag, seconds) for name, position, _, lag, seconds in rows]
    _print(out, facts, "-" if last is None else cell(last), rows_shown)


def _print(
    out: TextIO, facts: dict[str, Any], last: str, rows: list[tuple[str, int, int, float]]
) -> None:
    version = str(facts["schema_version"])
    if facts["schema_version"] < facts["current_schema_version"]:
        version += (
            f" (older than this actorsource's {facts['current_schema_version']}: read as it "
            "is; a runtime opening it for writing upgrades it)"
        )
    if facts["store"] == "sqlite":
        where = f"SQLite {facts['path']}"
    else:
        where = f"PostgreSQL {facts['dsn']}, schema {facts['schema']}"
    lines = [
        ("store", where),
        ("schema version", version),
        ("streams", f"{facts['streams']:,}"),
        ("events", f"{facts['events']:,}"),
        ("head position", str(facts["head_position"])),
        ("last write (UTC)", last),
    ]
    if facts["store"] == "sqlite":
        size = f"{facts['size_bytes']:,} bytes"
        if facts["wal_bytes"]:
            size += f" (and {facts['wal_bytes']:,} in its write-ahead log)"
        lines.append(("file size", size))
    lines.append(("projections", str(len(rows))))
    on = styled(out)
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        out.write(f"{paint(pad(key, width), KEY, on)}  {value}\n")
    if rows:
        out.write("\n")
        table(out, ["projection", "checkpoint", "lag (events)", "lag (s)"], rows)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
