"""The in-memory store's durable timers: a dict, changed in one step of the event loop."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs

from .._timers import StoredTimer, TimerChange, TimerSchedule
from ._base import check_claim, decode_json, encode_timer_data, in_categories


class TimerTable:
    """Timers by (owner stream, key); command data held as JSON text, as a durable store would."""

    def __init__(self) -> None:
        self._timers: dict[tuple[str, str], tuple[StoredTimer, str]] = {}

    def apply(self, changes: Iterable[TimerChange]) -> None:
        """Apply an append's timer writes, in order (the caller checked them)."""
        for change in changes:
            slot = (change.owner, change.key)
            if isinstance(change, TimerSchedule):
                text = encode_timer_data(change)
                timer = StoredTimer(
                    change.owner,
                    change.key,
                    change.target,
                    change.command_type,
                    {},
                    change.due_at,
                    change.interval,
                    change.missed,
                )
                self._timers[slot] = (timer, text)
            else:
                self._timers.pop(slot, None)

    def claim(
        self,
        claimant: str,
        now: datetime,
        lease: float,
        limit: int,
        categories: Collection[str] | None,
    ) -> list[StoredTimer]:
        """Claim up to ``limit`` free due timers, the oldest due first."""
        expires = now + timedelta(seconds=lease)
        due = sorted(
            (
                (timer.due_at, slot)
                for slot, (timer, _) in self._timers.items()
                if timer.due_at <= now
                and (timer.claim_expires is None or timer.claim_expires < now)
                and in_categories(timer.target, categories)
            ),
        )[:limit]
        claimed = []
        for _, slot in due:
            timer, text = self._timers[slot]
            timer = attrs.evolve(timer, claimed_by=claimant, claim_expires=expires)
            self._timers[slot] = (timer, text)
            claimed.append(attrs.evolve(timer, data=decode_json(text)))
        return claimed

    def finish(self, timer: StoredTimer, claimant: str, next_due: datetime | None) -> bool:
        """Drop or move a claimed tick, if the claim still stands."""
        slot = (timer.owner, timer.key)
        found = self._timers.get(slot)
        if found is None:
            return False
        held, text = found
        if held.claimed_by != claimant or held.due_at != timer.due_at:
            return False
        if next_due is None:
            del self._timers[slot]
        else:
            moved = attrs.evolve(held, due_at=next_due, claimed_by=None, claim_expires=None)
            self._timers[slot] = (moved, text)
        return True

    def listing(self) -> list[StoredTimer]:
        """Every timer, the earliest due first."""
        rows = sorted(self._timers.values(), key=lambda found: (found[0].due_at, found[0].owner))
        return [attrs.evolve(timer, data=decode_json(text)) for timer, text in rows]


class MemoryTimers:
    """The memory store's timer claims and listing (its appends with timers are the store's)."""

    _timers: TimerTable

    if TYPE_CHECKING:  # the store's own, found through the class that mixes this in

        def _check_open(self) -> None: ...

    async def claim_due_timers(
        self,
        claimant: str,
        now: datetime,
        lease: float,
        *,
        limit: int,
        categories: Collection[str] | None = None,
    ) -> list[StoredTimer]:
        """Claim due timers nobody holds (see :class:`TimerStore`)."""
        self._check_open()
        check_claim(claimant, now, lease, limit)
        return self._timers.claim(claimant, now, lease, limit, categories)

    async def finish_timer(
        self, timer: StoredTimer, claimant: str, next_due: datetime | None
    ) -> bool:
        """Drop or move a claimed timer's tick (see :class:`TimerStore`)."""
        self._check_open()
        return self._timers.finish(timer, claimant, next_due)

    async def list_timers(self) -> list[StoredTimer]:
        """Return every timer, the earliest due first."""
        self._check_open()
        return self._timers.listing()
