"""What the daemon remembers of realms between requests, so that a change that changes
nothing costs no planning and no database: each generation's parsed state, and each realm
as its last change left it (`Settled`)."""

from __future__ import annotations

from dataclasses import dataclass

from ixd.model.nodes import Plan
from ixd.model.realm import RealmState
from ixd.store.db import Generation
from ixd.wire.errors import BadFlag

#: parsed states kept at most; past it the cache starts again (it is a cache, not a record)
MAX_STATES = 10_000


@dataclass(frozen=True)
class Settled:
    """A realm as its last change (under its lock) left it: what a change that changes
    nothing is answered from, without planning or the database. Dropped whenever anything
    else changes the realm (purge, rollback, eviction); stale once a recipe changed."""

    generation: Generation
    owner: int
    state: RealmState
    plan: Plan
    #: `Catalog.changes` before the plan was made
    recipes: int


class RealmCache:
    def __init__(self) -> None:
        # (realm, generation number, created) -> its parsed state
        self._states: dict[tuple[str, int, float], RealmState] = {}
        #: realm name -> how its last change left it
        self.settled: dict[str, Settled] = {}

    def state_of(self, generation: Generation) -> RealmState:
        """A generation's realm state, parsed once (generations never change; a purged
        realm's numbers come again, hence the time in the key). BadFlag if it holds a flag
        refused since it was recorded."""
        key = _state_key(generation)
        state = self._states.get(key)
        if state is None:
            if len(self._states) > MAX_STATES:
                self._states.clear()
            state = self._states[key] = RealmState.from_json(generation.state)
        return state

    def recorded_state(self, generation: Generation) -> RealmState | None:
        """A generation's state; None if it holds a flag refused since it was recorded."""
        try:
            return self.state_of(generation)
        except BadFlag:
            return None

    def remember(self, generation: Generation, state: RealmState) -> None:
        """`state` is what the new `generation` records: no need to parse it again."""
        self._states[_state_key(generation)] = state

    def settle(self, realm: str, settled: Settled) -> None:
        self.settled[realm] = settled

    def forget(self, realm: str) -> None:
        """The realm changed other than by a change: its settled form no longer holds."""
        self.settled.pop(realm, None)

    def owner(self, realm: str) -> int | None:
        """The realm's owner as its last change recorded it, if it is settled here."""
        settled = self.settled.get(realm)
        return None if settled is None else settled.owner


def _state_key(generation: Generation) -> tuple[str, int, float]:
    return (generation.realm, generation.number, generation.created)
