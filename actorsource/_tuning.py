"""Opt-in tuning of two process-wide CPython settings for a process that hosts a busy runtime.

Both settings belong to the whole process (every library and thread in it), so the runtime never
changes them by itself: a service calls :func:`tune_gc` and :func:`tune_switch_interval` once at
startup, after its imports, if it wants the trade each describes.

The garbage collector (measurements: ``docs/performance.md``). Under load, a burst of commands
allocates thousands of short-lived container objects (messages, futures, records) before their
replies free them. With CPython's default first threshold (700)
every burst starts a young collection that finds nothing to free, promotes what is in flight,
and so feeds the older generations, whose full collections walk every live object (actors,
tasks, modules): a visible share of the loop thread's time under load, and its worst pauses.
None of it frees anything: the runtime makes no reference cycles on its hot path.

The switch interval. The SQLite store commits on its writer thread, which needs the GIL twice per
batch: to start (bind the rows) and to finish (after SQLite's work, done without the GIL). While
the loop thread runs Python, a thread that wants the GIL waits until the loop thread blocks or
the switch interval (CPython's default: 5 ms) forces a handover. Under load the loop seldom
blocks, so each batch may wait up to a switch interval twice: its commit takes longer than its
own work, and the loop then idles for the replies.
"""

from __future__ import annotations

import gc
import logging
import sys

logger = logging.getLogger("actorsource.tuning")

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


#: the switch interval :func:`tune_switch_interval` sets by default (seconds)
DEFAULT_SWITCH_INTERVAL = 0.001


def tune_switch_interval(seconds: float = DEFAULT_SWITCH_INTERVAL) -> float:
    """Make a thread that waits for the GIL get it sooner from a busy thread.

    Sets CPython's switch interval (:func:`sys.setswitchinterval`) to ``seconds``: how long a
    thread running Python keeps the GIL when another thread asks for it. The SQLite store's
    writer thread then gets the GIL back within ``seconds`` of its commit, not within 5 ms, so
    a batch's callers hear back sooner and the next batch starts sooner. The cost is more
    frequent switching between threads that both run Python (each switch is a few
    microseconds). Call it once, at startup.

    :return: the interval before the call, to restore with ``sys.setswitchinterval(previous)``
    :raises ValueError: if ``seconds`` is not a positive number
    """
    if (
        not isinstance(seconds, (int, float))
        or isinstance(seconds, bool)
        or not 0 < seconds < float("inf")
    ):
        msg = f"seconds must be a positive number, got {seconds!r}"
        raise ValueError(msg)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    logger.info(
        "switch interval tuned",
        extra={"switch_interval": seconds, "previous_switch_interval": previous},
    )
    return previous
