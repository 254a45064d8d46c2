"""Packages: selectors loaded into a graph with closures and content-addressed uids.

`PackageGraph.load(selector)` renders a recipe, loads its dependencies along each kind of
edge with the flags RECIPES.md prescribes, and computes the package's uid from what can
change its output. Packages are cached by (name, flags); `invalidate_files` drops exactly the
packages whose render read a changed file, and every package depending on them. The cache is
bounded (least recently used packages go first, never one a cached package depends on), so
a stream of distinct flag sets cannot grow the daemon for good.

Closures are lists in post-order: a package's dependencies come before it, each uid once, so
sourcing their `env` files in list order lets dependents prepend their link flags last.
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ixd import platforms
from ixd.descriptor import Descriptor, parse_descriptor
from ixd.errors import DependencyCycle
from ixd.fetch import url_basename
from ixd.hosttools import HostVersions
from ixd.nodes import Node, Source
from ixd.recipes import RecipeTree, recipe_file
from ixd.selector import (
    EdgeKind,
    Selector,
    child_flags,
    kind_of,
    validate_flag_value,
    validate_package_name,
)

PackageKey = tuple[str, tuple[tuple[str, str], ...]]

UID_LENGTH = 32
#: how many packages a graph keeps cached by default
DEFAULT_MAX_PACKAGES = 20_000


def content_hash(data: Any) -> str:
    """The uid of any JSON-able value: sha256 of its canonical JSON, shortened."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:UID_LENGTH]


def store_name(name: str) -> str:
    """`bin/hello` → `hello`; `bld/host/cc` → `host-cc`; `bin/x/t.sh` → `x-t`."""
    parts = name.removesuffix(".sh").split("/")[1:] or [name]
    return "-".join(p for p in parts if p)


@dataclass(eq=False)
class Package:
    key: PackageKey
    name: str
    flags: dict[str, str]
    descriptor: Descriptor
    uid: str
    #: the store dir of a buildable package; None for a hub
    out_dir: str | None
    tools: tuple[Package, ...] = ()
    host_libs: tuple[Package, ...] = ()
    target_libs: tuple[Package, ...] = ()
    data: tuple[Package, ...] = ()
    #: lib.deps, recursively (without the package itself)
    lib_closure: tuple[Package, ...] = ()
    #: what must be present at run time, the package itself last
    run_closure: tuple[Package, ...] = ()
    #: the node that builds it (None for a hub)
    node: Node | None = None
    files: frozenset[Path] = field(default_factory=frozenset)
    #: the keys of the packages loaded along its edges (what it depends on directly)
    deps: tuple[PackageKey, ...] = ()

    @property
    def kind(self) -> str:
        return self.flags["kind"]

    @property
    def buildable(self) -> bool:
        return self.out_dir is not None

    @functools.cached_property
    def selector(self) -> Selector:
        return Selector(self.name, self.key[1])

    @functools.cached_property
    def display_name(self) -> str:
        """The selector without the flags every package has anyway (host target, own kind)."""
        shown = [(k, v) for k, v in self.key[1]
                 if not (k == "kind" and v == kind_of(self.name)) and k != "target"]
        return str(Selector(self.name, tuple(shown)))

    def build_inputs(self) -> tuple[Package, ...]:
        return self.tools + self.host_libs + self.target_libs + self.data

    def __repr__(self) -> str:
        return f"Package({self.selector}, uid={self.uid})"


def _unique(packages: Iterable[Package]) -> tuple[Package, ...]:
    seen: set[str] = set()
    result = []
    for p in packages:
        if p.uid not in seen:
            seen.add(p.uid)
            result.append(p)
    return tuple(result)


def _dirs(packages: Iterable[Package]) -> list[str]:
    return [p.out_dir for p in packages if p.out_dir is not None]


class PackageGraph:
    """Loads and caches packages for one daemon configuration.

    At most `max_packages` packages stay cached (checked after each top-level load): the
    least recently used go first, except that a package stays while a cached package depends
    on it, so every cached package's dependencies are cached too and `invalidate_files` still
    finds every package a changed file reaches.
    """

    def __init__(self, tree: RecipeTree, store: Path, host: str | None = None,
                 max_packages: int = DEFAULT_MAX_PACKAGES) -> None:
        if max_packages < 1:
            raise ValueError(f"a package graph needs room for a package, not {max_packages}")
        self.tree = tree
        self.store = Path(store)
        self.host = host or platforms.host_name()
        self.max_packages = max_packages
        # least recently used first
        self._packages: OrderedDict[PackageKey, Package] = OrderedDict()
        # key -> the keys of the cached (or loading) packages that depend on it directly
        self._dependents: dict[PackageKey, set[PackageKey]] = {}
        # passed over by eviction for their dependents' sake, not used since
        self._kept: set[PackageKey] = set()
        self._by_file: dict[Path, set[PackageKey]] = {}
        self._lock = threading.RLock()
        self.renders = 0
        self.evicted = 0
        self.host_versions = HostVersions()

    # --- loading ------------------------------------------------------------------------

    def load(self, selector: Selector) -> Package:
        """A top-level package: `target` defaults to the host, `kind` to its name's kind."""
        validate_package_name(selector.name)
        flags = dict(selector.flags)
        flags["target"] = platforms.resolve(flags.get("target", "host"), self.host)
        flags.setdefault("kind", kind_of(selector.name))
        with self._lock:
            package = self._load(selector.name, flags, ())
            if len(self._packages) > self.max_packages:
                self._evict()
            return package

    def load_all(self, selectors: Sequence[Selector]) -> list[Package]:
        return [self.load(s) for s in selectors]

    def _load(self, name: str, flags: dict[str, str], stack: tuple[PackageKey, ...]) -> Package:
        key: PackageKey = (name, tuple(sorted(flags.items())))
        cached = self._packages.get(key)
        if cached is not None:
            self._packages.move_to_end(key)
            if self._kept:
                self._kept.discard(key)
            return cached
        if key in stack:
            chain = " -> ".join(f"{Selector(k[0], k[1])} ({recipe_file(k[0])})"
                                for k in (*stack[stack.index(key):], key))
            raise DependencyCycle(f"dependency cycle: {chain}; remove one of these edges")
        deps: dict[PackageKey, None] = {}  # those it is registered as a dependent of, in order
        try:
            return self._load_new(name, flags, key, (*stack, key), deps)
        except BaseException:
            self._drop_dependent(key, deps)  # a load that failed depends on nothing
            raise

    def _load_new(self, name: str, flags: dict[str, str], key: PackageKey,
                  stack: tuple[PackageKey, ...], deps: dict[PackageKey, None]) -> Package:
        validate_package_name(name)
        for flag, value in flags.items():  # recipes paste flags raw: data only, always
            validate_flag_value(value, flag)
        rendered = self.tree.render(name, self._context(name, flags))
        self.renders += 1
        descriptor = parse_descriptor(rendered.descriptor, recipe_file(name))
        is_hub = descriptor.is_hub

        def edge(kind: EdgeKind, selectors: Sequence[Selector]) -> list[Package]:
            loaded = []
            for sel in selectors:
                child = child_flags(kind, flags, is_hub, dict(sel.flags), self.host)
                child["target"] = platforms.resolve(child.get("target", "host"), self.host)
                dep = self._load(sel.name, child, stack)
                self._dependents.setdefault(dep.key, set()).add(key)
                deps[dep.key] = None
                loaded.append(dep)
            return loaded

        tool_roots = edge("bld_tool", descriptor.bld_deps)
        tools = _unique(p for t in tool_roots for p in t.run_closure)
        induced = [s for t in tool_roots for s in t.descriptor.ind_deps]
        target_libs = _unique(
            p for lib in edge("target_lib", [*descriptor.target_libs, *induced])
            for p in (*lib.lib_closure, lib)
        )
        host_libs = _unique(
            p for lib in edge("host_lib", descriptor.host_libs) for p in (*lib.lib_closure, lib)
        )
        data = _unique(p for d in edge("data", descriptor.bld_data) for p in d.run_closure)
        lib_closure = _unique(
            p for lib in edge("lib_dep", descriptor.lib_deps) for p in (*lib.lib_closure, lib)
        )
        run_parts: list[Package] = []
        for dep in edge("run_dep", descriptor.run_deps) + edge("data", descriptor.run_data):
            run_parts.extend(dep.run_closure)
        if flags["kind"] == "lib":
            for lib in lib_closure:
                run_parts.extend(lib.run_closure)
            for lib in target_libs:
                for d in edge("data", lib.descriptor.run_data):
                    run_parts.extend(d.run_closure)

        package = Package(
            key=key, name=name, flags=flags, descriptor=descriptor, uid="", out_dir=None,
            tools=tools, host_libs=host_libs, target_libs=target_libs, data=data,
            lib_closure=lib_closure, files=rendered.files, deps=tuple(deps),
        )
        if is_hub:
            package.uid = content_hash(
                {"hub": name, "kind": flags["kind"], "run": [p.uid for p in _unique(run_parts)]}
            )
        else:
            self._make_buildable(package)
        package.run_closure = _unique((*run_parts, package))
        self._packages[key] = package
        for path in rendered.files:
            self._by_file.setdefault(path, set()).add(key)
        return package

    def _context(self, name: str, flags: Mapping[str, str]) -> dict[str, Any]:
        target = platforms.describe(flags["target"])
        host = platforms.describe(self.host)
        kind = flags["kind"]
        context: dict[str, Any] = dict(flags)
        context.update(
            host=host,
            target=target,
            name=name,
            basename=posixpath.basename(name.removesuffix(".sh").removesuffix("/ix")),
            uniq_id=content_hash([name, sorted(flags.items())]),
            native=host["name"] == target["name"],
            tool=name.startswith("bld/"),
            kind=kind,
        )
        context["host_versions"] = self.host_versions
        context[kind] = True
        context[target["os"]] = True
        context[target["arch"]] = True
        return context

    def _make_buildable(self, package: Package) -> None:
        """The build node decides the uid: everything that can change the output."""
        d = package.descriptor
        tool_dirs = _dirs(package.tools)
        env = {
            "IX_B_DIR": ":".join(tool_dirs),
            "IX_H_DIR": ":".join(_dirs(package.host_libs)),
            "IX_T_DIR": ":".join(_dirs(package.target_libs)),
            "PATH": ":".join(f"{t}/bin" for t in tool_dirs) or "/nonexistent",
        }
        sources = tuple(Source(f.url, f.sha256, url_basename(f.url)) for f in d.fetch)
        inputs = package.build_inputs()
        package.uid = content_hash({
            "name": package.name,
            "kind": package.kind,
            "target": package.flags["target"],
            "exec": d.script_exec,
            "script": d.script_data,
            "env": env,
            "inputs": [p.uid for p in inputs],
            "sources": [[s.filename, s.sha256] for s in sources],
            "net": d.net,
        })
        out = str(self.store / f"{package.uid}-{package.kind}-{store_name(package.name)}")
        package.out_dir = out
        package.node = Node(
            uid=package.uid,
            kind="build",
            name=package.display_name,
            deps=(*[s.sha256 for s in sources], *[p.uid for p in inputs if p.buildable]),
            inputs=(*_dirs(inputs), *[str(self.store.parent / "src" / s.sha256) for s in sources]),
            outputs=(out,),
            command=d.script_exec,
            stdin=d.script_data,
            env=env,
            net=d.net,
            sources=sources,
            meta={"package": package.name, "flags": dict(package.flags)},
            timeout=d.timeout,
        )

    # --- cache invalidation ---------------------------------------------------------------

    def invalidate_files(self, paths: Iterable[Path]) -> int:
        """Drop the packages whose render read any of `paths`, and their dependents."""
        changed = [Path(p) for p in paths]
        with self._lock:
            stale: set[PackageKey] = set()
            todo = [k for p in changed for k in self._by_file.get(p, ())]
            while todo:
                key = todo.pop()
                if key in stale:
                    continue
                stale.add(key)
                todo.extend(self._dependents.get(key, ()))
            for key in stale:
                package = self._packages.get(key)
                if package is not None:
                    self._forget(package)
                self._dependents.pop(key, None)  # they are all stale too
            self.tree.invalidate(changed)
            return len(stale)

    # --- the bound ------------------------------------------------------------------------

    def _evict(self) -> None:
        """Drop least recently used packages until at most `max_packages` are cached (lock
        held). A package that a cached package depends on is passed over (moved to the back)
        until its dependents are gone, and then, unless used meanwhile, it is next to go:
        dependencies have no cycles, so some cached package has no cached dependents, and
        each pass over the cache drops at least one."""
        packages, dependents, kept = self._packages, self._dependents, self._kept
        while len(packages) > self.max_packages:
            key, package = next(iter(packages.items()))
            if key in dependents:
                packages.move_to_end(key)
                kept.add(key)
                continue
            self._forget(package)
            self.evicted += 1
            for dep in package.deps:
                if dep in kept and dep not in dependents:  # only kept for this one
                    packages.move_to_end(dep, last=False)

    def _forget(self, package: Package) -> None:
        """Drop a cached package and every index entry naming it (lock held)."""
        key = package.key
        del self._packages[key]
        self._kept.discard(key)
        for path in package.files:
            keys = self._by_file.get(path)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_file[path]
        self._drop_dependent(key, package.deps)

    def _drop_dependent(self, key: PackageKey, deps: Iterable[PackageKey]) -> None:
        """`key` no longer depends on `deps` (lock held)."""
        for dep in deps:
            dependents = self._dependents.get(dep)
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._dependents[dep]

    def __len__(self) -> int:
        return len(self._packages)


def walk_closure(targets: Iterable[Package]) -> Iterator[Package]:
    """Every package needed to build and run `targets`, dependencies first, each uid once."""
    seen: set[str] = set()
    stack: list[tuple[Package, bool]] = [(p, False) for p in reversed(list(targets))]
    while stack:
        package, expanded = stack.pop()
        if expanded:
            yield package
            continue
        if package.uid in seen:
            continue
        seen.add(package.uid)
        stack.append((package, True))
        children = [*package.build_inputs(), *package.run_closure[:-1]]
        stack.extend((c, False) for c in reversed(children) if c.uid not in seen)
