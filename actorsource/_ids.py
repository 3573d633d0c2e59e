"""Event ids: random UUIDs (version 4), made cheaply.

``str(uuid.uuid4())`` costs a system call and a UUID object per id (~3.5 µs here, a visible
share of a command). Ids are cut from a buffer of ``os.urandom`` bytes instead, refilled every
256 ids; the buffer is dropped in a forked child, so that two processes never share ids.
"""

from __future__ import annotations

import os

_IDS_PER_REFILL = 256
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


class _Pool:
    hex: str = ""
    offset: int = 0


_pool = _Pool()


def _drop_pool() -> None:
    _pool.hex = ""
    _pool.offset = 0


os.register_at_fork(after_in_child=_drop_pool)


def new_event_id() -> str:
    """Return a new random UUID (version 4, RFC 4122 variant) as a string."""
    pool = _pool
    offset = pool.offset
    if offset >= len(pool.hex):
        pool.hex = os.urandom(16 * _IDS_PER_REFILL).hex()
        offset = 0
    pool.offset = offset + 32
    h = pool.hex[offset : offset + 32]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"
