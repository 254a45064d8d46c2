"""Build slots shared round-robin between requests.

A plain FIFO limiter lets a 500-package request that queued first hold every slot until it is
done. Here each request has its own queue, and a freed slot goes to the waiting request that
was served least recently, so a user's single package starts with the next free slot.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Hashable

import trio


class FairSlots:
    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"need at least one slot, not {total}")
        self.total = total
        self.free = total
        # request key -> its waiters
        self._queues: dict[Hashable, deque[trio.Event]] = {}
        self._granted: set[trio.Event] = set()
        # request key -> when it was last given a slot
        self._served: dict[Hashable, int] = {}
        self._clock = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    async def acquire(self, key: Hashable) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.free > 0 and not self._queues:
            self.free -= 1
            self._served[key] = next(self._clock)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        ticket = trio.Event()
        self._queues.setdefault(key, deque()).append(ticket)
        try:
            await ticket.wait()
        except BaseException:
            if ticket in self._granted:  # granted just as we were cancelled: pass it on
                self._granted.discard(ticket)
                self.release()
            else:
                queue = self._queues.get(key)
                if queue is not None:
                    queue.remove(ticket)
                    if not queue:
                        del self._queues[key]
            raise
        self._granted.discard(ticket)

    def release(self) -> None:
        if not self._queues:
            self.free += 1
            assert self.free <= self.total, "released more slots than acquired"
            return
        key = min(self._queues, key=lambda k: self._served.get(k, -1))
        queue = self._queues[key]
        ticket = queue.popleft()
        if not queue:
            del self._queues[key]
        self._served[key] = next(self._clock)
        if len(self._served) > 2 * len(self._queues) + 1024:  # forget finished requests
            self._served = {k: v for k, v in self._served.items() if k in self._queues}
        self._granted.add(ticket)
        ticket.set()
