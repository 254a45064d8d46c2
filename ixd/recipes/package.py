"""A loaded package and the pure functions on packages: uids (`content_hash`, `build_uid`),
names (`pkg_name`, `uniq_id`, `display_name`), the closure walks (`visit`, `walk_closure`), a
build's environment of store dirs, and what a package holds in memory (`package_bytes`).
Values and functions only: loading, caching and rendering are `ixd.recipes.packages`'.

May import: `ixd.wire`, `ixd.model`, and of `ixd.recipes` only the modules below the package
graph (`descriptor`, `tree`): never `packages` or what imports it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from sys import getsizeof
from typing import Any, Literal

from ixd.model.nodes import Node, Source
from ixd.model.selector import Selector, kind_of
from ixd.recipes.descriptor import Descriptor
from ixd.recipes.tree import REALM_FLAG, recipe_file

FlagsKey = tuple[tuple[str, str], ...]
PackageKey = tuple[str, FlagsKey]

UID_LENGTH = 32


def content_hash(data: Any) -> str:
    """The uid of any JSON-able value: sha256 of its canonical JSON, shortened."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:UID_LENGTH]


DirectEdge = Literal["bld_deps", "target_libs", "host_libs", "bld_data", "lib_deps",
                     "run_deps", "run_data"]
#: the edges of `Package.children`, in order
DIRECT_EDGES: tuple[DirectEdge, ...] = ("bld_deps", "target_libs", "host_libs", "bld_data",
                                        "lib_deps", "run_deps", "run_data")


def build_uid(name: str, kind: str, command: Sequence[str], script: str,
              env: Mapping[str, str], input_uids: Sequence[str], sources: Sequence[Source],
              net: bool, host_view: bool) -> str:
    """The uid of a recipe's build: everything that can change its output (the host's
    system folders in its view among them)."""
    return content_hash({
        "name": name,
        "kind": kind,
        "exec": list(command),
        "script": script,
        "env": dict(env),
        "inputs": list(input_uids),
        "sources": [[s.filename, s.sha256] for s in sources],
        "net": net,
        "host_view": host_view,
    })


def recipe_node_uid(node: Node, store: Path) -> str:
    """The uid `build_uid` gives what `node` says it builds (its package, command, script,
    environment, input entries of `store`, sources): a build node whose uid is not this one
    was not made from a recipe by ix, or was changed since."""
    input_uids = [Path(p).name[:UID_LENGTH] for p in node.inputs if Path(p).parent == store]
    return build_uid(str(node.meta.get("package", "")), node.entry_kind, node.command,
                     node.stdin, node.env, input_uids, node.sources, node.net, node.host_view)


@dataclass(eq=False, frozen=True)
class Package:
    """A loaded package, finished: its uid, closures and build node made before it is
    (`PackageGraph._load_new`), and never changed after."""

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
    #: lib.deps, recursively (without the package itself), in stal/IX's order: each package
    #: before its own dependencies
    lib_closure: tuple[Package, ...] = ()
    #: what must be present at run time besides itself, in stal/IX's order
    run_deps: tuple[Package, ...] = ()
    #: the node that builds it (None for a hub)
    node: Node | None = None
    files: frozenset[Path] = field(default_factory=frozenset)
    #: the keys of the packages loaded along its edges (what it depends on directly)
    deps: tuple[PackageKey, ...] = ()
    #: the packages its render loaded with `intro(...)`, in the order it did
    intro: tuple[Package, ...] = ()
    #: the packages loaded along its edges, each edge's in its recipe's order, the edges in
    #: `DIRECT_EDGES`' order (see `direct`)
    children: tuple[Package, ...] = ()

    @property
    def kind(self) -> str:
        return self.flags["kind"]

    @property
    def run_closure(self) -> tuple[Package, ...]:
        """What must be present at run time, dependencies first, the package itself last.
        Made when asked for, not kept: a package that held itself would be a reference
        cycle, freed only by the cyclic collector once the cache lets go of it."""
        return (*reversed(self.run_deps), self)

    @property
    def buildable(self) -> bool:
        return self.out_dir is not None

    @functools.cached_property
    def selector(self) -> Selector:
        # the key's flags are checked and sorted already: no need to check them again
        selector = object.__new__(Selector)
        object.__setattr__(selector, "name", self.name)
        object.__setattr__(selector, "flags", self.key[1])
        return selector

    @functools.cached_property
    def display_name(self) -> str:
        """The selector without the flags every package has anyway (host target, own kind)."""
        return display_name(self.key)

    def direct(self, edge: DirectEdge) -> tuple[Package, ...]:
        """The packages loaded along one kind of its edges, in its recipe's order:
        `target_libs` and `host_libs` end with the libraries its build tools induce."""
        if edge == "run_data":  # the last edge, and the one asked for most
            return self.children[len(self.children) - len(self.descriptor.run_data):]
        return self.edges()[DIRECT_EDGES.index(edge)]

    def edges(self) -> tuple[tuple[Package, ...], ...]:
        """`direct` of every edge, in `DIRECT_EDGES`' order."""
        written = self.descriptor.edge_counts  # the recipe's selectors
        children = self.children
        # the induced libraries are in `children` twice, after the target and host libraries
        induced = (len(children) - sum(written)) // 2
        bld, target, host, bld_data, lib, run, run_data = written
        target += induced
        host += induced
        a = bld
        b = a + target
        c = b + host
        e = c + bld_data
        f = e + lib
        g = f + run
        return (children[:a], children[a:b], children[b:c], children[c:e], children[e:f],
                children[f:g], children[g:g + run_data])

    def build_inputs(self) -> tuple[Package, ...]:
        return self.tools + self.host_libs + self.target_libs + self.data

    def __repr__(self) -> str:
        return f"Package({self.selector}, uid={self.uid})"


def display_name(key: PackageKey) -> str:
    """A package's selector without the flags every package has anyway (host target, own
    kind)."""
    name, flags = key
    kind = kind_of(name)
    shown = [f"{k}={v}" for k, v in flags
             if not (k == "kind" and v == kind) and k != "target" and k != REALM_FLAG]
    return f"{name}({','.join(shown)})" if shown else name


@dataclass(frozen=True)
class Build:
    """What makes a package buildable: its uid, store dir and node, and its descriptor
    (sharing the script text of another flag set of the same build); `shared`: another
    flag set made the node (its texts are that one's)."""

    uid: str
    out_dir: str
    node: Node
    descriptor: Descriptor
    shared: bool


def unique(packages: Iterable[Package]) -> tuple[Package, ...]:
    if isinstance(packages, (list, tuple)) and len(packages) < 2:
        return tuple(packages)
    seen: set[str] = set()
    result = []
    for p in packages:
        if p.uid not in seen:
            seen.add(p.uid)
            result.append(p)
    return tuple(result)


def store_dirs(packages: Iterable[Package]) -> list[str]:
    return [p.out_dir for p in packages if p.out_dir is not None]


def build_env(bins: Sequence[Package], hosts: Sequence[Package],
              targets: Sequence[Package]) -> dict[str, str]:
    """A build's environment of store dirs (docs/recipes.md, "The build environment"):
    dependencies first, as stal/IX's, and the tools' `bin/` on PATH in closure order."""
    return {
        "IX_B_DIR": ":".join(store_dirs(reversed(bins))),
        "IX_H_DIR": ":".join(store_dirs(reversed(hosts))),
        "IX_T_DIR": ":".join(store_dirs(reversed(targets))),
        "PATH": ":".join(f"{t}/bin" for t in store_dirs(bins)) or "/nonexistent",
    }


def run_deps_of(package: Package) -> tuple[Package, ...]:
    return package.run_deps


def lib_closure_of(package: Package) -> tuple[Package, ...]:
    return package.lib_closure


def visit(roots: Sequence[Package],
          closure: Callable[[Package], Sequence[Package]]) -> tuple[Package, ...]:
    """The packages reachable from `roots` (roots included), each uid once, in stal/IX's
    order: depth first, every package before the packages it reaches, earlier roots and
    children first (the reverse of a post-order walk over children taken last to first).

    `closure(p)` is p's whole closure, itself in this order (a package's `lib_closure` or
    `run_deps`). So the walk never descends: taken last to first, each package of a
    closure reaches only packages after it, already seen when it is reached; it comes out
    at once. (A walk that descended would read each closure again at every level.)"""
    if len(roots) < 2:  # most edges (closures already in order: no walk)
        if not roots:
            return ()
        root = roots[0]
        uid = root.uid
        return (root, *[p for p in closure(root) if p.uid != uid])
    seen: set[str] = set()
    see = seen.add
    post: list[Package] = []
    keep = post.append
    for root in reversed(roots):
        uid = root.uid
        if uid in seen:
            continue
        see(uid)
        for package in reversed(closure(root)):
            uid = package.uid
            if uid not in seen:
                see(uid)
                keep(package)
        keep(root)
    post.reverse()
    return tuple(post)


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


BOOT_PREFIX = "bld/boot/"


def normal_name(name: str) -> str:
    """`bin/x/ix.sh` names the package `bin/x` (stal/IX's recipes write both)."""
    return name[: -len("/ix.sh")] if name.endswith("/ix.sh") else name


def _canon(text: str) -> str:
    """stal/IX's package file name: letters and digits kept, `+` spelt `-plus-`, anything else
    a `-`, no `--`, no trailing `-`, lower case."""
    out = "".join(c if c.isascii() and c.isalnum() else "-plus-" if c == "+" else "-"
                  for c in text)
    while "--" in out:
        out = out.replace("--", "-")
    return out.rstrip("-").lower()


@functools.lru_cache(maxsize=65536)
def pkg_name(name: str, kind: str) -> str:
    """The package's file name, as stal/IX makes it: `lib/gperftools` → `lib-gperftools`,
    `bld/host/cc` (a bin) → `bin-host-cc`, `bin/x/t.sh` → `bin-x-t`. Store dirs end in it."""
    norm = norm_name(name)
    rest = norm.split("/", 1)[1] if "/" in norm else norm
    return _canon(f"{kind}-{rest}")


def norm_name(name: str) -> str:
    """stal/IX's `norm_name`: the recipe file without `.sh` and a last `/ix`."""
    return recipe_file(name).removesuffix(".sh").removesuffix("/ix")


@functools.lru_cache(maxsize=65536)
def uniq_id(name: str, kind: str) -> str:
    """`uniq_id` of the render context: `lib/gperftools` → `lib_gperftools`, as stal/IX
    makes it (a C identifier that names the package, the same for all its flag sets)."""
    return pkg_name(name, kind).replace("-", "_")


#: what the cache's own entries for a package cost: its place in the LRU orders, the
#: owner's count, the index of its files and dependents (per entry)
INDEX_ENTRY = 120


def package_bytes(package: Package, shared_node: bool) -> int:
    """About what `package` holds in memory (measured against tracemalloc in
    tests/test_package_cache.py): the objects it owns, shallow, with the texts of its
    descriptor and node unless it shares them with another flag set of the same build
    (`shared_node`). The packages it refers to are counted as themselves."""
    size = getsizeof
    d = package.descriptor
    total = (size(package) + size(package.__dict__) + size(package.key)
             + size(package.key[1]) + size(package.flags)
             + sum(map(size, package.flags.values()))
             + sum(map(size, (package.tools, package.host_libs, package.target_libs,
                              package.data, package.lib_closure, package.run_deps,
                              package.deps)))
             + INDEX_ENTRY * (3 + len(package.deps) + len(package.files)))
    if not shared_node:
        total += size(d) + size(d.script_data)
    node = package.node
    if node is not None:  # its own node: at least its name and meta (the flags again)
        total += size(node) + size(node.name) + size(node.meta) + 2 * size(package.flags)
        if not shared_node:
            total += (size(node.env) + sum(map(size, node.env.values()))
                      + size(node.inputs) + sum(map(size, node.inputs))
                      + size(node.deps))
    return total
