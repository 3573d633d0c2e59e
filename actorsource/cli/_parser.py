"""The command line's arguments: every command, its options, and how they are parsed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from .. import bench
from ..stores.postgres import redact_dsn
from ._forget_command import add_forget_command
from ._retention_commands import add_retention_commands
from ._timer_command import add_timers_command

DESCRIPTION = (
    "Inspect an actorsource store (a SQLite file or a PostgreSQL DSN) without changing it, "
    "or run the benchmark suite."
)

EPILOG = (
    "exit status: 0 done; 1 the command failed (one line on stderr saying why); 2 the command "
    "line was wrong (the usage, and what was wrong); 130 interrupted. A reader that stops "
    "early (| head) ends the command quietly, with status 0."
)


def version() -> str:
    """The installed distribution's version (the package's own when run from a source tree)."""
    try:
        return metadata.version("actorsource")
    except metadata.PackageNotFoundError:
        from .. import __version__  # noqa: PLC0415  # the front door imports this package

        return __version__


class _Parser(argparse.ArgumentParser):
    """An argument parser whose error messages never echo a DSN's password."""

    _given: Sequence[str] = ()

    def _remember(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        given = args[0] if args else kwargs.get("args")
        self._given = list(sys.argv[1:] if given is None else given)

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        self._remember(args, kwargs)
        return super().parse_known_args(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # argparse quotes what it refuses, and a DSN given in the wrong place is refused
        for text in self._given:
            safe = redact_dsn(text)
            if safe != text:
                message = message.replace(repr(text), repr(safe)).replace(text, safe)
        super().error(message)


class _CommandParser(_Parser):
    """A command's parser: its options may come before, between or after its positionals.

    Plain parsing fills optional positionals (``projections DB [rebuild [NAME]]``) with nothing
    as soon as an option follows the first one, and then refuses the rest. (Intermixed parsing
    allows a command no subcommands of its own.)
    """

    _intermixing = False

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        if self._intermixing:  # parse_known_intermixed_args calls back (in some Pythons)
            return super().parse_known_args(*args, **kwargs)
        self._remember(args, kwargs)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(*args, **kwargs)
        finally:
            self._intermixing = False


def parser() -> argparse.ArgumentParser:
    """Return the command line's argument parser."""
    top = _Parser(
        prog="actorsource",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    top.add_argument("--version", action="version", version=f"actorsource {version()}")
    commands = top.add_subparsers(
        dest="command", required=True, parser_class=_CommandParser, metavar="COMMAND"
    )
    _add_inspection(commands)
    _add_bench(commands)
    return top


def _add_inspection(commands: Any) -> None:
    info = commands.add_parser(
        "info",
        help="what a store holds: schema version, streams, events, head, size, projections",
        description="Summarize a store: its schema version, streams, events, head position, "
        "file size (SQLite) and projections with their checkpoints.",
    )
    _db(info)
    _json(info)

    streams = commands.add_parser("streams", help="list streams with version and last write")
    _db(streams)
    streams.add_argument("--category", help="only streams of this category")
    _json(streams)

    events = commands.add_parser(
        "events",
        help="print the global log from a position, or one stream's events",
        description="Without STREAM: the store's whole log, in position order, from --from. "
        "With STREAM: that stream's events, by version.",
    )
    _db(events)
    events.add_argument(
        "stream", nargs="?", default=None, help="a stream id, e.g. Account-acc-1 (default: all)"
    )
    events.add_argument(
        "--from",
        dest="start",
        type=_position,
        default=None,
        metavar="POSITION",
        help="start at this global position: the event's place in the store's whole log, "
        "1 for the first event ever appended (default: 1; not with STREAM)",
    )
    events.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        metavar="N",
        help="print at most N events",
    )
    events.add_argument(
        "--from-version",
        type=int,
        default=1,
        metavar="V",
        help="with STREAM: start at this version of the stream (default: 1)",
    )
    events.add_argument(
        "--to-version", type=int, default=None, metavar="V", help="with STREAM: end here"
    )
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
    projections.add_argument("action", nargs="?", choices=["rebuild", "forget"], default=None)
    projections.add_argument(
        "name",
        nargs="?",
        default=None,
        help="the projection to rebuild, or whose checkpoint to forget",
    )
    projections.add_argument("--from-position", type=int, default=1)
    projections.add_argument(
        "--app",
        default=None,
        help="rebuild: where the projection class is (module, module:Class, or "
        "module:collection); its reset(self, ctx) clears the read model",
    )
    _json(projections)
    add_timers_command(commands, _db, _json)
    add_retention_commands(commands, _db, _json)
    add_forget_command(commands, _db, _json)


def _db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("db", help="a SQLite file or a postgresql:// DSN")
    parser.add_argument(
        "--schema",
        default="actorsource",
        help="with a PostgreSQL DSN: the schema holding the store (default: actorsource)",
    )


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _add_bench(commands: Any) -> None:
    run = commands.add_parser(
        "bench", help="run the throughput benchmark suite (SQLite, or PostgreSQL with --store)"
    )
    run.add_argument(
        "--workload",
        "-w",
        action="append",
        choices=bench.WORKLOADS,
        help="run only these workloads (repeatable; default: all)",
    )
    run.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    run.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        metavar="N",
        help="run the suite N times over and report each ratio's median and range (default: 1)",
    )
    run.add_argument("--json", action="store_true", help="print machine-readable results")
    run.add_argument(
        "--no-peer",
        action="store_true",
        help="skip the eventsourcing baseline (installed with pip install 'actorsource[bench]')",
    )
    run.add_argument("--dir", type=Path, default=None, help="where to put the database files")
    run.add_argument(
        "--tune-gc",
        action="store_true",
        help="run after actorsource.tune_gc(), as a service that calls it at startup would "
        "(the baselines too)",
    )
    run.add_argument(
        "--tune-switch-interval",
        action="store_true",
        help="run after actorsource.tune_switch_interval(), as a service that calls it at "
        "startup would (the baselines too)",
    )
    run.add_argument(
        "--store",
        default="sqlite",
        metavar="sqlite|DSN",
        help=(
            "sqlite (the default), or a postgresql:// DSN: each workload then runs in a fresh "
            "schema of that database, dropped afterwards (the SQLite baselines are not run)"
        ),
    )
    run.add_argument(
        "--compare",
        metavar="PYTHON",
        default=None,
        help=(
            "A/B in one sitting: run these workloads with another installation's python (A) "
            "and with this one (B) in alternating rounds, a fresh process each; report per "
            "workload both medians with their ranges, and B/A (A needs only a bench with --json)"
        ),
    )
    run.add_argument(
        "--rounds",
        type=_positive_int,
        default=None,
        metavar="N",
        help="with --compare: the rounds of each side (default: 5)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"must be a positive whole number, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _position(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"must be a position, a whole number from 1 (the first event), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value
