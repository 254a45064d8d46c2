"""Build slots shared round-robin between requests.

A plain FIFO limiter lets a 500-package request that queued first hold every slot until it is
done. Here each request has its own queue, and a freed slot goes to the waiting request that
was served least recently, so a user's single package starts with the next free slot.

A build several requests wait for stands in the queue of each of them (`add_key`), so it
takes the earliest turn of any of its waiters instead of only its first requester's turn.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Hashable

import trio


class Ticket:
    """One waiter for a slot; it may stand in several requests' queues at once."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.done = False  # granted, or given up

    @property
    def granted(self) -> bool:
        return bool(self.event.is_set())


class FairSlots:
    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"need at least one slot, not {total}")
        self.total = total
        self.free = total
        # request key -> its tickets in order (finished ones are skipped lazily)
        self._queues: dict[Hashable, deque[Ticket]] = {}
        # request key -> when it was last given a slot
        self._served: dict[Hashable, int] = {}
        self._clock = itertools.count()
        #: tickets waiting for a slot
        self.waiting = 0

    def ticket(self, key: Hashable) -> Ticket:
        """A place in `key`'s queue, or a slot at once if one is free and nobody waits."""
        ticket = Ticket()
        if self.free > 0 and not self.waiting:
            self.free -= 1
            self._served[key] = next(self._clock)
            ticket.done = True
            ticket.event.set()
        else:
            self._queues.setdefault(key, deque()).append(ticket)
            self.waiting += 1
        return ticket

    def add_key(self, ticket: Ticket, key: Hashable) -> None:
        """Let `ticket` also take `key`'s turn (another request waits for the same build)."""
        if not ticket.done:
            self._queues.setdefault(key, deque()).append(ticket)

    async def wait(self, ticket: Ticket) -> None:
        """Wait until `ticket` holds a slot; on cancellation, give up the place (or slot)."""
        try:
            await ticket.event.wait()
        except BaseException:
            if ticket.granted:
                self.release()
            elif not ticket.done:
                ticket.done = True
                self.waiting -= 1
            raise

    async def acquire(self, key: Hashable) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        await self.wait(self.ticket(key))

    def release(self) -> None:
        while self._queues:
            key = min(self._queues, key=lambda k: self._served.get(k, -1))
            queue = self._queues[key]
            ticket = queue.popleft()
            if not queue:
                del self._queues[key]
            if ticket.done:
                continue  # granted through another request's turn, or given up
            self._served[key] = next(self._clock)
            if len(self._served) > 2 * len(self._queues) + 1024:  # forget finished requests
                self._served = {k: v for k, v in self._served.items() if k in self._queues}
            ticket.done = True
            self.waiting -= 1
            ticket.event.set()
            return
        self.free += 1
        assert self.free <= self.total, "released more slots than acquired"
