"""Supervision: which aggregates keep failing, and until when they are left alone."""

from __future__ import annotations

from ._errors import ActorFailedError
from ._policies import Backoff

#: the most failing aggregates remembered (the oldest entry is forgotten beyond)
_REMEMBERED = 100_000


class Supervisor:
    """Remembers aggregates whose loads or appends failed, and when each may be tried again.

    The waits follow a :class:`Backoff` policy, on its clock.
    """

    __slots__ = ("failing", "policy")

    def __init__(self, policy: Backoff | None = None) -> None:
        #: the backoff the waits follow
        self.policy = policy if policy is not None else Backoff()
        #: stream id -> (failures in a row, when the next load may be tried, last reason)
        self.failing: dict[str, tuple[int, float, str]] = {}

    def backoff_left(self, stream_id: str) -> float:
        """Seconds until the aggregate may be loaded again (0: now)."""
        entry = self.failing.get(stream_id)
        return 0.0 if entry is None else max(0.0, entry[1] - self.policy.clock())

    def failures(self, stream_id: str) -> tuple[int, str]:
        """Failures of the aggregate in a row, and why the last one happened."""
        entry = self.failing.get(stream_id)
        return (0, "") if entry is None else (entry[0], entry[2])

    def refusal(self, stream_id: str) -> ActorFailedError | None:
        """The error a message to the aggregate fails with while it waits out its backoff
        (None: it may be loaded now)."""
        wait = self.backoff_left(stream_id)
        if wait <= 0:
            return None
        failures, last = self.failures(stream_id)
        return ActorFailedError(
            stream_id,
            f"loading failed {failures} time(s) in a row, last: {last}; not retried for "
            f"another {wait:.2f} s",
        )

    def failed(self, stream_id: str, reason: str) -> None:
        """Record a failure: the aggregate waits out its backoff before its next load."""
        count = self.failures(stream_id)[0] + 1
        if len(self.failing) >= _REMEMBERED and stream_id not in self.failing:
            del self.failing[next(iter(self.failing))]
        self.failing[stream_id] = (count, self.policy.clock() + self.policy.delay(count), reason)

    def succeeded(self, stream_id: str) -> None:
        """Record a success (the aggregate is healthy again)."""
        if self.failing:  # almost always empty: no hashing of the stream id then
            self.failing.pop(stream_id, None)
