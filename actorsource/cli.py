"""The ``actorsource`` command line: the benchmark suite, and commands to inspect a store."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio

from . import bench
from ._commands import COMMANDS, add_commands, run_command
from ._timer_command import add_timers_command, run_timers_command
from .bench import compare
from .stores.postgres import redact_dsn


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
    top = _Parser(prog="actorsource", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
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
    run.add_argument("--no-peer", action="store_true", help="skip the eventsourcing baseline")
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
    add_commands(commands)
    add_timers_command(commands)
    return top


def _compare(line: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``actorsource bench --compare PYTHON``: both sides' runs, alternating, compared."""
    if args.compare is None:
        line.error("--rounds is for --compare PYTHON (use --repeat N for one installation)")
    if args.repeat != 1:
        line.error("--repeat does not combine with --compare: use --rounds N")
    arguments: list[str] = []
    for name in args.workload or []:
        arguments += ["-w", name]
    for flag, given in (
        ("--quick", args.quick),
        ("--no-peer", args.no_peer),
        ("--tune-gc", args.tune_gc),
        ("--tune-switch-interval", args.tune_switch_interval),
    ):
        if given:
            arguments.append(flag)
    if args.dir is not None:
        arguments += ["--dir", str(args.dir)]
    if args.store != "sqlite":
        arguments += ["--store", args.store]
    try:
        results = compare.compare(args.compare, arguments, args.rounds or 5, bench.stderr_progress)
    except Exception as exc:
        sys.stderr.write(f"actorsource bench: error: {exc}\n")
        return 1
    text = json.dumps(results, indent=2) if args.json else compare.format_compare(results)
    sys.stdout.write(text + "\n")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"must be a positive whole number, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    line = parser()
    args = line.parse_args(argv)
    if args.command in COMMANDS:
        return run_command(args)
    if args.command == "timers":
        return run_timers_command(args)
    postgres_dsn: str | None = None
    if args.store != "sqlite":
        if not args.store.startswith(("postgresql://", "postgres://")):
            line.error(
                f"--store must be sqlite or a postgresql:// DSN, got {redact_dsn(args.store)!r}"
            )
        postgres_dsn = args.store
    if args.command == "bench" and (args.compare is not None or args.rounds is not None):
        return _compare(line, args)
    if args.command == "bench":
        sizes = bench.Sizes.quick() if args.quick else bench.Sizes()
        workloads = args.workload or list(bench.WORKLOADS)
        options = {
            "directory": args.dir,
            "peer": not args.no_peer,
            "postgres_dsn": postgres_dsn,
            "gc_tuned": args.tune_gc,
            "switch_tuned": args.tune_switch_interval,
        }
        progress = bench.stderr_progress
        try:
            if args.repeat == 1:
                results = anyio.run(lambda: bench.run_suite(workloads, sizes, progress, **options))
                text = bench.format_table(results)
            else:
                results = anyio.run(
                    lambda: bench.run_repeated(args.repeat, workloads, sizes, progress, **options)
                )
                text = bench.format_repeated(results)
        except Exception as exc:
            sys.stderr.write(f"actorsource bench: error: {type(exc).__name__}: {exc}\n")
            return 1
        sys.stdout.write(json.dumps(results, indent=2) if args.json else text)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
