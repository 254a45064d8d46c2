"""Build slots shared round-robin between requests.

A plain FIFO limiter lets a 500-package request that queued first hold every slot until it is
done. Here each request has its own queue, and a freed slot goes to the next request in turn,
so a user's single package starts after at most one build of each request ahead of it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable

import trio


class FairSlots:
    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"need at least one slot, not {total}")
        self.total = total
        self.free = total
        # request key -> its waiters, in the order the requests take turns
        self._queues: OrderedDict[Hashable, deque[trio.Event]] = OrderedDict()
        self._granted: set[trio.Event] = set()

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    async def acquire(self, key: Hashable) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.free > 0 and not self._queues:
            self.free -= 1
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
        key, queue = next(iter(self._queues.items()))
        ticket = queue.popleft()
        del self._queues[key]
        if queue:  # this request goes to the back of the line
            self._queues[key] = queue
        self._granted.add(ticket)
        ticket.set()
