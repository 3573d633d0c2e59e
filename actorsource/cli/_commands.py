"""The commands on a store: info, streams, events, tail, state, projections, timers; archive,
delete.

Each command opens the store named on the command line (a SQLite path or a PostgreSQL DSN)
read-only, so that looking never creates, upgrades or changes anything (only ``projections
rebuild`` and ``forget``, ``archive``, ``delete`` and ``forget`` write, and they too refuse a
store that is not there). It prints a table for a terminal
(bold headers when stdout is a TTY and ``NO_COLOR`` is unset, fitted to its width) or JSON with
``--json`` (one object per line for lists), and turns every expected failure into one line on
stderr and exit status 1 (:class:`CommandError`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

import anyio

from .._errors import ActorsourceError
from ._forget_command import forget_command
from ._info import info
from ._inspect import events, projections, state, streams, tail
from ._open import FAILED, CommandError, open_store
from ._retention_commands import archive_command, delete_command
from ._timer_command import timers

_Command = Callable[[Any, argparse.Namespace, TextIO], Coroutine[Any, Any, None]]

_HANDLERS: dict[str, _Command] = {
    "info": info,
    "streams": streams,
    "events": events,
    "tail": tail,
    "state": state,
    "projections": projections,
    "timers": timers,
    "archive": archive_command,
    "delete": delete_command,
    "forget": forget_command,
}

#: the store commands, in the order ``--help`` lists them
COMMANDS = tuple(_HANDLERS)


def run_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one inspection command, printing to ``out`` (stdout); return the exit status."""
    stream = sys.stdout if out is None else out
    command = _HANDLERS[args.command]
    # the commands that write (the others open the store read-only)
    rebuild = args.command in ("archive", "delete", "forget") or (
        args.command == "projections" and args.action in ("rebuild", "forget")
    )

    async def main() -> None:
        if rebuild:
            # these write; looking first refuses a store that is not there (opening it for
            # writing would create one)
            async with open_store(args.db, args.schema):
                pass
        async with open_store(args.db, args.schema, read_only=not rebuild) as store:
            await command(store, args, stream)

    try:
        anyio.run(main, backend="asyncio")
    except (CommandError, ActorsourceError, ValueError, LookupError) as exc:
        sys.stderr.write(f"actorsource {args.command}: error: {exc}\n")
        return FAILED
    return 0
