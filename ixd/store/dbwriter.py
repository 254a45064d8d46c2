"""The event loop's database writes, committed in batches by one thread of their own.

A build writes twice: its row when it starts, its store entry and its end when it is done.
Each through a worker thread of its own, that is two thread hand-offs and two commits per
build, and the first one stood between a free build slot and the next build's start. Here
writes queue for one long-lived thread, which commits whatever has gathered in one
transaction (group commit: while one batch commits, the next one gathers), so a write
costs its caller only a queue entry, and a caller that needs nothing back from it yet (a
build's start row) goes on at once.

Order is kept: a write is committed in the same batch as every write submitted before it,
or in a later one. A write under way is waited for even when its waiter is cancelled (like
`trio.to_thread.run_sync`): what a caller wrote is in the database when it goes on.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

from ixd.store.db import BuildDatabase

T = TypeVar("T")
_Queued = tuple["PendingWrite[Any]", trio.lowlevel.TrioToken]

#: seconds the writer's thread waits for more work before it ends (it starts again when
#: there is some)
IDLE_TIMEOUT = 10.0


class PendingWrite(Generic[T]):
    """A write submitted to a WriteQueue; `await result()` for what it returned."""

    def __init__(self, write: Callable[[], T]) -> None:
        self.write = write
        self._done = trio.Event()
        self._outcome: outcome.Outcome[T] | None = None

    def value_if_done(self) -> T | None:
        """What the write returned if it is committed already (None if not yet, or if it
        raised): for a later write that needs it without waiting."""
        if self._outcome is None or not isinstance(self._outcome, outcome.Value):
            return None
        value: T = self._outcome.unwrap()
        return value

    async def result(self) -> T:
        """What the write returned once committed, or what it raised."""
        with trio.CancelScope(shield=True):  # short, and never left half way
            await self._done.wait()
        assert self._outcome is not None
        return self._outcome.unwrap()

    def _finish(self, result: outcome.Outcome[T]) -> None:
        self._outcome = result
        self._done.set()


class WriteQueue:
    """Writes of `db` (calls of its methods), committed in order by one thread in batches."""

    def __init__(self, db: BuildDatabase) -> None:
        self.db = db
        self._queue: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    def submit(self, write: Callable[[], T]) -> PendingWrite[T]:
        """Queue `write` (called in the writer's thread, inside the batch's transaction);
        returns at once. Call from the event loop."""
        pending = PendingWrite(write)
        token = trio.lowlevel.current_trio_token()
        with self._lock:
            self._queue.put((pending, token))
            if not self._running:
                self._running = True
                threading.Thread(target=self._serve, name="ixd-db-writer", daemon=True).start()
        return pending

    async def write(self, write: Callable[[], T]) -> T:
        """Submit `write` and wait until it is committed; what it returned."""
        return await self.submit(write).result()

    def _serve(self) -> None:
        while True:
            try:
                batch = [self._queue.get(timeout=IDLE_TIMEOUT)]
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._running = False
                        return
                continue
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._queue.get_nowait())
            try:
                results = self.db.write_batch([pending.write for pending, _ in batch])
            except BaseException as exc:  # a bug: every waiter hears of it, none waits on
                results = [outcome.Error(exc) for _ in batch]
            by_run: dict[trio.lowlevel.TrioToken, list[_Finished]] = {}
            for (pending, token), result in zip(batch, results, strict=True):
                by_run.setdefault(token, []).append((pending, result))
            for token, finished in by_run.items():
                # one wake-up of the event loop for the whole batch
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(_finish_all, finished)


#: (a string: the `outcome` of some distributions' Pythons has no subscriptable Outcome)
_Finished = tuple[PendingWrite[Any], "outcome.Outcome[Any]"]


def _finish_all(finished: list[_Finished]) -> None:
    for pending, result in finished:
        pending._finish(result)
