"""Every package of a closure, in the order stal/IX's `ix build` loads them (`ixc dep`).

stal/IX's loader finishes a package (puts it in its cache) only after everything its uid
needs: a build's build closures (tools, build data, target and host libraries), a hub's run
closure. The rest is computed lazily, the first time something asks: a build's run closure
(when a realm or the build graph needs it), a library's `lib.deps` (when a build links it).
So the order is not any one walk of the graph; this module replays stal/IX's evaluation over
packages ix has already loaded (`Package.direct` gives each edge's packages, the packages'
own closures the values), and lists each package the first time stal/IX would
finish it. Every package is listed, hubs that share a uid with another package included;
a package loaded twice with the same name and flags is listed once.

Pure over the loaded graph: nothing is rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter

from ixd.recipes.package import DIRECT_EDGES, Package

#: the lazily computed parts of a package, as stal/IX's cached methods
_RUN, _LIB, _TOOLS, _TARGET_LIBS, _HOST_LIBS = "run", "lib", "tools", "target_libs", "host_libs"
_PARTS = (_RUN, _LIB, _TOOLS, _TARGET_LIBS, _HOST_LIBS)


_uid = attrgetter("uid")

#: where each edge is in `Package.edges()`
_BLD_DEPS, _TARGET_LIBS_EDGE, _HOST_LIBS_EDGE, _BLD_DATA, _LIB_DEPS, _RUN_DEPS, _RUN_DATA = (
    DIRECT_EDGES.index(e) for e in ("bld_deps", "target_libs", "host_libs", "bld_data",
                                    "lib_deps", "run_deps", "run_data"))


def _run_value(package: Package) -> Sequence[Package]:
    return package.run_deps


def _lib_value(package: Package) -> Sequence[Package]:
    return package.lib_closure


class _Replay:
    """stal/IX's evaluation of one `ix build`, replayed: `load` is its loader's
    `load_package`, the other methods its packages' cached closures."""

    def __init__(self) -> None:
        #: finished packages, by identity (name and flags)
        self.finished: dict[tuple[str, tuple[tuple[str, str], ...]], Package] = {}
        # by id: the packages stay alive (their graph holds them) while the replay runs,
        # and a key's hash would be computed again at every look-up
        self._loaded: set[int] = set()
        self._done: dict[str, set[int]] = {part: set() for part in _PARTS}
        self._edges: dict[int, tuple[tuple[Package, ...], ...]] = {}

    def direct(self, package: Package, edge: int) -> tuple[Package, ...]:
        """The packages along one edge of `package` (its place in `DIRECT_EDGES`)."""
        edges = self._edges.get(id(package))
        if edges is None:
            edges = self._edges[id(package)] = package.edges()
        return edges[edge]

    def load(self, package: Package) -> None:
        if id(package) in self._loaded:
            return
        self._loaded.add(id(package))
        for introduced in package.intro:  # loaded while it renders
            self.load(introduced)
        if package.buildable:  # its uid hashes its build closures
            self.tools(package)
            self.loads(package, _BLD_DATA)
            self.target_libs(package)
            self.host_libs(package)
        else:  # a hub's uid hashes its run closure
            self.run(package)
        identity = (package.name, tuple(sorted(package.flags.items())))
        self.finished.setdefault(identity, package)

    def loads(self, package: Package, edge: int) -> tuple[Package, ...]:
        loaded = self.direct(package, edge)
        for child in loaded:
            self.load(child)
        return loaded

    def _first(self, package: Package, part: str) -> bool:
        """Whether `part` of `package` is asked for the first time (and is computed now)."""
        done = self._done[part]
        if id(package) in done:
            return False
        done.add(id(package))
        return True

    def tools(self, package: Package) -> None:
        if self._first(package, _TOOLS):
            self.visit(self.loads(package, _BLD_DEPS), _RUN)

    def libs(self, package: Package, edge: int, part: str) -> None:
        """Target or host libraries: the written ones loaded, then (the tools known) the
        induced ones, then their library closures."""
        if not self._first(package, part):
            return
        libs = self.direct(package, edge)
        written = len(package.descriptor.target_libs if edge == _TARGET_LIBS_EDGE
                      else package.descriptor.host_libs)
        for lib in libs[:written]:
            self.load(lib)
        self.tools(package)
        for lib in libs[written:]:
            self.load(lib)
        self.visit(libs, _LIB)

    def target_libs(self, package: Package) -> None:
        self.libs(package, _TARGET_LIBS_EDGE, _TARGET_LIBS)

    def host_libs(self, package: Package) -> None:
        self.libs(package, _HOST_LIBS_EDGE, _HOST_LIBS)

    def lib(self, package: Package) -> None:
        if self._first(package, _LIB):
            self.visit(self.loads(package, _LIB_DEPS), _LIB)

    def run(self, package: Package) -> None:
        if not self._first(package, _RUN):
            return
        roots = [*self.loads(package, _RUN_DEPS), *self.loads(package, _RUN_DATA)]
        if package.kind == "lib":
            self.lib(package)
            roots.extend(package.lib_closure)
        self.target_libs(package)
        for lib in package.target_libs:
            if lib.descriptor.run_data:
                roots.extend(self.loads(lib, _RUN_DATA))
        self.visit(roots, _RUN)

    def visit(self, roots: Sequence[Package], part: str) -> None:
        """stal/IX's walk of a closure: depth first from the last root, each uid once, the
        closure of every package met computed on the way.

        Computing a package's closure walked (and computed) the closure of everything in
        it, so only the roots can be met uncomputed; the walk through a computed one only
        marks its uids seen. And the uids seen matter only to an uncomputed root: they are
        gathered when one comes (most walks meet none)."""
        compute: Callable[[Package], None] = self.run if part == _RUN else self.lib
        value = _run_value if part == _RUN else _lib_value
        done = self._done[part]
        seen: set[str] = set()
        walked: list[Package] = []  # computed, in the order met; their uids not in `seen` yet
        for package in reversed(roots):
            if id(package) in done:
                walked.append(package)
                continue
            for before in walked:
                if before.uid not in seen:
                    seen.add(before.uid)
                    seen.update(map(_uid, value(before)))
            walked.clear()
            if package.uid not in seen:
                compute(package)
                walked.append(package)


def load_order(targets: Sequence[Package]) -> list[Package]:
    """Every package `ix build TARGETS...` loads, in stal/IX's order, each name and flag set
    once. As in a stal/IX realm, the target named last is loaded first."""
    replay = _Replay()
    builds: dict[str, Package] = {}
    for target in reversed(targets):
        replay.load(target)
        replay.run(target)
        for package in (target, *target.run_deps):
            if package.buildable:
                builds.setdefault(package.uid, package)
    # the build graph: each build, its run closure computed, then what it is built from
    # and what it needs at run time
    seen: set[str] = set()
    stack = list(reversed(builds.values()))
    while stack:
        package = stack.pop()
        if package.uid in seen:
            continue
        seen.add(package.uid)
        replay.run(package)
        reached = [*_build_inputs(package), *(p for p in package.run_deps if p.buildable)]
        stack.extend(reversed(reached))
    return list(replay.finished.values())


def _build_inputs(package: Package) -> list[Package]:
    """stal/IX's build dependencies: the buildable tools, build data, target and host
    libraries, in that order, each uid once."""
    seen: set[str] = set()
    out = []
    for p in (*package.tools, *package.data, *package.target_libs, *package.host_libs):
        if p.buildable and p.uid not in seen:
            seen.add(p.uid)
            out.append(p)
    return out
