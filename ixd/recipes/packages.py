"""Packages: selectors loaded into a graph with closures and content-addressed uids.

`PackageGraph.load(selector)` renders a recipe, loads its dependencies along each kind of
edge with the flags docs/recipes.md prescribes, and computes the package's uid from what can
change its output. Packages are cached by (name, flags); `invalidate_files` drops exactly the
packages whose render read a changed file, and every package depending on them (whose renders
are kept and reused). The cache is bounded (least recently used packages go first, never one
a cached package depends on), so a stream of distinct flag sets cannot grow the daemon for
good.

The build closures (`tools`, `target_libs`, `host_libs`, `lib_closure`, `run_deps`) are in
stal/IX's order, a package before what it reaches, so the build environment's dir lists come
out as stal/IX's (reversed: dependencies first). `run_closure` is dependencies first, the
package itself last.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import posixpath
import shutil
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ixd.model import platforms
from ixd.model.layout import entry_path
from ixd.model.nodes import Node, Source, url_basename
from ixd.model.selector import (
    ONE_LEVEL_FLAGS,
    EdgeKind,
    Selector,
    child_flags,
    kind_of,
    parse_selector,
    recipe_selector,
    validate_flag_value,
    validate_package_name,
)
from ixd.recipes.descriptor import Descriptor, parse_descriptor
from ixd.recipes.hostcapture import Captured, HostCapture
from ixd.recipes.hostfiles import find_program
from ixd.recipes.hosttools import HostVersions
from ixd.recipes.rendercache import RenderStore, fingerprint
from ixd.recipes.tree import REALM_FLAG, RecipeTree, recipe_file
from ixd.wire.errors import DependencyCycle

PackageKey = tuple[str, tuple[tuple[str, str], ...]]

UID_LENGTH = 32
#: how many packages a graph keeps cached by default: stal/IX's CI set alone loads 27,416
#: (five platforms), and a warm `dep` of it must not render any of them again
DEFAULT_MAX_PACKAGES = 60_000


def content_hash(data: Any) -> str:
    """The uid of any JSON-able value: sha256 of its canonical JSON, shortened."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:UID_LENGTH]


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
    #: lib.deps, recursively (without the package itself), in stal/IX's order: each package
    #: before its own dependencies
    lib_closure: tuple[Package, ...] = ()
    #: what must be present at run time besides itself, in stal/IX's order
    run_deps: tuple[Package, ...] = ()
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
        return recipe_selector(self.name, self.key[1])

    @functools.cached_property
    def display_name(self) -> str:
        """The selector without the flags every package has anyway (host target, own kind)."""
        shown = [(k, v) for k, v in self.key[1]
                 if not (k == "kind" and v == kind_of(self.name))
                 and k != "target" and k != REALM_FLAG]
        return str(recipe_selector(self.name, tuple(shown)))

    def build_inputs(self) -> tuple[Package, ...]:
        return self.tools + self.host_libs + self.target_libs + self.data

    def __repr__(self) -> str:
        return f"Package({self.selector}, uid={self.uid})"


#: the cyclic collector's thresholds for a process that holds a package graph (Python's:
#: 700, 10, 10; ixd sets these). A graph holds tens of thousands of long-lived packages and
#: loading a realm allocates hundreds of thousands of objects: at the default, every tenth
#: older collection scans the whole heap with the interpreter lock held (340 ms once every
#: few re-plans of `bench/plan.py`'s realm; with these, a re-plan after an edit takes 103 ms
#: instead of 132, without such pauses).
GC_THRESHOLDS = (50_000, 20, 20)


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


def _run_deps(package: Package) -> tuple[Package, ...]:
    return package.run_deps


def _lib_deps(package: Package) -> tuple[Package, ...]:
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
    seen: set[str] = set()
    post: list[Package] = []
    for root in reversed(roots):
        if root.uid in seen:
            continue
        seen.add(root.uid)
        for package in reversed(closure(root)):
            if package.uid not in seen:
                seen.add(package.uid)
                post.append(package)
        post.append(root)
    post.reverse()
    return tuple(post)


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


def pkg_name(name: str, kind: str) -> str:
    """The package's file name, as stal/IX makes it: `lib/gperftools` → `lib-gperftools`,
    `bld/host/cc` (a bin) → `bin-host-cc`, `bin/x/t.sh` → `bin-x-t`. Store dirs end in it."""
    norm = _norm_name(name)
    rest = norm.split("/", 1)[1] if "/" in norm else norm
    return _canon(f"{kind}-{rest}")


def _norm_name(name: str) -> str:
    """stal/IX's `norm_name`: the recipe file without `.sh` and a last `/ix`."""
    return recipe_file(name).removesuffix(".sh").removesuffix("/ix")


def uniq_id(name: str, kind: str) -> str:
    """`uniq_id` of the render context: `lib/gperftools` → `lib_gperftools`, as stal/IX
    makes it (a C identifier that names the package, the same for all its flag sets)."""
    return pkg_name(name, kind).replace("-", "_")


def _isfile(path: object) -> bool:
    """`isfile(path)`: whether the daemon's host has that regular file."""
    return isinstance(path, str) and os.path.isfile(path)


#: the names of the render context the daemon's settings give (`ixd --set NAME=VALUE`), with
#: their defaults; `{store}` and `{root}` stand for the daemon's store and its parent
DEFAULT_SETTINGS: Mapping[str, str] = {
    "default_clang": "21",
    "default_allocator": "gperftools",
    "ix_boot_path": "/usr/local/bin:/usr/bin:/bin{llvm}",
    "ix_extract": "bsdtar --no-same-permissions --no-same-owner -x -f",
    "ix_dir": "{root}",
    "ix_trash_dir": "{root}/trash",
    # the build tools: `boot`, built from source on stage 0's captured compiler, every
    # build seeing only its inputs; `host`, the host's own (bld/host/*), in a sandbox that
    # shows the host's system folders (docs/recipes.md, "Stages")
    "ix_tools": "boot",
}


def render_settings(store: Path, given: Mapping[str, str]) -> dict[str, str]:
    """The defaults with `given` on top; `stalix` and other names are taken as they come."""
    settings = {**DEFAULT_SETTINGS, **given}
    root = str(Path(store).parent)
    llvm = _host_llvm_bin()
    return {k: v.replace("{root}", root).replace("{store}", str(store))
            .replace("{llvm}", f":{llvm}" if llvm else "")
            for k, v in settings.items()}


def _host_llvm_bin() -> str | None:
    """The newest `/usr/lib/llvm-N/bin`: where Debian keeps `clang-cpp` and `lld` under the
    names stal/IX's bootstrap looks for (`/usr/bin` has them only as `clang-cpp-N`)."""
    best: tuple[int, str] | None = None
    try:
        names = os.listdir("/usr/lib")
    except OSError:
        return None
    for entry in names:
        version = entry.removeprefix("llvm-")
        if entry.startswith("llvm-") and version.isdigit():
            folder = f"/usr/lib/{entry}/bin"
            if os.path.isdir(folder) and (best is None or int(version) > best[0]):
                best = (int(version), folder)
    return best[1] if best else None


class PackageGraph:
    """Loads and caches packages for one daemon configuration.

    At most `max_packages` packages stay cached (checked after each top-level load): the
    least recently used go first, except that a package stays while a cached package depends
    on it, so every cached package's dependencies are cached too and `invalidate_files` still
    finds every package a changed file reaches.
    """

    def __init__(self, tree: RecipeTree, store: Path, host: str | None = None,
                 max_packages: int = DEFAULT_MAX_PACKAGES,
                 settings: Mapping[str, str] | None = None,
                 host_tools_cache: Path | None = None,
                 render_store: Path | None = None,
                 host_capture_cache: Path | None = None) -> None:
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
        self.host_versions = HostVersions(host_tools_cache)
        #: stage 0's captures of host programs (`host_capture` in the render context)
        self.host_capture = HostCapture(host_capture_cache)
        self.settings = render_settings(self.store, settings or {})
        self._boot_tools: dict[str, str | None] = {}
        #: each package's render (descriptor and the files it read), kept while no file it
        #: read changes, even when the package is dropped because a dependency changed
        self._renders: dict[PackageKey, tuple[Descriptor, frozenset[Path]]] = {}
        #: the keys of kept renders whose templates never name `target_realm`: the same
        #: render serves the package in every realm (and outside any)
        self._realm_free: set[PackageKey] = set()
        #: the build node of each build uid while a package holds it
        self._nodes: weakref.WeakValueDictionary[str, Node] = weakref.WeakValueDictionary()
        #: renders kept across restarts (ixd.recipes.rendercache), if given a file
        self.render_store = (RenderStore(render_store, fingerprint(self.settings, self.host))
                             if render_store is not None else None)

    # --- loading ------------------------------------------------------------------------

    def load(self, selector: Selector) -> Package:
        """A top-level package: `target` defaults to the host, `kind` to its name's kind."""
        name = normal_name(validate_package_name(selector.name))
        flags = dict(selector.flags)
        for flag, value in flags.items():  # a client's: the strict charset
            validate_flag_value(value, flag)
        flags["target"] = platforms.resolve(flags.get("target", "host"), self.host)
        flags.setdefault("kind", kind_of(name))
        with self._lock:
            try:
                package = self._load(name, flags, ())
            finally:
                if self.render_store is not None:
                    self.render_store.flush()
            if len(self._packages) > self.max_packages:
                self._evict()
            if len(self._renders) > 2 * self.max_packages:
                self._prune_renders()
            return package

    def load_all(self, selectors: Sequence[Selector]) -> list[Package]:
        return [self.load(s) for s in selectors]

    def load_tools(self, selectors: Sequence[Selector]) -> list[Package]:
        """Packages a recipe names as build tools (`fix.deps`: the realm's fix-up tools):
        loaded as along a `bld.deps` edge, with only `target=host` and `kind=bin` under
        their written flags (the recipe charset)."""
        with self._lock:
            loaded = []
            for sel in selectors:
                flags = child_flags("bld_tool", {}, False, dict(sel.flags), self.host)
                flags["target"] = platforms.resolve(flags.get("target", "host"), self.host)
                loaded.append(self._load(normal_name(sel.name), flags, ()))
            if len(self._packages) > self.max_packages:
                self._evict()
            return loaded

    def _load(self, name: str, flags: dict[str, str], stack: tuple[PackageKey, ...]) -> Package:
        key: PackageKey = (name, tuple(sorted(flags.items())))
        cached = self._packages.get(key)
        if cached is not None:
            self._packages.move_to_end(key)
            if self._kept:
                self._kept.discard(key)
            return cached
        if key in stack:
            chain = " -> ".join(f"{recipe_selector(k[0], k[1])} ({recipe_file(k[0])})"
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
            validate_flag_value(value, flag, from_recipe=True)

        def depend(dep: Package) -> Package:
            self._dependents.setdefault(dep.key, set()).add(key)
            deps[dep.key] = None
            return dep

        introduced: list[PackageKey] = []

        def intro(text: str) -> Package:
            """`intro(selector)`: load a package with this one's flags (for its uid)."""
            sel = parse_selector(str(text).strip(), from_recipe=True)
            child = {**{k: v for k, v in flags.items() if k not in ONE_LEVEL_FLAGS},
                     **dict(sel.flags)}
            child["target"] = platforms.resolve(child.get("target", "host"), self.host)
            introduced.append(key)
            return depend(self._load(normal_name(sel.name), child, stack))

        cached = self._renders.get(key)
        realm_free_key = _without_realm(key)
        if cached is None and realm_free_key in self._realm_free:
            cached = self._renders[realm_free_key]  # another realm's render, realm-blind
        if cached is None and self.render_store is not None:
            cached = self._stored_render(name, key, realm_free_key)
        if cached is None:
            probed: list[bool] = []
            rendered = self.tree.render(name, self._context(name, flags, intro, probed))
            self.renders += 1
            descriptor = parse_descriptor(rendered.descriptor, recipe_file(name))
            files = rendered.files
            if not introduced:  # a render that names another package's uid goes with it
                self._keep_render(key, descriptor, files)
                if not rendered.reads_realm:
                    self._keep_render(realm_free_key, descriptor, files)
                    self._realm_free.add(realm_free_key)
                if self.render_store is not None and not probed:  # realm-blind: kept once
                    kept_as = key if rendered.reads_realm else realm_free_key
                    self.render_store.put(kept_as, rendered.descriptor, rendered.text, files,
                                          rendered.reads_realm)
        else:
            descriptor, files = cached
        is_hub = descriptor.is_hub
        if not is_hub and (flags.get("boot") or name.startswith(BOOT_PREFIX)):
            # a bootstrap build passes `boot` on to the libraries it links (stal/IX)
            flags = {**flags, "boot": "1"}

        def edge(kind: EdgeKind, selectors: Sequence[Selector]) -> list[Package]:
            loaded = []
            for sel in selectors:
                child = child_flags(kind, flags, is_hub, dict(sel.flags), self.host)
                child["target"] = platforms.resolve(child.get("target", "host"), self.host)
                loaded.append(depend(self._load(normal_name(sel.name), child, stack)))
            return loaded

        # the order of every list follows stal/IX's, so the dirs in a build's environment
        # come out in its order (docs/recipes.md, "Closures")
        tools = visit(edge("bld_tool", descriptor.bld_deps), _run_deps)
        induced = [s for t in tools for s in t.descriptor.ind_deps]
        target_libs = visit(edge("target_lib", [*descriptor.target_libs, *induced]),
                            _lib_deps)
        host_libs = visit(edge("host_lib", [*descriptor.host_libs, *induced]), _lib_deps)
        data = _unique(edge("data", descriptor.bld_data))
        lib_closure = visit(edge("lib_dep", descriptor.lib_deps), _lib_deps)
        run_roots = edge("run_dep", descriptor.run_deps) + edge("data", descriptor.run_data)
        if flags["kind"] == "lib":
            run_roots.extend(lib_closure)
        for lib in target_libs:
            run_roots.extend(edge("data", lib.descriptor.run_data))
        run_deps = visit(run_roots, _run_deps)

        package = Package(
            key=key, name=name, flags=flags, descriptor=descriptor, uid="", out_dir=None,
            tools=tools, host_libs=host_libs, target_libs=target_libs, data=data,
            lib_closure=lib_closure, files=files, deps=tuple(deps),
            run_deps=run_deps,
        )
        if is_hub:
            # as in stal/IX, a hub is what it brings at run time: hubs that bring the same
            # builds are one node of every walk (docs/recipes.md, "Hubs")
            package.uid = content_hash({"hub": [p.uid for p in run_deps if p.buildable]})
        else:
            self._make_buildable(package)
        package.run_closure = (*reversed(run_deps), package)
        self._packages[key] = package
        for path in files:
            self._by_file.setdefault(path, set()).add(key)
        return package

    def _stored_render(self, name: str, key: PackageKey, realm_free_key: PackageKey
                       ) -> tuple[Descriptor, frozenset[Path]] | None:
        """A render kept by an earlier daemon run, now kept in memory too (lock held)."""
        assert self.render_store is not None
        stored = self.render_store.get(key)
        if stored is None and realm_free_key != key:
            stored = self.render_store.get(realm_free_key)
            if stored is not None and stored[2]:  # it names target_realm: not this realm's
                stored = None
        if stored is None:
            return None
        raw, files, reads_realm = stored
        descriptor = parse_descriptor(raw, recipe_file(name))
        files = self.tree.shared_file_set(files)
        self._keep_render(key, descriptor, files)
        if not reads_realm:
            self._keep_render(realm_free_key, descriptor, files)
            self._realm_free.add(realm_free_key)
        return descriptor, files

    def _keep_render(self, key: PackageKey, descriptor: Descriptor,
                     files: frozenset[Path]) -> None:
        self._renders[key] = (descriptor, files)
        for path in files:  # from now on a change to one of them finds it
            self._by_file.setdefault(path, set()).add(key)

    def _context(self, name: str, flags: Mapping[str, str],
                 intro: Callable[[str], Package], probed: list[bool]) -> dict[str, Any]:
        """What a recipe sees, in stal/IX's layers: the daemon's settings (`ixd --set`), the
        names the engine sets, `KIND`/`OS`/`ARCH` as True, then the package's flags.
        `probed` gets an item when the render asks the host something (such a render is
        not kept across restarts)."""
        boot_tool: Callable[[str], str | None] = self._boot_tool
        isfile: Callable[[object], bool] = _isfile
        capture: Callable[..., Captured] = self._capture
        program: Callable[[str], str | None] = self._program
        host_versions: Mapping[str, str] = self.host_versions
        if self.render_store is not None:
            boot_tool, isfile = _asked(boot_tool, probed), _asked(isfile, probed)
            capture, program = _asked(capture, probed), _asked(program, probed)
            host_versions = _AskedMapping(host_versions, probed)
        target = platforms.describe(flags["target"])
        host = platforms.describe(self.host)
        kind = flags["kind"]
        settings = self.settings
        context: dict[str, Any] = {
            **settings,
            "ix_boot_tool": boot_tool,
            "host_capture": capture,
            "host_program": program,
            "host": host,
            "tool": name.startswith("bld/"),
            "boot": name.startswith(BOOT_PREFIX),
            "name": recipe_file(name),
            "basename": posixpath.basename(_norm_name(name)),
            "uniq_id": uniq_id(name, kind),
            "native": host["id"] == target["id"],
            "isfile": isfile,
            "intro": intro,
            "host_versions": host_versions,
            kind: True,
            target["os"]: True,
            target["arch"]: True,
        }
        context.update(flags)
        context["target"] = target
        if context["boot"]:
            context["setx"] = "1"
        return context

    def _boot_tool(self, tool: str) -> str | None:
        """`ix_boot_tool(name)`: the host's tool of that name on `ix_boot_path`, or None."""
        found = self._boot_tools.get(tool, "")
        if found == "":
            found = shutil.which(str(tool), path=self.settings["ix_boot_path"])
            self._boot_tools[tool] = found
        return found

    def _capture(self, programs: Sequence[str], folders: Sequence[str] = ()) -> Captured:
        """`host_capture(programs, folders)`: what stage 0 copies of the host (programs by
        name, found on `ix_boot_path`, or by absolute path; folders whole)."""
        return self.host_capture.capture(
            [str(p) for p in programs], [str(f) for f in folders], self._boot_dirs())

    def _program(self, name: str) -> str | None:
        """`host_program(name)`: the real path of the host's program `name` on
        `ix_boot_path` (where a recipe finds a folder to capture beside it), or None."""
        found = find_program(str(name), self._boot_dirs())
        return os.path.realpath(found) if found else None

    def _boot_dirs(self) -> list[str]:
        return [d for d in self.settings["ix_boot_path"].split(":") if d]

    def _make_buildable(self, package: Package) -> None:
        """The build node decides the uid: everything that can change the output."""
        d = package.descriptor
        bins = [p for p in (*package.tools, *package.data) if p.out_dir is not None]
        env = {
            "IX_B_DIR": ":".join(_dirs(reversed(bins))),
            "IX_H_DIR": ":".join(_dirs(reversed(package.host_libs))),
            "IX_T_DIR": ":".join(_dirs(reversed(package.target_libs))),
            "PATH": ":".join(f"{t}/bin" for t in _dirs(bins)) or "/nonexistent",
        }
        sources = tuple(Source(f.url, f.sha256, url_basename(f.url)) for f in d.fetch)
        inputs = _unique(p for p in package.build_inputs() if p.buildable)
        # the host's system folders only where the recipe or one of its tools needs them
        host_view = d.host_view != "none" or any(t.descriptor.host_view == "tool"
                                                  for t in package.tools)
        # as in stal/IX, flags (the target among them) count by what they render: two flag
        # sets that render the same build are one build
        package.uid = build_uid(package.name, package.kind, d.script_exec, d.script_data,
                                env, [p.uid for p in inputs], sources, d.net,
                                host_view)
        same = self._nodes.get(package.uid)
        if same is not None:
            # another flag set of this build: one node, one copy of its (long) script text
            package.out_dir = same.outputs[0]
            package.node = dataclasses.replace(  # its own name; the rest is shared
                same, name=package.display_name,
                meta={"package": package.name, "flags": dict(package.flags)})
            package.descriptor = dataclasses.replace(d, script_data=same.stdin)
            kept = self._renders.get(package.key)
            if kept is not None:  # the kept render shares the text too
                self._renders[package.key] = (package.descriptor, kept[1])
            return
        out = str(entry_path(self.store, package.uid, pkg_name(package.name, package.kind)))
        package.out_dir = out
        package.node = self._nodes[package.uid] = Node(
            uid=package.uid,
            kind="build",
            name=package.display_name,
            deps=(*[s.sha256 for s in sources], *[p.uid for p in inputs]),
            inputs=(*_dirs(inputs), *[str(self.store.parent / "src" / s.sha256) for s in sources]),
            outputs=(out,),
            command=d.script_exec,
            stdin=d.script_data,
            env=env,
            net=d.net,
            sources=sources,
            meta={"package": package.name, "flags": dict(package.flags)},
            timeout=d.timeout,
            entry_kind=package.kind,
            host_view=host_view,
        )

    # --- cache invalidation ---------------------------------------------------------------

    def invalidate_files(self, paths: Iterable[Path]) -> int:
        """Drop the packages whose render read any of `paths`, and their dependents. Only
        the renders that read them are dropped: a dependent's render stays, to be reused
        when it is loaded again (its closures and uid are made anew, which is cheap)."""
        changed = [Path(p) for p in paths]
        with self._lock:
            stale: set[PackageKey] = set()
            direct = {k for p in changed for k in self._by_file.get(p, ())}
            for key in direct:
                self._drop_render(key)
            todo = list(direct)
            while todo:
                key = todo.pop()
                if key in stale:
                    continue
                stale.add(key)
                todo.extend(self._dependents.get(key, ()))
            for key in stale:
                package = self._packages.get(key)
                if package is not None:
                    self._forget(package, keep_render=True)
                self._dependents.pop(key, None)  # they are all stale too
            self.tree.invalidate(changed)
            if self.render_store is not None:
                self.render_store.forget(changed)
                self.render_store.flush()
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

    def _forget(self, package: Package, keep_render: bool = False) -> None:
        """Drop a cached package and every index entry naming it (lock held); with
        `keep_render`, its render stays cached, and so do the index entries that find it."""
        key = package.key
        del self._packages[key]
        self._kept.discard(key)
        if not (keep_render and key in self._renders):
            self._renders.pop(key, None)
            self._realm_free.discard(key)
            self._unindex(key, package.files)
        self._drop_dependent(key, package.deps)

    def _drop_render(self, key: PackageKey) -> None:
        """Drop a cached render (lock held); its index entries go too unless its package is
        still cached (invalidation then forgets the package, and they go with it)."""
        cached = self._renders.pop(key, None)
        self._realm_free.discard(key)
        if cached is not None and key not in self._packages:
            self._unindex(key, cached[1])

    def _prune_renders(self) -> None:
        """Drop the renders kept for packages not loaded again since (lock held)."""
        for key in [k for k in self._renders if k not in self._packages]:
            self._drop_render(key)

    def _unindex(self, key: PackageKey, files: Iterable[Path]) -> None:
        for path in files:
            keys = self._by_file.get(path)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_file[path]

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


def _asked(call: Callable[..., Any], probed: list[bool]) -> Callable[..., Any]:
    def asking(*args: Any) -> Any:
        probed.append(True)
        return call(*args)
    return asking


class _AskedMapping(Mapping[str, str]):
    """`host_versions` as a render sees it: a lookup marks the render as asking the host."""

    def __init__(self, mapping: Mapping[str, str], probed: list[bool]) -> None:
        self._mapping = mapping
        self._probed = probed

    def __getitem__(self, key: str) -> str:
        self._probed.append(True)
        return self._mapping[key]

    def __iter__(self) -> Iterator[str]:
        self._probed.append(True)
        return iter(self._mapping)

    def __len__(self) -> int:
        return len(self._mapping)


def _without_realm(key: PackageKey) -> PackageKey:
    """The key of the same package outside any realm."""
    name, flags = key
    if not any(k == REALM_FLAG for k, _ in flags):
        return key
    return name, tuple(kv for kv in flags if kv[0] != REALM_FLAG)


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
