"""Build slots shared round-robin between users, then between each user's requests, with a
per-user cap on the slots one user holds.

A plain FIFO limiter lets a 500-package request that queued first hold every slot until it is
done; a round-robin between requests still lets one user with ten requests take ten turns
for another user's one. Here a freed slot goes to the waiting *user* served least recently,
and among that user's requests to the one served least recently: a user's single package
starts with the next free slot whatever anybody else queued, and a user's own small request
is not stuck behind their own big one.

Turns alone do not free a slot: three long builds of one user fill two slots until the first
of them ends. So no user holds more than `per_user` slots at once (`ixd
--max-jobs-per-user`, by default one less than the slots): with a slot to spare, another
user's build starts at once, not after the longest build of the first. The daemon's own
account (root for the system's daemon, the user of a personal one) is not capped: the slots
are its machine's, and a daemon only its owner uses keeps every slot busy.

A build several requests wait for stands in the queue of each of them (`add_key`), so it
takes the earliest turn of any of its waiters instead of only its first requester's turn;
it counts against the cap of the user whose turn it took.

Getting ready ahead (`lookahead`): the tickets the queue will grant next, as far as it can
tell now (as if every slot were free: `upcoming`), are told so (`wait_ready`) before their
slot is granted, up to `lookahead` of them at once, so their builds set their sandboxes up
while the slots are still busy. Telling is only a forecast: slots are granted in the fair
order above whatever was readied, so a user who comes late loses nothing to it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Hashable, Iterable

import trio

#: the forecast's turns (`FairSlots.upcoming`) come after every real turn
_AFTER_EVERY_TURN = 1 << 62


class Ticket:
    """One waiter for a slot; it may stand in several requests' queues at once."""

    def __init__(self) -> None:
        self.event = trio.Event()
        #: set once it may get ready (it is among the next to be granted, or granted)
        self.ready = trio.Event()
        self.done = False  # granted, or given up
        #: the user whose turn (and share of the slots) it took, once granted
        self.user: Hashable = None

    @property
    def granted(self) -> bool:
        return bool(self.event.is_set())


def default_per_user(total: int) -> int:
    """The slots one user may hold by default: all but one (so another user's build always
    finds one), or the only one."""
    return total - 1 if total >= 2 else total


class FairSlots:
    #: finished users and requests are forgotten once this many more are remembered
    FORGET_AFTER = 1024

    def __init__(self, total: int, per_user: int | None = None,
                 uncapped: Iterable[Hashable] = (), lookahead: int = 0) -> None:
        if total < 1:
            raise ValueError(f"need at least one slot, not {total}")
        per_user = default_per_user(total) if per_user is None else per_user
        if per_user < 1:
            raise ValueError(f"a user needs at least one slot, not {per_user}")
        self.total = total
        self.per_user = min(per_user, total)
        #: users who may hold every slot (the daemon's own account)
        self.uncapped = frozenset(uncapped)
        self.free = total
        #: slots held now, by user (users holding none are left out)
        self.held: dict[Hashable, int] = {}
        # user -> request -> its tickets in order (finished ones are skipped lazily)
        self._queues: dict[Hashable, dict[Hashable, deque[Ticket]]] = {}
        # when each user, and each (user, request), was last given a slot
        self._user_served: dict[Hashable, int] = {}
        self._request_served: dict[tuple[Hashable, Hashable], int] = {}
        self._forget_at = self.FORGET_AFTER
        self._clock = itertools.count()
        #: tickets waiting for a slot
        self.waiting = 0
        #: how many waiting tickets may be told to get ready at once, and those told
        self.lookahead = lookahead
        self._readying: set[Ticket] = set()

    def ticket(self, user: Hashable, request: Hashable = None) -> Ticket:
        """A place in the queue of `user`'s `request`, or a slot at once if one is free for
        that user and nobody waits."""
        ticket = Ticket()
        if self.free > 0 and not self.waiting and self._under_cap(user):
            self._grant(ticket, user, request)
        else:
            self._enqueue(ticket, user, request)
            self.waiting += 1
            self._dispatch()  # a slot another user's cap left free
            self._look_ahead()
        return ticket

    def add_key(self, ticket: Ticket, user: Hashable, request: Hashable = None) -> None:
        """Let `ticket` also take the turn of `user`'s `request` (another request waits for
        the same build)."""
        if not ticket.done:
            self._enqueue(ticket, user, request)
            self._dispatch()
            self._look_ahead()

    def _enqueue(self, ticket: Ticket, user: Hashable, request: Hashable) -> None:
        self._queues.setdefault(user, {}).setdefault(request, deque()).append(ticket)

    async def wait(self, ticket: Ticket) -> None:
        """Wait until `ticket` holds a slot; on cancellation, give up the place (or slot)."""
        try:
            await ticket.event.wait()
        except BaseException:
            self.give_up(ticket)
            raise

    async def wait_ready(self, ticket: Ticket) -> None:
        """Wait until `ticket` may get ready: it is among the next `lookahead` to be granted
        (`upcoming`), or granted. On cancellation, give up the place (or slot)."""
        try:
            await ticket.ready.wait()
        except BaseException:
            self.give_up(ticket)
            raise

    def give_up(self, ticket: Ticket) -> None:
        """Give back the slot `ticket` holds, or its place in the queue (once)."""
        if ticket.granted:
            self.release(ticket)
        elif not ticket.done:
            ticket.done = True
            self.waiting -= 1
            self._readying.discard(ticket)
            self._look_ahead()

    async def acquire(self, user: Hashable, request: Hashable = None) -> Ticket:
        """A slot for `user`; hand the ticket to `release` when done with it."""
        await trio.lowlevel.checkpoint_if_cancelled()
        ticket = self.ticket(user, request)
        await self.wait(ticket)
        return ticket

    def release(self, ticket: Ticket) -> None:
        """Give back the slot `ticket` holds: it goes to the next turn (`_dispatch`)."""
        assert ticket.granted, "released a slot that was never granted"
        held = self.held[ticket.user] - 1
        if held:
            self.held[ticket.user] = held
        else:
            del self.held[ticket.user]
        self.free += 1
        assert self.free <= self.total, "released more slots than acquired"
        self._dispatch()
        self._look_ahead()

    def _dispatch(self) -> None:
        """Hand free slots to waiting tickets, a turn at a time: to the user served least
        recently among those under their cap, and to that user's request served least
        recently."""
        user_served, request_served = self._user_served, self._request_served
        while self.free > 0 and self.waiting:
            users = [u for u in self._queues if self._under_cap(u)]
            if not users:
                return  # who waits holds their share: the slot waits for another user
            user = min(users, key=lambda u: user_served.get(u, -1))
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
            self.waiting -= 1
            self._grant(ticket, user, request)

    def _under_cap(self, user: Hashable) -> bool:
        return self.held.get(user, 0) < self.per_user or user in self.uncapped

    def upcoming(self, count: int) -> list[Ticket]:
        """The waiting tickets `_dispatch` would grant next, in order, were `count` slots
        free and none held (each slot held now ends some time; the turns after it are the
        same): up to `count`. Nothing is changed but what `_dispatch` would change too
        (given-up tickets at the front of a queue are dropped)."""
        picked: list[Ticket] = []
        held: dict[Hashable, int] = {}
        # the forecast's own turns, after every real one
        user_served: dict[Hashable, int] = {}
        request_served: dict[tuple[Hashable, Hashable], int] = {}
        later = itertools.count(_AFTER_EVERY_TURN)

        emptied: list[tuple[Hashable, Hashable]] = []

        def first_free(user: Hashable, request: Hashable) -> Ticket | None:
            queue = self._queues[user][request]
            while queue and queue[0].done:
                queue.popleft()
            if not queue:
                emptied.append((user, request))
            return next((t for t in queue if not t.done and t not in picked), None)

        while len(picked) < count:
            # the user served least recently under the cap, then their request served least
            # recently, each with a ticket left to grant (ties: the first, as `min` picks)
            best: tuple[int, Hashable, Hashable, Ticket] | None = None
            for user, requests in self._queues.items():
                if held.get(user, 0) >= self.per_user and user not in self.uncapped:
                    continue
                served = user_served.get(user, self._user_served.get(user, -1))
                if best is not None and served >= best[0]:
                    continue
                turns = [(request_served.get((user, r), self._request_served.get((user, r), -1)),
                          r) for r in requests]
                for _turn, request in sorted(turns, key=lambda t: t[0]):
                    ticket = first_free(user, request)
                    if ticket is not None:
                        best = (served, user, request, ticket)
                        break
            if best is None:
                break
            _served, user, request, ticket = best
            picked.append(ticket)
            held[user] = held.get(user, 0) + 1
            user_served[user] = request_served[(user, request)] = next(later)
        for user, request in emptied:  # as `_dispatch` leaves them: no empty queue
            requests = self._queues.get(user, {})
            if request in requests and not requests[request]:
                del requests[request]
                if not requests:
                    del self._queues[user]
        return picked

    def _look_ahead(self) -> None:
        """Tell the next tickets to be granted to get ready, up to `lookahead` at once."""
        if len(self._readying) >= self.lookahead or not self.waiting:
            return
        for ticket in self.upcoming(self.lookahead):
            if len(self._readying) >= self.lookahead:
                return
            if ticket not in self._readying:
                self._readying.add(ticket)
                ticket.ready.set()

    def _grant(self, ticket: Ticket, user: Hashable, request: Hashable) -> None:
        self.free -= 1
        self.held[user] = self.held.get(user, 0) + 1
        ticket.user = user
        ticket.done = True
        self._serve(user, request)
        self._readying.discard(ticket)
        ticket.ready.set()
        ticket.event.set()

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
