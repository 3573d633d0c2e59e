"""The inspection commands of the ``actorsource`` command line: streams, events, tail, state,
projections.

Each command opens the store named on the command line (a SQLite path or a PostgreSQL DSN),
prints a table for a terminal (bold headers when stdout is a TTY and ``NO_COLOR`` is unset) or
JSON with ``--json`` (one object per line for event lists), and turns every expected failure
into one line on stderr and a non-zero exit status (:class:`CommandError`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import types
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import anyio
import orjson

from ._aggregate import Aggregate, decider_of
from ._codec import Codec
from ._decider import Decider
from ._errors import ActorsourceError
from ._projection import Projection, compile_projection
from ._rebuilds import rebuild_refusal, reset_read_model
from ._records import StoredEvent
from ._retention_commands import add_retention_commands, archive_command, delete_command
from ._runtime import Runtime
from .stores._base import EventStore, poll_for_events
from .stores.postgres import redact_dsn
from .stores.sqlite import SQLiteEventStore

#: exit status of a command that failed in an expected way (bad argument, missing database)
FAILED = 1


class CommandError(Exception):
    """Raised by a command for a failure to report as one line (no traceback)."""


def add_commands(commands: Any) -> None:
    """Add the inspection commands to the command line's subparsers."""
    streams = commands.add_parser("streams", help="list streams with version and last write")
    _db(streams)
    streams.add_argument("--category", help="only streams of this category")
    _json(streams)

    events = commands.add_parser("events", help="print a stream's events")
    _db(events)
    events.add_argument("stream", help="the stream id, e.g. Account-acc-1")
    events.add_argument("--from-version", type=int, default=1)
    events.add_argument("--to-version", type=int, default=None)
    _json(events)

    tail = commands.add_parser("tail", help="follow the global log live")
    _db(tail)
    tail.add_argument("--type", action="append", dest="types", help="only this event type")
    tail.add_argument("--category", action="append", dest="categories", help="only this category")
    tail.add_argument(
        "--from-position", type=int, default=None, help="start here (default: new events only)"
    )
    tail.add_argument("--count", type=int, default=None, help="stop after this many events")
    tail.add_argument("--poll", type=float, default=0.5, help="seconds between polls")
    _json(tail)

    state = commands.add_parser("state", help="rebuild and print an aggregate's state")
    _db(state)
    state.add_argument("category", help="the aggregate's stream category, e.g. Account")
    state.add_argument("aggregate_id")
    state.add_argument(
        "--app",
        required=True,
        help="where your aggregates are: module, module:Class, or module:collection",
    )
    when = state.add_mutually_exclusive_group()
    when.add_argument("--version", type=int, default=None, help="the state after this version")
    when.add_argument(
        "--at", default=None, help="the state at this ISO 8601 time (UTC unless it has an offset)"
    )
    _json(state)

    projections = commands.add_parser(
        "projections", help="list projections' positions and lag, or rebuild one"
    )
    _db(projections)
    projections.add_argument("action", nargs="?", choices=["rebuild"], default=None)
    projections.add_argument("name", nargs="?", default=None, help="the projection to rebuild")
    projections.add_argument("--from-position", type=int, default=1)
    projections.add_argument(
        "--app",
        default=None,
        help="rebuild: where the projection class is (module, module:Class, or "
        "module:collection); its reset(self, ctx) clears the read model",
    )
    _json(projections)
    add_retention_commands(commands, _db, _json)


def _db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("db", help="a SQLite file or a postgresql:// DSN")
    parser.add_argument(
        "--schema",
        default="actorsource",
        help="with a PostgreSQL DSN: the schema holding the store (default: actorsource)",
    )


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


COMMANDS = ("streams", "events", "tail", "state", "projections", "archive", "delete")

_Command = Callable[[EventStore, argparse.Namespace, TextIO], Coroutine[Any, Any, None]]


def run_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one inspection command, printing to ``out`` (stdout); return the exit status."""
    stream = sys.stdout if out is None else out
    handlers: dict[str, _Command] = {
        "streams": _streams,
        "events": _events,
        "tail": _tail,
        "state": _state,
        "projections": _projections,
        "archive": archive_command,
        "delete": delete_command,
    }
    command = handlers[args.command]

    async def main() -> None:
        async with _open_store(args.db, args.schema) as store:
            await command(store, args, stream)

    try:
        anyio.run(main, backend="asyncio")
    except (CommandError, ActorsourceError, ValueError, LookupError) as exc:
        sys.stderr.write(f"actorsource {args.command}: error: {exc}\n")
        return FAILED
    except KeyboardInterrupt:
        return 130
    return 0


def _open_store(db: str, schema: str) -> EventStore:
    if db.startswith(("postgres://", "postgresql://")):
        try:
            module = importlib.import_module("actorsource.stores.postgres")
        except ImportError as exc:
            msg = (
                f"PostgreSQL needs the postgres extra (pip install 'actorsource[postgres]'): {exc}"
            )
            raise CommandError(msg) from exc
        store: EventStore = module.PostgresEventStore(db, schema=schema)
        return store
    if not Path(db).is_file():
        # opening would create a new, empty database: surely not what was meant (and a
        # mistyped DSN lands here too, so its password is hidden)
        msg = f"no database at {redact_dsn(db)!r}"
        raise CommandError(msg)
    return SQLiteEventStore(db)


# -- output --------------------------------------------------------------------------------


def _styled(out: TextIO) -> bool:
    return out.isatty() and not os.environ.get("NO_COLOR")


#: ANSI styles (used only on a terminal, and never with NO_COLOR set)
_HEADER, _KEY, _TYPE, _DIM = "1;36", "1", "32", "2"


def _paint(text: str, style: str, styled: bool) -> str:
    return f"\033[{style}m{text}\033[0m" if styled and text else text


def _table(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print aligned columns: the header in bold cyan and the first column in bold on a TTY."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    styled = _styled(out)
    for index, row in enumerate(cells):
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        padded[-1] = padded[-1].rstrip()
        if index == 0:
            line = _paint("  ".join(padded).rstrip(), _HEADER, styled)
        else:
            line = "  ".join([_paint(padded[0], _KEY, styled), *padded[1:]]).rstrip()
        out.write(line + "\n")


def _cell(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _dumps(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


def _event_json(event: StoredEvent) -> dict[str, Any]:
    return {
        "position": event.position,
        "stream_id": event.stream_id,
        "version": event.version,
        "type": event.type,
        "data": event.data,
        "metadata": event.metadata,
        "event_id": event.event_id,
        "recorded_at": event.recorded_at.isoformat(),
    }


# -- the commands ------------------------------------------------------------------------------


async def _streams(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    streams = await store.list_streams(args.category)
    if args.json:
        for info in streams:
            out.write(
                _dumps(
                    {
                        "stream_id": info.stream_id,
                        "version": info.version,
                        "last_recorded_at": info.last_recorded_at.isoformat(),
                    }
                )
                + "\n"
            )
        return
    _table(
        out,
        ["stream", "version", "last write (UTC)"],
        [(i.stream_id, i.version, i.last_recorded_at) for i in streams],
    )


async def _events(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    if await store.stream_version(args.stream) == 0:
        msg = f"stream {args.stream!r} has no events"
        raise CommandError(msg)
    found = [e async for e in store.read_stream(args.stream, args.from_version, args.to_version)]
    if args.json:
        for event in found:
            out.write(_dumps(_event_json(event)) + "\n")
        return
    _table(
        out,
        ["version", "position", "type", "recorded at (UTC)", "data", "metadata"],
        [(e.version, e.position, e.type, e.recorded_at, e.data, e.metadata) for e in found],
    )


async def _tail(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    position = (
        args.from_position - 1 if args.from_position is not None else await store.head_position()
    )
    printed = 0
    while args.count is None or printed < args.count:
        head = await store.head_position()
        async for event in store.read_all(
            position + 1, to_position=head, types=args.types, categories=args.categories
        ):
            if args.json:
                out.write(_dumps(_event_json(event)) + "\n")
            else:
                styled = _styled(out)
                out.write(
                    f"{_paint(str(event.position), _DIM, styled)}  "
                    f"{_paint(f'{event.stream_id}@{event.version}', _KEY, styled)}  "
                    f"{_paint(event.type, _TYPE, styled)}  {_cell(event.data)}\n"
                )
            out.flush()
            printed += 1
            if args.count is not None and printed >= args.count:
                return
        position = max(position, head)
        await poll_for_events(store, position, args.poll)


async def _state(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    aggregate = _find_aggregate(args.app, args.category)
    at = _parse_time(args.at) if args.at is not None else None
    version = args.version
    stream_id = f"{args.category}-{args.aggregate_id}"
    head = await store.stream_version(stream_id)
    if head == 0:
        msg = f"stream {stream_id!r} has no events"
        raise CommandError(msg)
    if version is None and at is None:
        version = head
    async with Runtime(store) as runtime:
        state = await runtime.state_at(aggregate, args.aggregate_id, version=version, at=at)
    encoded = Codec().encode_state(state)["state"]
    if args.json:
        out.write(_dumps(encoded) + "\n")
    else:
        out.write(orjson.dumps(encoded, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


async def _projections(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    checkpoints = {
        name: position
        for name, position in (await store.list_checkpoints()).items()
        if not name.endswith(":rebuild")  # a rebuild in progress, under a temporary name
    }
    if args.action == "rebuild":
        await _rebuild(store, args, out)
        return
    head = await store.head_position()
    now = datetime.now(UTC)
    rows = []
    for name, position in checkpoints.items():
        lag_seconds = 0.0
        if position < head:
            async for first in store.read_all(position + 1, to_position=position + 1):
                lag_seconds = max((now - first.recorded_at).total_seconds(), 0.0)
        rows.append((name, position, head, head - position, round(lag_seconds, 3)))
    if args.json:
        for name, position, head_position, lag, seconds in rows:
            out.write(
                _dumps(
                    {
                        "name": name,
                        "position": position,
                        "head_position": head_position,
                        "lag_events": lag,
                        "lag_seconds": seconds,
                    }
                )
                + "\n"
            )
        return
    _table(out, ["projection", "position", "head", "lag (events)", "lag (s)"], rows)


async def _rebuild(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    """Reset a durable read model and its checkpoint; the runtime rebuilds it when next started."""
    if args.name is None:
        msg = "projections rebuild needs the projection's name"
        raise CommandError(msg)
    if args.from_position < 1:
        msg = f"--from-position must be >= 1, got {args.from_position}"
        raise CommandError(msg)
    if args.app is None:
        msg = (
            f"rebuilding {args.name!r} needs the application to clear its read model: pass "
            "--app module:Class naming the projection (whose reset(self, ctx) clears it); "
            "resetting the checkpoint alone would deliver every event again into a read model "
            "that holds them"
        )
        raise CommandError(msg)
    cls = _find_projection(args.app, args.name)
    compiled = compile_projection(cls)
    if not compiled.durable:
        out.write(
            f"{args.name}: its read model lives in memory and is built again from the start "
            "whenever its runtime starts; nothing to rebuild here\n"
        )
        return
    if compiled.reset is None:
        raise CommandError(rebuild_refusal(compiled))
    try:
        projection = cls()
    except TypeError as exc:
        msg = f"cannot make a {cls.__qualname__} with no arguments to call its reset: {exc}"
        raise CommandError(msg) from exc
    await reset_read_model(store, projection, name=args.name, from_position=args.from_position)
    out.write(
        f"{args.name}: read model reset and checkpoint set to {args.from_position - 1}; it is "
        f"rebuilt from position {args.from_position} when its runtime next starts (stop it "
        "first; runtime.rebuild_projection rebuilds without stopping)\n"
    )


# -- helpers ------------------------------------------------------------------------------------


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"--at must be an ISO 8601 time (2026-03-01T12:00:00+00:00), got {text!r}"
        raise CommandError(msg) from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _find_aggregate(app: str, category: str) -> Any:
    """Return the aggregate class or Decider of ``category`` found at ``app``."""
    candidates = _aggregates_in(_load_app(app))
    by_category = {_category(c): c for c in candidates}
    if category not in by_category:
        known = ", ".join(sorted(by_category)) or "none"
        msg = f"no aggregate of category {category!r} at --app {app!r} (found: {known})"
        raise CommandError(msg)
    return by_category[category]


def _find_projection(app: str, name: str) -> type[Projection]:
    """Return the projection class named ``name`` found at ``app``."""
    classes = [
        v
        for v in _members(_load_app(app))
        if isinstance(v, type) and issubclass(v, Projection) and v is not Projection
    ]
    by_name = {compile_projection(c).name: c for c in classes}
    if name not in by_name:
        known = ", ".join(sorted(by_name)) or "none"
        msg = f"no projection named {name!r} at --app {app!r} (found: {known})"
        raise CommandError(msg)
    return by_name[name]


def _load_app(app: str) -> Any:
    """Import ``module`` or ``module:attribute.path`` from the working directory."""
    module_name, _, attribute = app.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # as python -m would: the user's own modules
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"cannot import {module_name!r} (from --app {app!r}): {exc}"
        raise CommandError(msg) from exc
    for part in attribute.split(".") if attribute else []:
        try:
            found = getattr(found, part)
        except AttributeError as exc:
            msg = f"{module_name!r} has no {attribute!r} (from --app {app!r})"
            raise CommandError(msg) from exc
    return found


def _aggregates_in(found: Any) -> list[Any]:
    return [v for v in _members(found) if _is_aggregate(v)]


def _members(found: Any) -> list[Any]:
    """What ``--app`` names: a module's or a collection's values, or the one object itself."""
    if isinstance(found, types.ModuleType):
        return list(vars(found).values())
    if isinstance(found, dict):
        return list(found.values())
    if isinstance(found, list | tuple | set | frozenset):
        return list(found)
    return [found]


def _is_aggregate(value: object) -> bool:
    if isinstance(value, Decider):
        return True
    return isinstance(value, type) and issubclass(value, Aggregate) and value is not Aggregate


def _category(aggregate: Any) -> str:
    decider = aggregate if isinstance(aggregate, Decider) else decider_of(aggregate)
    return decider.name
