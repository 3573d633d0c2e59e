"""``actorsource timers``: list a store's durable timers (due, late, by aggregate)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from .._timers import StoredTimer
from ..stores._base import EventStore
from ._open import CommandError
from ._table import dumps, table


def add_timers_command(
    commands: Any,
    db: Callable[[argparse.ArgumentParser], None],
    json: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add the ``timers`` command to the command line's subparsers."""
    timers = commands.add_parser("timers", help="list durable timers: due, late, by aggregate")
    db(timers)
    timers.add_argument(
        "--aggregate",
        metavar="STREAM",
        help="only timers this stream scheduled or that go to it (e.g. Order-42)",
    )
    shown = timers.add_mutually_exclusive_group()
    shown.add_argument("--due", action="store_true", help="only timers due now")
    shown.add_argument("--late", action="store_true", help="only timers late (see --late-after)")
    timers.add_argument(
        "--late-after",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a due timer is late once it waited this long (default: 60)",
    )
    json(timers)


async def timers(store: EventStore, args: argparse.Namespace, out: TextIO) -> None:
    """``timers DB``: the store's durable timers, with their status now."""
    kept = store.capabilities().timers
    if kept is None:
        msg = f"{store!r} keeps no durable timers"
        raise CommandError(msg)
    listed = await kept.list_timers()
    now = datetime.now(UTC)
    late_after = timedelta(seconds=args.late_after)
    rows = []
    for timer in listed:
        if args.aggregate and args.aggregate not in (timer.owner, timer.target):
            continue
        status = _status(timer, now, late_after)
        if args.due and status not in ("due", "late"):
            continue
        if args.late and status != "late":
            continue
        rows.append((timer, status))
    if args.json:
        for timer, status in rows:
            out.write(dumps(_timer_json(timer, status)) + "\n")
        return
    table(
        out,
        ["owner", "key", "target", "command", "due at", "every", "status"],
        [
            (
                t.owner,
                t.key,
                t.target,
                t.command_type,
                t.due_at,
                "-" if t.interval is None else f"{t.interval:g}s ({t.missed})",
                status,
            )
            for t, status in rows
        ],
    )


def _status(timer: StoredTimer, now: datetime, late_after: timedelta) -> str:
    if timer.claim_expires is not None and timer.claim_expires >= now:
        return f"claimed by {timer.claimed_by}"
    if timer.due_at > now:
        return "waiting"
    return "late" if now - timer.due_at > late_after else "due"


def _timer_json(timer: StoredTimer, status: str) -> dict[str, Any]:
    return {
        "owner": timer.owner,
        "key": timer.key,
        "target": timer.target,
        "command_type": timer.command_type,
        "data": timer.data,
        "due_at": timer.due_at.isoformat(),
        "interval": timer.interval,
        "missed": timer.missed,
        "claimed_by": timer.claimed_by,
        "status": status,
    }
