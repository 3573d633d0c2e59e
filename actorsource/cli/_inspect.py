"""The commands that read a store: streams, events, tail, state, projections (and a
projection's rebuild, the one that writes)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TextIO

import orjson

from .._codec import Codec
from .._projection import compile_projection
from .._rebuilds import rebuild_refusal, reset_read_model
from .._runtime import Runtime
from ..stores._base import EventStore, poll_for_events
from ._app import find_aggregate, find_projection, parse_time
from ._open import CommandError
from ._table import (
    DIM,
    KEY,
    TYPE,
    cell,
    cut,
    display_width,
    dumps,
    event_json,
    paint,
    styled,
    table,
    width_for,
)


async def streams(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    """``streams DB``: each stream, its version and last write."""
    found = await store.list_streams(args.category)
    if args.json:
        for info in found:
            out.write(
                dumps(
                    {
                        "stream_id": info.stream_id,
                        "version": info.version,
                        "last_recorded_at": info.last_recorded_at.isoformat(),
                    }
                )
                + "\n"
            )
        return
    table(
        out,
        ["stream", "version", "last write (UTC)"],
        [(i.stream_id, i.version, i.last_recorded_at) for i in found],
    )


async def events(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    """``events DB [STREAM]``: the whole log from a position, or one stream's events."""
    if args.stream is None:
        await _log(store, args, out)
        return
    if args.start is not None:
        msg = (
            f"--from is a position in the whole log (events DB --from {args.start}); "
            "for a stream's events from a version, use --from-version"
        )
        raise CommandError(msg)
    if await store.stream_version(args.stream) == 0:
        msg = f"stream {args.stream!r} has no events"
        raise CommandError(msg)
    to_version = args.to_version
    if args.limit is not None:  # versions are gap-free: the limit is a range
        last = args.from_version + args.limit - 1
        to_version = last if to_version is None else min(to_version, last)
    read = store.read_stream(args.stream, args.from_version, to_version)
    if args.json:  # as it is read: a long history is never held whole
        async for event in read:
            out.write(dumps(event_json(event)) + "\n")
        return
    found = [e async for e in read]
    table(
        out,
        ["version", "position", "type", "recorded at (UTC)", "data", "metadata"],
        [(e.version, e.position, e.type, e.recorded_at, e.data, e.metadata) for e in found],
        flexible=(4, 5),
    )


async def _log(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    if args.from_version != 1 or args.to_version is not None:
        msg = (
            "--from-version and --to-version are versions of one stream: name it "
            "(events DB STREAM); for the whole log from a position, use --from"
        )
        raise CommandError(msg)
    start = 1 if args.start is None else args.start
    # positions are gap-free: the limit is a range
    end = None if args.limit is None else start + args.limit - 1
    read = store.read_all(start, to_position=end)
    if args.json:  # as it is read: a long log is never held whole
        async for event in read:
            out.write(dumps(event_json(event)) + "\n")
        return
    found = [e async for e in read]
    table(
        out,
        ["position", "stream", "version", "type", "recorded at (UTC)", "data", "metadata"],
        [
            (e.position, e.stream_id, e.version, e.type, e.recorded_at, e.data, e.metadata)
            for e in found
        ],
        flexible=(5, 6),
    )


async def tail(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    """``tail DB``: follow the global log live."""
    position = (
        args.from_position - 1 if args.from_position is not None else await store.head_position()
    )
    on = styled(out)
    width = width_for(out)
    printed = 0
    while args.count is None or printed < args.count:
        head = await store.head_position()
        async for event in store.read_all(
            position + 1, to_position=head, types=args.types, categories=args.categories
        ):
            if args.json:
                out.write(dumps(event_json(event)) + "\n")
            else:
                where = f"{cell(event.stream_id)}@{event.version}"
                data = cell(event.data)
                if width is not None:  # the data is cut to what is left of the line
                    used = display_width(f"{event.position}  {where}  {cell(event.type)}  ")
                    data = cut(data, max(width - used, 6))
                out.write(
                    f"{paint(str(event.position), DIM, on)}  {paint(where, KEY, on)}  "
                    f"{paint(cell(event.type), TYPE, on)}  {data}\n"
                )
            out.flush()
            printed += 1
            if args.count is not None and printed >= args.count:
                return
        position = max(position, head)
        await poll_for_events(store, position, args.poll)


async def state(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    """``state DB CATEGORY ID --app ...``: an aggregate's state, rebuilt with the user's class."""
    aggregate = find_aggregate(args.app, args.category)
    at = parse_time(args.at) if args.at is not None else None
    version = args.version
    stream_id = f"{args.category}-{args.aggregate_id}"
    head = await store.stream_version(stream_id)
    if head == 0:
        msg = f"stream {stream_id!r} has no events"
        raise CommandError(msg)
    if version is None and at is None:
        version = head
    async with Runtime(store) as runtime:
        found = await runtime.state_at(aggregate, args.aggregate_id, version=version, at=at)
    encoded = Codec().encode_state(found)["state"]
    if args.json:
        out.write(dumps(encoded) + "\n")
    else:
        out.write(orjson.dumps(encoded, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


async def checkpoints(store: EventStore) -> list[tuple[str, int, int, int, float]]:
    """Each projection's (name, position, head, lag in events, lag in seconds)."""
    found = {
        name: position
        for name, position in (await store.list_checkpoints()).items()
        if not name.endswith(":rebuild")  # a rebuild in progress, under a temporary name
    }
    head = await store.head_position()
    now = datetime.now(UTC)
    rows = []
    for name, position in found.items():
        lag_seconds = 0.0
        if position < head:
            async for first in store.read_all(position + 1, to_position=position + 1):
                lag_seconds = max((now - first.recorded_at).total_seconds(), 0.0)
        rows.append((name, position, head, head - position, round(lag_seconds, 3)))
    return rows


async def projections(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    """``projections DB``: each projection's position and lag (``rebuild NAME``: reset one)."""
    if args.action == "rebuild":
        await _rebuild(store, args, out)
        return
    if args.action == "forget":
        await _forget_checkpoint(store, args.name, out)
        return
    rows = await checkpoints(store)
    if args.json:
        for name, position, head_position, lag, seconds in rows:
            out.write(
                dumps(
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
    table(out, ["projection", "position", "head", "lag (events)", "lag (s)"], rows)


async def _forget_checkpoint(store: EventStore, name: str | None, out: TextIO) -> None:
    """Remove the checkpoint of a projection no longer deployed (it holds archiving back)."""
    if name is None:
        msg = "projections forget needs the projection's name"
        raise CommandError(msg)
    delete = store.capabilities().delete_checkpoint
    if delete is None:
        msg = f"{store!r} cannot remove checkpoints"
        raise CommandError(msg)
    if not await delete(name):
        known = ", ".join(map(repr, await store.list_checkpoints())) or "none"
        msg = f"no checkpoint named {name!r} (checkpoints: {known}); nothing was changed"
        raise CommandError(msg)
    out.write(
        f"{name}: checkpoint removed; archiving no longer waits for it (a projection of that "
        "name started again begins from the start of the log)\n"
    )


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
    cls = find_projection(args.app, args.name)
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
