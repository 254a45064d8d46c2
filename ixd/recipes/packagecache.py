"""The packages a graph keeps loaded: by key, least recently used first, with who depends on
whom, bounded by count and by bytes (`ixd.recipes.owned`: one owner's share of them).

A package stays while a cached package depends on it, so every cached package's
dependencies are cached too, and a changed file reaches every package it changes through
`dependents`. Eviction passes such a package over (moves it to the back) until its dependents
are gone, and then, unless it was used meanwhile, it is next to go: dependencies have no
cycles, so some cached package has no cached dependents; a whole pass that drops nothing (an
owner's packages all needed by others') ends it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

from ixd.recipes.owned import OwnedBytes, Owner

PackageKey = tuple[str, tuple[tuple[str, str], ...]]


class Cached(Protocol):
    """What the cache needs of a package: its key and the keys it depends on directly."""

    @property
    def key(self) -> PackageKey: ...

    @property
    def deps(self) -> tuple[PackageKey, ...]: ...


P = TypeVar("P", bound=Cached)


class PackageCache(Generic[P]):
    """Not thread-safe: its graph's lock guards it."""

    def __init__(self, max_packages: int, max_bytes: int, user_share: float,
                 uncapped: frozenset[Owner]) -> None:
        if max_packages < 1:
            raise ValueError(f"a package graph needs room for a package, not {max_packages}")
        self.max_packages = max_packages
        self.max_bytes = max_bytes
        #: the bytes one owner's packages may take, and the owners not held to it
        self.user_bytes = int(max_bytes * user_share)
        self.uncapped = uncapped
        #: least recently used first
        self._packages: OrderedDict[PackageKey, P] = OrderedDict()
        self._bytes: OwnedBytes[PackageKey] = OwnedBytes()
        #: key -> the keys of the cached (or loading) packages that depend on it directly
        self._dependents: dict[PackageKey, set[PackageKey]] = {}
        #: passed over by eviction for their dependents' sake, not used since
        self._kept: set[PackageKey] = set()
        self.evicted = 0

    @property
    def bytes(self) -> int:
        """The estimated bytes of the cached packages."""
        return self._bytes.total

    @property
    def owner_bytes(self) -> dict[Owner, int]:
        """`bytes` by owner (an owner with none is absent)."""
        return self._bytes.by_owner

    def owner(self, key: PackageKey) -> Owner:
        """Whose load made the cached package `key`."""
        return self._bytes.owner(key)

    def get(self, key: PackageKey) -> P | None:
        """The cached package `key`, now the most recently used."""
        package = self._packages.get(key)
        if package is not None:
            self._packages.move_to_end(key)
            self._bytes.touch(key)
            if self._kept:
                self._kept.discard(key)
        return package

    def size(self, key: PackageKey) -> int:
        """The bytes the cached package `key` counts for."""
        return self._bytes.size(key)

    def peek(self, key: PackageKey) -> P | None:
        """The cached package `key`, its place in the use order unchanged."""
        return self._packages.get(key)

    def add(self, package: P, size: int, owner: Owner) -> None:
        """Cache a package newly loaded; its `size` bytes count against `owner`."""
        self._packages[package.key] = package
        self._bytes.charge(package.key, size, owner)

    def depend(self, key: PackageKey, dep: PackageKey) -> None:
        """The package `key` (cached or loading) depends on `dep` directly."""
        dependents = self._dependents.get(dep)
        if dependents is None:
            self._dependents[dep] = {key}
        else:
            dependents.add(key)

    def undepend(self, key: PackageKey, deps: Iterator[PackageKey] | tuple[PackageKey, ...]
                 | dict[PackageKey, None]) -> None:
        """`key` no longer depends on `deps`."""
        for dep in deps:
            dependents = self._dependents.get(dep)
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._dependents[dep]

    def dependents(self, key: PackageKey) -> frozenset[PackageKey]:
        return frozenset(self._dependents.get(key, ()))

    def forget_dependents(self, key: PackageKey) -> None:
        """The packages depending on `key` are all gone too (an invalidation drops them)."""
        self._dependents.pop(key, None)

    def remove(self, key: PackageKey) -> P:
        """Drop the cached package `key` (it no longer depends on anything)."""
        package = self._packages.pop(key)
        self._bytes.discharge(key)
        self._kept.discard(key)
        self.undepend(key, package.deps)
        return package

    def bound(self, forget: Callable[[P], None]) -> None:
        """Each owner within their share, the cache within its bytes and count: the least
        recently used packages dropped, `forget(package)` told of each."""
        for owner in self._bytes.owners():
            if owner not in self.uncapped and self._bytes.of(owner) > self.user_bytes:
                self._evict(self._bytes.owned(owner), self._over_share(owner), forget)
        self._evict(self._packages, lambda: (len(self._packages) > self.max_packages
                                             or self._bytes.total > self.max_bytes), forget)

    def _over_share(self, owner: Owner) -> Callable[[], bool]:
        return lambda: self._bytes.of(owner) > self.user_bytes

    def _evict(self, order: OrderedDict[PackageKey, P] | OrderedDict[PackageKey, None],
               over: Callable[[], bool], forget: Callable[[P], None]) -> None:
        """Drop the least recently used packages of `order` (the cache, or one owner's part
        of it) while `over()`; a package a cached package depends on is passed over."""
        dependents, kept = self._dependents, self._kept
        passed = 0
        while over() and order and passed < len(order):
            key = next(iter(order))
            if key in dependents:
                order.move_to_end(key)
                kept.add(key)
                passed += 1
                continue
            package = self.remove(key)
            forget(package)
            self.evicted += 1
            passed = 0
            for dep in package.deps:
                if dep in kept and dep not in dependents and dep in order:
                    order.move_to_end(dep, last=False)  # only kept for this one

    def keys(self) -> list[PackageKey]:
        return list(self._packages)

    def values(self) -> list[P]:
        return list(self._packages.values())

    def __contains__(self, key: object) -> bool:
        return key in self._packages

    def __iter__(self) -> Iterator[PackageKey]:
        return iter(self._packages)

    def __len__(self) -> int:
        return len(self._packages)

    def check_invariants(self) -> None:
        """The byte counts add up to the packages cached, by owner; every cached package's
        dependencies are cached, and every dependent named is cached and names its
        dependency (raises AssertionError)."""
        self._bytes.check_invariants()
        assert set(self._bytes) == set(self._packages)
        for key, package in self._packages.items():
            assert package.key == key
            for dep in package.deps:
                assert dep in self._packages, (key, dep)
                assert key in self._dependents.get(dep, ()), (key, dep)
        for dep, dependents in self._dependents.items():
            assert dependents, dep
            for key in dependents:
                assert key in self._packages, (dep, key)
                assert dep in self._packages[key].deps, (dep, key)
        assert self._kept <= set(self._packages)
