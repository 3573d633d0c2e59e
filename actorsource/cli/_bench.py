"""``actorsource bench``: the benchmark suite, one installation or two compared."""

from __future__ import annotations

import argparse
import json
import sys

import anyio

from .. import bench
from ..bench import compare
from ..stores.postgres import redact_dsn


def run_bench(line: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``actorsource bench`` as parsed; return the exit status."""
    postgres_dsn: str | None = None
    if args.store != "sqlite":
        if not args.store.startswith(("postgresql://", "postgres://")):
            line.error(
                f"--store must be sqlite or a postgresql:// DSN, got {redact_dsn(args.store)!r}"
            )
        postgres_dsn = args.store
    if args.compare is not None or args.rounds is not None:
        return _compare(line, args)
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
