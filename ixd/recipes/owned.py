"""Bytes charged to owners item by item: the one account of the daemon's per-user bounds
(the package cache, `ixd.recipes.packages`; the render store, `ixd.recipes.rendercache`).

Clients choose flags, so every cache a request fills is bounded by bytes, and one user's
part of it by a share: each item (a package, a kept render) is charged to the uid whose
request made it (None: the daemon's own), and each owner's items are kept in use order so
that the least recently used of an owner over their share go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

#: who an item counts against: the uid whose request made it (None: the daemon's own)
Owner = int | None

K = TypeVar("K", bound=Hashable)


class OwnedBytes(Generic[K]):
    """Items with their bytes and owner; the totals in all and by owner."""

    def __init__(self) -> None:
        #: the bytes of every item
        self.total = 0
        #: the bytes of each owner's items (an owner with none is absent)
        self.by_owner: dict[Owner, int] = {}
        self._items: dict[K, tuple[int, Owner]] = {}
        #: each owner's items, least recently used first
        self._owned: dict[Owner, OrderedDict[K, None]] = {}

    def charge(self, item: K, size: int, owner: Owner) -> None:
        """`item` (not charged yet) counts `size` bytes against `owner`, as used last."""
        if item in self._items:
            raise KeyError(f"{item!r} is charged already")
        self._items[item] = (size, owner)
        self.total += size
        self.by_owner[owner] = self.by_owner.get(owner, 0) + size
        self._owned.setdefault(owner, OrderedDict())[item] = None

    def discharge(self, item: K) -> tuple[int, Owner] | None:
        """`item` no longer counts: its bytes and owner, or None if it did not."""
        found = self._items.pop(item, None)
        if found is None:
            return None
        size, owner = found
        self.total -= size
        owned = self._owned[owner]
        del owned[item]
        if owned:
            self.by_owner[owner] -= size
        else:
            del self.by_owner[owner], self._owned[owner]
        return found

    def touch(self, item: K) -> None:
        """`item` used now: the last of its owner's to go."""
        self._owned[self._items[item][1]].move_to_end(item)

    def owner(self, item: K) -> Owner:
        return self._items[item][1]

    def size(self, item: K) -> int:
        return self._items[item][0]

    def of(self, owner: Owner) -> int:
        return self.by_owner.get(owner, 0)

    def owned(self, owner: Owner) -> OrderedDict[K, None]:
        """`owner`'s items, least recently used first (empty if none; the caller may reorder
        them, not add or remove)."""
        return self._owned.get(owner, OrderedDict())

    def owners(self) -> list[Owner]:
        return list(self._owned)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def check_invariants(self) -> None:
        """The totals are the sums of the items' bytes, each owner's order holds exactly
        their items (raises AssertionError)."""
        assert self.total == sum(size for size, _ in self._items.values())
        sums: dict[Owner, int] = {}
        for item, (size, owner) in self._items.items():
            sums[owner] = sums.get(owner, 0) + size
            assert item in self._owned[owner], (item, owner)
        assert sums == self.by_owner, (sums, self.by_owner)
        assert sum(len(o) for o in self._owned.values()) == len(self._items)
        assert all(self._owned.values()), "an owner without items is kept"
