"""Open/close bookkeeping every store shares."""

from __future__ import annotations

import enum
from types import TracebackType
from typing import Self

from ..._errors import StoreError
from .watch import HeadWatch


class StoreState(enum.Enum):
    """The lifecycle of a store; it can be opened once."""

    #: made but not opened yet
    UNOPENED = "unopened"
    #: open and usable
    OPEN = "open"
    #: closed; a store cannot be reopened
    CLOSED = "closed"


class StoreLifecycle:
    """Open/close bookkeeping and the async context manager, shared by the stores."""

    _state: StoreState = StoreState.UNOPENED
    #: the newest commit seen, and its waiters (every store keeps one; closing fails waiters)
    _watch: HeadWatch

    @property
    def is_open(self) -> bool:
        """Whether the store is open."""
        return self._state is StoreState.OPEN

    async def open(self) -> None:
        """Open the store; opening an open store is a no-op.

        :raises StoreError: if the store was closed (stores cannot be reopened) or fails to open
        """
        if self._state is StoreState.OPEN:
            return
        if self._state is StoreState.CLOSED:
            msg = f"{self!r} was closed; a store cannot be reopened, make a new one"
            raise StoreError(msg)
        await self._open()
        self._state = StoreState.OPEN

    async def close(self) -> None:
        """Close the store; closing a closed store is a no-op."""
        if self._state is not StoreState.OPEN:
            self._state = StoreState.CLOSED
            return
        self._state = StoreState.CLOSED
        self._watch.close(StoreError(f"{self!r} was closed while waiting for events"))
        await self._close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._state is StoreState.OPEN:
            return
        if self._state is StoreState.CLOSED:
            msg = f"{self!r} was closed; a store cannot be reopened, make a new one"
        else:
            msg = f"{self!r} is unopened; open it first (async with store: ...)"
        raise StoreError(msg)

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError
