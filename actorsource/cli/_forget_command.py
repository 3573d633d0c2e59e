"""The ``forget`` command of the ``actorsource`` command line (crypto-shredding)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TextIO

import orjson

from .._runtime import Runtime
from ..stores._base import EventStore


def add_forget_command(
    commands: Any,
    db: Callable[[argparse.ArgumentParser], None],
    json: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add ``forget`` to the command line's subparsers."""
    forget = commands.add_parser(
        "forget",
        help="forget a subject: destroy its key (its personal fields read as <forgotten>) "
        "and delete the snapshots that held them",
    )
    db(forget)
    forget.add_argument("subject", help="the subject's id, as in the events' subject field")
    json(forget)


async def forget_command(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    """``actorsource forget``: say which subject was forgotten."""
    async with Runtime(store) as runtime:
        await runtime.forget(args.subject)
    if args.json:
        out.write(orjson.dumps({"subject": args.subject, "forgotten": True}).decode() + "\n")
    else:
        out.write(f"subject {args.subject!r} forgotten\n")
