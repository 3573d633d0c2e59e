"""One sqlite3 connection and the thread that owns it.

The store owns its threads instead of borrowing aiosqlite's: its writer and its loader hand
whole jobs to the connection's thread and are called back on the loop, with no future per call,
which aiosqlite offers only through private attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from queue import SimpleQueue
from typing import Any, TypeVar
from urllib.parse import quote

import anyio

logger = logging.getLogger("actorsource.stores.sqlite")

T = TypeVar("T")

#: a job for the thread, and the future to answer (None: the job answers for itself)
Job = tuple[asyncio.Future[Any] | None, Callable[[], Any]]


class ConnectionThread:
    """A sqlite3 connection used only on its own thread, which runs the loop's jobs in order.

    :meth:`run` answers through a future; :meth:`submit` queues a job that answers for itself
    (with ``loop.call_soon_threadsafe``), for callers that want no future per call.
    """

    __slots__ = ("_conn", "_jobs", "_stopping", "_thread", "alive")

    def __init__(self, name: str) -> None:
        self._conn: sqlite3.Connection | None = None
        self._jobs: SimpleQueue[Job] = SimpleQueue()
        self._stopping = False
        # not a daemon: a commit under way finishes even when the program is ending
        self._thread = threading.Thread(target=self._work, name=name)
        #: whether the thread takes jobs (false once it is closed, or its connect failed)
        self.alive = False

    @classmethod
    async def connect(
        cls, path: Path, *, busy_timeout: float, name: str, read_only: bool = False
    ) -> ConnectionThread:
        """Start a thread and open ``path`` on it in autocommit mode.

        :param read_only: open with SQLite's read-only mode: the file must exist, and nothing
            through this connection can change it
        :raises sqlite3.Error: if SQLite cannot open it (the thread has ended then)
        """
        worker = cls(name)
        worker._thread.start()

        def connect() -> None:
            # a URI, for its mode parameter (the path quoted: '?' and '#' are URI syntax)
            target = f"file:{quote(str(path.absolute()))}?mode=ro" if read_only else path
            worker._conn = sqlite3.connect(
                target,
                isolation_level=None,
                timeout=busy_timeout,
                check_same_thread=False,
                uri=read_only,
            )

        try:
            await worker._call(connect)
        except BaseException:
            # no thread outlives a failed open (to reply later to a loop that may be closed)
            worker._jobs.put_nowait((None, worker._close_job))
            await anyio.to_thread.run_sync(worker._thread.join)
            raise
        worker.alive = True
        return worker

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for jobs that run on this thread (only there)."""
        assert self._conn is not None
        return self._conn

    @property
    def jobs(self) -> SimpleQueue[Job]:
        """The queue of jobs (a job may look whether others wait: ``jobs.empty()``)."""
        return self._jobs

    @property
    def in_transaction(self) -> bool:
        """Whether the connection is inside a transaction."""
        return self._conn is not None and self._conn.in_transaction

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job``; it reports back to the loop itself. It must not raise."""
        self._jobs.put_nowait((None, job))

    async def run(self, job: Callable[[], T]) -> T:
        """Run ``job`` on the thread and return what it returns (or raise what it raised)."""
        if not self.alive:
            msg = "the SQLite connection is closed"
            raise sqlite3.ProgrammingError(msg)
        return await self._call(job)

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run one statement."""
        await self.run(lambda: self.connection.execute(sql, params).close())

    async def execute_fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run one query and return its rows."""
        return await self.run(lambda: self.connection.execute(sql, params).fetchall())

    async def close(self) -> None:
        """Close the connection once the jobs queued before are done; the thread ends."""
        if not self.alive:
            return
        self.alive = False
        await self._call(self._close_job)

    async def _call(self, job: Callable[[], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait((future, job))
        return await future

    def _close_job(self) -> None:
        self._stopping = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _work(self) -> None:
        jobs = self._jobs
        while not self._stopping:
            future, job = jobs.get()
            try:
                result = job()
            except BaseException as exc:
                if future is None:
                    logger.exception("a job on the SQLite thread failed")
                else:
                    _reply(future, None, exc)
            else:
                if future is not None:
                    _reply(future, result, None)


def _reply(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        future.get_loop().call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
