"""The ops that find and explain packages: `search` (names and descriptions across the
overlays, ranked; `prefix` lists names for completion), `show` (what one package is and
reads), `why` (the chain that pulls a package into a realm, like `nix why-depends`) and
`diff` (what changed between two generations of a realm, like `nix store
diff-closures`). None of them builds or changes anything.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import trio

from ixd.daemon import request_args
from ixd.daemon.catalog import Catalog
from ixd.daemon.emit import Emit
from ixd.daemon.identity import Caller
from ixd.daemon.realm_cache import RealmCache
from ixd.model.realm import RealmState, effective_selectors
from ixd.model.selector import parse_selector
from ixd.recipes.flagnames import flags_of
from ixd.recipes.package import Package, walk_closure
from ixd.store.db import BuildDatabase, Generation
from ixd.store.gc import realm_links
from ixd.wire.errors import NoSuchRealm, NotInRealm, RealmError
from ixd.wire.ops import DiffArgs, SearchArgs, ShowArgs, WhyArgs


class ValidUids(Protocol):
    def is_valid_uid(self, uid: str) -> bool: ...


class FindOps:
    def __init__(self, db: BuildDatabase, catalog: Catalog, cache: RealmCache,
                 store: ValidUids) -> None:
        self.db = db
        self.catalog = catalog
        self.cache = cache
        self.store = store

    async def op_search(self, args: SearchArgs, caller: Caller, emit: Emit) -> Any:
        """`terms`: every one must be in a package's name or description; `prefix`
        instead: the names that start with it (what completion offers)."""
        index = self.catalog.index
        if args.prefix is not None:
            return {"names": await trio.to_thread.run_sync(index.names, args.prefix)}
        terms = args.terms or []
        found = await trio.to_thread.run_sync(index.search, terms)
        return {"terms": terms, "total": len(found),
                "results": [{"name": f.recipe.name, "description": f.recipe.description}
                            for f in found[:args.limit]]}

    async def op_show(self, args: ShowArgs, caller: Caller, emit: Emit) -> Any:
        """One package as its recipe renders it (with the flags given in its selector)."""
        selector = request_args.selectors([args.package])[0]
        package = (await self.catalog.load([selector], caller.uid))[0]
        return await trio.to_thread.run_sync(self._describe, package)

    def _describe(self, package: Package) -> dict[str, Any]:
        descriptor = package.descriptor
        recipe = self.catalog.index.get(package.name)
        own = flags_of(self.catalog.names.of_files(package.files))
        reached = flags_of(self.catalog.names.of_files(
            {f for p in walk_closure([package]) for f in p.files})).keys() - own.keys()
        induced = [str(s) for t in package.tools for s in t.descriptor.ind_deps]
        deps = {
            "build tools": [str(s) for s in descriptor.bld_deps],
            "libraries": [str(s) for s in descriptor.target_libs],
            "libraries the toolchain adds": sorted(set(induced)),
            "host libraries": [str(s) for s in descriptor.host_libs],
            "libraries passed on to dependents": [str(s) for s in descriptor.lib_deps],
            "build data": [str(s) for s in descriptor.bld_data],
            "at run time": [str(s) for s in (*descriptor.run_deps, *descriptor.run_data)],
        }
        return {
            "name": package.name, "selector": package.display_name,
            "description": recipe.description if recipe else "",
            "recipe": str(recipe.file) if recipe else "",
            "version": descriptor.version,
            "sources": [f.url for f in descriptor.fetch],
            "flags": [{"name": n, "default": d} for n, d in sorted(own.items())],
            "dependencies_read": sorted(reached),
            "deps": {kind: names for kind, names in deps.items() if names},
            "kind": package.kind, "uid": package.uid, "out": package.out_dir,
            "built": package.buildable and self.store.is_valid_uid(package.uid),
            "hub": not package.buildable,
        }

    async def op_why(self, args: WhyArgs, caller: Caller, emit: Emit) -> Any:
        """The shortest chain from one of the realm's packages to `package`, each link
        with the kind of edge it follows."""
        wanted = args.package
        target = parse_selector(wanted)
        name = request_args.realm_name(args.realm, caller)
        state = await self._current_state(name)
        loaded = await trio.to_thread.run_sync(self.catalog.load_realm, name,
                                               effective_selectors(state), caller.uid)
        chain = await trio.to_thread.run_sync(why_chain, loaded.packages, target.name,
                                              dict(target.flags))
        if chain is None:
            raise NotInRealm(f"{wanted} is not in realm {name!r}, not even to build it "
                             f"(`ixc dep` lists what a package needs)")
        return {"realm": name, "package": wanted,
                "chain": [{"name": p.display_name, "edge": edge} for p, edge in chain]}

    async def op_diff(self, args: DiffArgs, caller: Caller, emit: Emit) -> Any:
        """What changed from generation `from` (default: the one before `to`) to `to`
        (default: the current one) of a realm: its packages and flags as asked for, and
        the store entries it links, by package."""
        name = request_args.realm_name(args.realm, caller)
        row = await trio.to_thread.run_sync(self.db.realm, name)
        generations = {g.number: g for g in
                       await trio.to_thread.run_sync(self.db.generations, name)}
        if row is None or not generations:
            raise NoSuchRealm(f"there is no realm {name!r}")
        to = int(row["current"]) if args.to is None else args.to
        before = sorted(n for n in generations if n < to)
        start = args.start if args.start is not None else before[-1] if before else to
        for number in (start, to):
            if number not in generations:
                raise RealmError(f"realm {name!r} has no generation {number}; it has "
                                 f"{', '.join(map(str, sorted(generations)))}")
        old, new = generations[start], generations[to]
        links = await trio.to_thread.run_sync(self._links, [old, new])
        names = await trio.to_thread.run_sync(self._entry_names, {*links[0], *links[1]})
        return {"realm": name, "from": start, "to": to,
                **state_changes(self.cache.state_of(old), self.cache.state_of(new)),
                "packages": closure_changes(links[0], links[1], names)}

    async def _current_state(self, realm: str) -> RealmState:
        generation = await trio.to_thread.run_sync(self.db.current_generation, realm)
        if generation is None:
            raise NoSuchRealm(f"there is no realm {realm!r}; name one with `ixc why PKG "
                              f"REALM`")
        return self.cache.state_of(generation)

    def _links(self, generations: Sequence[Generation]) -> list[list[str]]:
        """The store dirs each generation's realm entry links (blocking)."""
        found = []
        for generation in generations:
            if not os.path.isdir(generation.path):
                raise RealmError(f"generation {generation.number} of realm "
                                 f"{generation.realm!r} was collected: what it linked is "
                                 f"not known any more")
            found.append(realm_links(generation.path))
        return found

    def _entry_names(self, dirs: set[str]) -> dict[str, str]:
        """Each store dir's package name, without flags (blocking)."""
        names = {}
        for path in dirs:
            entry = self.db.store_entry(Path(path).name[:32])
            shown = entry["name"] if entry else Path(path).name[33:]
            names[path] = shown.split("(", 1)[0]
        return names


#: the edges a chain follows, by the package field holding them, with what they are
EDGES = (("run_deps", "needs at run time"), ("target_libs", "links"),
         ("lib_closure", "passes on"), ("host_libs", "links for the build host"),
         ("tools", "builds with"), ("data", "builds with the data"))


def why_chain(roots: Sequence[Package], name: str, flags: dict[str, str]
              ) -> list[tuple[Package, str]] | None:
    """The shortest chain of direct edges from one of `roots` (front first) to a package
    called `name` (with `flags` among its flags, if any): (package, the edge that leads to
    it) from the root (edge "in the realm") to the package; None if none reaches it."""
    def matches(p: Package) -> bool:
        return p.name == name and all(p.flags.get(k) == v for k, v in flags.items())

    came_from: dict[str, tuple[Package | None, str]] = {}
    queue: deque[Package] = deque()
    for root in roots:
        if root.uid not in came_from:
            came_from[root.uid] = (None, "in the realm")
            queue.append(root)
    while queue:
        package = queue.popleft()
        if matches(package):
            return _chain(package, came_from)
        for child, edge in _direct(package):
            if child.uid not in came_from:
                came_from[child.uid] = (package, edge)
                queue.append(child)
    return None


def _direct(package: Package) -> Iterator[tuple[Package, str]]:
    """The packages `package` loaded along its own edges (not through another package)."""
    direct = set(package.deps)
    for field, edge in EDGES:
        for child in getattr(package, field):
            if child.key in direct:
                yield child, edge


def _chain(end: Package, came_from: dict[str, tuple[Package | None, str]]
           ) -> list[tuple[Package, str]]:
    chain: list[tuple[Package, str]] = []
    package: Package | None = end
    while package is not None:
        parent, edge = came_from[package.uid]
        chain.append((package, edge))
        package = parent
    return chain[::-1]


def state_changes(old: RealmState, new: RealmState) -> dict[str, Any]:
    """The entries added, removed and with other flags; the realm flags before and after."""
    before = {str(e.selector): dict(e.flags) for e in old.entries}
    after = {str(e.selector): dict(e.flags) for e in new.entries}
    return {
        "added": [s for s in after if s not in before],
        "removed": [s for s in before if s not in after],
        "reflagged": [{"selector": s, "from": before[s], "to": after[s]}
                      for s in after if s in before and before[s] != after[s]],
        "flags": {"from": dict(old.flags), "to": dict(new.flags)},
    }


def closure_changes(old: Sequence[str], new: Sequence[str], names: dict[str, str]
                    ) -> dict[str, list[str]]:
    """The packages whose store entries a realm links, compared by name: added, removed,
    and changed (another entry: rebuilt with other flags, inputs or recipe)."""
    def by_name(dirs: Sequence[str]) -> dict[str, set[str]]:
        grouped: dict[str, set[str]] = {}
        for path in dirs:
            grouped.setdefault(names[path], set()).add(path)
        return grouped

    before, after = by_name(old), by_name(new)
    return {"added": sorted(after.keys() - before.keys()),
            "removed": sorted(before.keys() - after.keys()),
            "changed": sorted(n for n in after.keys() & before.keys() if after[n] != before[n])}


