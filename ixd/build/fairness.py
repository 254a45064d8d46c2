"""Build slots shared round-robin between users, then between each user's requests.

A plain FIFO limiter lets a 500-package request that queued first hold every slot until it is
done; a round-robin between requests still lets one user with ten requests take ten turns
for another user's one. Here a freed slot goes to the waiting *user* served least recently,
and among that user's requests to the one served least recently: a user's single package
starts with the next free slot whatever anybody else queued, and a user's own small request
is not stuck behind their own big one.

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
    #: finished users and requests are forgotten once this many more are remembered
    FORGET_AFTER = 1024

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"need at least one slot, not {total}")
        self.total = total
        self.free = total
        # user -> request -> its tickets in order (finished ones are skipped lazily)
        self._queues: dict[Hashable, dict[Hashable, deque[Ticket]]] = {}
        # when each user, and each (user, request), was last given a slot
        self._user_served: dict[Hashable, int] = {}
        self._request_served: dict[tuple[Hashable, Hashable], int] = {}
        self._forget_at = self.FORGET_AFTER
        self._clock = itertools.count()
        #: tickets waiting for a slot
        self.waiting = 0

    def ticket(self, user: Hashable, request: Hashable = None) -> Ticket:
        """A place in the queue of `user`'s `request`, or a slot at once if one is free and
        nobody waits."""
        ticket = Ticket()
        if self.free > 0 and not self.waiting:
            self.free -= 1
            self._serve(user, request)
            ticket.done = True
            ticket.event.set()
        else:
            self._enqueue(ticket, user, request)
            self.waiting += 1
        return ticket

    def add_key(self, ticket: Ticket, user: Hashable, request: Hashable = None) -> None:
        """Let `ticket` also take the turn of `user`'s `request` (another request waits for
        the same build)."""
        if not ticket.done:
            self._enqueue(ticket, user, request)

    def _enqueue(self, ticket: Ticket, user: Hashable, request: Hashable) -> None:
        self._queues.setdefault(user, {}).setdefault(request, deque()).append(ticket)

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

    async def acquire(self, user: Hashable, request: Hashable = None) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        await self.wait(self.ticket(user, request))

    def release(self) -> None:
        user_served, request_served = self._user_served, self._request_served
        while self._queues:
            user = min(self._queues, key=lambda u: user_served.get(u, -1))
            requests = self._queues[user]
            request = min(requests, key=lambda r: request_served.get((user, r), -1))
            queue = requests[request]
            ticket = queue.popleft()
            if not queue:
                del requests[request]
                if not requests:
                    del self._queues[user]
            if ticket.done:
                continue  # granted through another request's turn, or given up
            self._serve(user, request)
            ticket.done = True
            self.waiting -= 1
            ticket.event.set()
            return
        self.free += 1
        assert self.free <= self.total, "released more slots than acquired"

    def _serve(self, user: Hashable, request: Hashable) -> None:
        now = next(self._clock)
        self._user_served[user] = now
        self._request_served[(user, request)] = now
        if len(self._request_served) > self._forget_at:  # forget who has nothing queued
            self._user_served = {u: t for u, t in self._user_served.items()
                                 if u in self._queues or u == user}
            self._request_served = {
                k: t for k, t in self._request_served.items()
                if k[1] in self._queues.get(k[0], ()) or k == (user, request)}
            self._forget_at = 2 * len(self._request_served) + self.FORGET_AFTER
