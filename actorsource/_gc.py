"""Tuning CPython's cyclic garbage collector for a process that hosts a busy runtime.

Measured (``shared/PERF_NOTES.md``, and the notes of issue #3): under load, a burst of commands
allocates thousands of short-lived container objects (messages, futures, records) before their
replies free them. With CPython's default first threshold (700) every burst starts a young
collection that finds nothing to free, promotes what is in flight, and so feeds the older
generations, whose full collections walk every live object (actors, tasks, modules): about 15%
of the loop thread's time in the W1 benchmark, and its worst pauses. None of it frees anything:
the runtime makes no reference cycles on its hot path.

The collector is process-wide, so the runtime never changes it by itself: a service calls
:func:`tune_gc` once at startup, after its imports, if it wants this trade.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("actorsource.gc")

#: the first-generation threshold :func:`tune_gc` sets by default: above the allocations of a
#: burst of a few thousand in-flight commands
DEFAULT_GEN0_THRESHOLD = 20_000


def tune_gc(
    *, gen0_threshold: int = DEFAULT_GEN0_THRESHOLD, freeze: bool = True
) -> tuple[int, int, int]:
    """Make the cyclic garbage collector run less often, and leave startup objects alone.

    Sets the first-generation threshold to ``gen0_threshold`` (the others stay), and with
    ``freeze`` collects once, then moves every object alive now (modules, classes, the
    application's startup state) to the permanent generation, which later collections skip.
    Reference counting still frees almost everything at once; only objects in reference cycles
    wait longer. Call it once, after imports and setup.

    :return: the thresholds before the call, to restore with ``gc.set_threshold(*previous)``
    :raises ValueError: if ``gen0_threshold`` is not a positive int
    """
    if (
        not isinstance(gen0_threshold, int)
        or isinstance(gen0_threshold, bool)
        or gen0_threshold <= 0
    ):
        msg = f"gen0_threshold must be a positive int, got {gen0_threshold!r}"
        raise ValueError(msg)
    previous = gc.get_threshold()
    if freeze:
        gc.collect()
        gc.freeze()
    gc.set_threshold(gen0_threshold, previous[1], previous[2])
    logger.info(
        "garbage collector tuned",
        extra={
            "gen0_threshold": gen0_threshold,
            "previous_thresholds": previous,
            "frozen_objects": gc.get_freeze_count(),
        },
    )
    return previous
