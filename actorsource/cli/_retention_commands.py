"""The retention commands of the ``actorsource`` command line: archive, delete."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import orjson

from .._archiving import JsonLinesArchiver
from .._runtime import Runtime
from ..stores._base import EventStore


def add_retention_commands(
    commands: Any,
    db: Callable[[argparse.ArgumentParser], None],
    json: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add ``archive`` and ``delete`` to the command line's subparsers."""
    archive = commands.add_parser(
        "archive",
        help="move events behind each stream's snapshot and every checkpoint to gzip'd "
        "JSON-lines files, then remove them from the store",
    )
    db(archive)
    which = archive.add_mutually_exclusive_group()
    which.add_argument("--stream", default=None, help="only this stream (default: every stream)")
    which.add_argument("--category", default=None, help="only streams of this category")
    archive.add_argument("--to", required=True, type=Path, help="the directory for the files")
    archive.add_argument(
        "--through-version", type=int, default=None, help="with --stream: no further than this"
    )
    json(archive)

    delete = commands.add_parser(
        "delete", help="delete a stream: a tombstone ends it; --hard also removes its events"
    )
    db(delete)
    delete.add_argument("stream", help="the stream id, e.g. Account-acc-1")
    delete.add_argument(
        "--hard", action="store_true", help="remove its events and snapshots (the tombstone stays)"
    )
    json(delete)


async def archive_command(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    """``actorsource archive``: print one line per stream archived."""
    async with Runtime(store) as runtime:
        done = await runtime.archive(
            args.stream,
            category=args.category,
            archiver=JsonLinesArchiver(args.to),
            through_version=args.through_version,
        )
    for item in done:
        if args.json:
            line = orjson.dumps(
                {
                    "stream_id": item.stream_id,
                    "first_version": item.first_version,
                    "last_version": item.last_version,
                    "location": item.location,
                }
            ).decode()
        else:
            versions = f"{item.first_version}-{item.last_version}"
            line = f"{item.stream_id}  versions {versions}  -> {item.location}"
        out.write(line + "\n")
    if not done and not args.json:
        out.write("nothing to archive\n")


async def delete_command(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    """``actorsource delete``: print where the tombstone went."""
    async with Runtime(store) as runtime:
        result = await runtime.delete_stream(args.stream, hard=args.hard)
    if args.json:
        fields = {
            "stream_id": args.stream,
            "hard": args.hard,
            "version": result.version,
            "position": result.first_position,
        }
        out.write(orjson.dumps(fields).decode() + "\n")
    else:
        how = "hard-deleted" if args.hard else "deleted"
        out.write(
            f"{args.stream} {how}: tombstone at version {result.version}, "
            f"position {result.first_position}\n"
        )
