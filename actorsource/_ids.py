"""Event ids: time-ordered random UUIDs (version 7, RFC 9562), made cheaply.

Time-ordered because every event id goes into a unique index: random (version 4) ids land on a
different index page each, so a commit of a few hundred events dirties a few hundred pages once
the index outgrows the cache, and throughput falls as the store grows. Ids that start with the
time land at the index's right edge.

Cheap because ``str(uuid.uuid4())`` costs a system call and a UUID object per id (~3.5 µs here,
a visible share of a command, and a command takes two ids: its events' and its own): the random
ends are cut from random bytes and formatted 256 at a time, and the time prefix is formatted once
per millisecond.

The random bytes come from a generator seeded once per process from ``os.urandom`` (and seeded
again in a forked child, so that two processes never share ids), not from ``os.urandom`` at each
refill: a system call releases the GIL, and a thread waiting for it (the SQLite writer, busy with
a commit) then holds it for up to a switch interval while the event loop waits. Event ids need to
be unique, not secret.
"""

from __future__ import annotations

import os
import random
import time

_IDS_PER_REFILL = 256
_HEX_PER_ID = 20  # 80 random bits: 12 for rand_a, 2 become the variant, 62 for rand_b (4 spare)
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


class _Pool:
    #: the random ends of ids to come, formatted ("7xxx-Vxxx-xxxxxxxxxxxx"), used from the back
    tails: list[str]
    #: the Unix millisecond the prefix was made for, and the prefix ("tttttttt-tttt-")
    millisecond: int = -1
    prefix: str = ""

    def __init__(self) -> None:
        self.tails = []


_pool = _Pool()
_random = random.Random(os.urandom(32))


def _drop_pool() -> None:
    _pool.tails = []
    _random.seed(os.urandom(32))


os.register_at_fork(after_in_child=_drop_pool)


def _refill() -> list[str]:
    hex_digits = _random.randbytes(_HEX_PER_ID // 2 * _IDS_PER_REFILL).hex()
    tails = []
    for start in range(0, len(hex_digits), _HEX_PER_ID):
        r = hex_digits[start : start + _HEX_PER_ID]
        tails.append(f"7{r[:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:19]}")
    return tails


def new_event_id() -> str:
    """Return a new UUID (version 7: Unix milliseconds, then random bits) as a string."""
    pool = _pool
    tails = pool.tails
    if not tails:
        tails = pool.tails = _refill()
    millisecond = time.time_ns() // 1_000_000
    if millisecond != pool.millisecond:
        t = f"{millisecond:012x}"
        pool.prefix = f"{t[:8]}-{t[8:]}-"
        pool.millisecond = millisecond
    return pool.prefix + tails.pop()
