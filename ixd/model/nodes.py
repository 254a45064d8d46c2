"""The build plan as plain data: nodes an executor runs, nothing else.

A plan is `{"nodes": [node...], "targets": [uid...]}`. Every node is a small frozen record
that dumps to JSON as it is, so `ixc plan` and snapshot tests are free.
"""

from __future__ import annotations

import copy
import dataclasses
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: "substitute": a build node whose entry comes from a binary cache (`ixd.cache.substitute`)
NodeKind = Literal["fetch", "build", "realm", "substitute"]


@dataclass(frozen=True)
class Source:
    """One fetched source of a build node."""

    url: str
    sha256: str
    #: the name the source gets inside the build's `$src` directory
    filename: str


@dataclass(frozen=True)
class Node:
    uid: str
    kind: NodeKind
    #: what the node is about, for messages: "bin/hello", a URL, or "realm alice"
    name: str
    #: uids of the nodes that must be valid before this one runs
    deps: tuple[str, ...]
    #: paths the node reads (store dirs of its inputs, cached sources)
    inputs: tuple[str, ...]
    #: paths the node creates; outputs[0] is its store dir (or cache file for a fetch)
    outputs: tuple[str, ...]
    #: argv of the build command (empty for a fetch; a realm's: how its fix-up hooks run)
    command: tuple[str, ...] = ()
    #: text fed to the command on stdin
    stdin: str = ""
    #: the whole environment of the command, nothing else is inherited
    env: dict[str, str] = field(default_factory=dict)
    #: the command may use the network (only fetch nodes, or `net: true` recipes)
    net: bool = False
    sources: tuple[Source, ...] = ()
    #: realm nodes: what meta.json records (realm name, package list, flags)
    meta: dict[str, Any] = field(default_factory=dict)
    #: build nodes: seconds the recipe asks for beyond the daemon's --build-timeout (0: none)
    timeout: float = 0.0
    #: the kind of the store entry the node makes (`bin`, `lib`, `rlm`, ...; empty for a
    #: fetch): what the store's table records
    entry_kind: str = ""
    #: build nodes: the machine every ELF file of the output must be for (`aarch64`: the
    #: package's target platform), checked before it enters the store; "" checks nothing
    elf_machine: str = ""
    #: build nodes: the sandbox shows the host's system folders (/usr, /bin, /lib, ...),
    #: read-only; otherwise only the node's inputs (docs/recipes.md, "The build's view of
    #: the host"). Package builds say which they need; the daemon's own helper builds
    #: (realm fix-ups, cache unpacking) run the host's tools.
    host_view: bool = True

    def to_json(self) -> dict[str, Any]:
        """The node as plain data (what `asdict` gives, made directly: a big plan has
        thousands of nodes, and `asdict` copies every value deeply)."""
        return {
            "uid": self.uid, "kind": self.kind, "name": self.name, "deps": self.deps,
            "inputs": self.inputs, "outputs": self.outputs, "command": self.command,
            "stdin": self.stdin, "env": dict(self.env), "net": self.net,
            "sources": tuple({"url": s.url, "sha256": s.sha256, "filename": s.filename}
                             for s in self.sources),
            "meta": copy.deepcopy(self.meta) if self.meta else {}, "timeout": self.timeout,
            "entry_kind": self.entry_kind, "elf_machine": self.elf_machine,
            "host_view": self.host_view,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Node:
        return Node(
            uid=data["uid"],
            kind=data["kind"],
            name=data["name"],
            deps=tuple(data["deps"]),
            inputs=tuple(data["inputs"]),
            outputs=tuple(data["outputs"]),
            command=tuple(data["command"]),
            stdin=data["stdin"],
            env=dict(data["env"]),
            net=data["net"],
            sources=tuple(Source(**s) for s in data["sources"]),
            meta=dict(data["meta"]),
            timeout=float(data.get("timeout", 0.0)),
            entry_kind=str(data.get("entry_kind", "")),
            elf_machine=str(data.get("elf_machine", "")),
            host_view=bool(data.get("host_view", True)),
        )


@dataclass(frozen=True)
class Plan:
    nodes: tuple[Node, ...]
    #: the uids the caller asked for, in request order (none: every node)
    targets: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"nodes": [n.to_json() for n in self.nodes], "targets": list(self.targets)}


def needed_plan(plan: Plan, is_valid: Callable[[Node], bool],
                substitutes: Mapping[str, Sequence[str]] | None = None) -> Plan:
    """The part of `plan` that must run against the store as it is: walking from the
    targets, a node whose entry is valid needs none of its build inputs, and neither does a
    node a trusted cache holds (`substitutes`: uid -> its run-time references), which
    becomes a `substitute` node waiting only for those references. A realm node is the
    exception: its inputs are what it links, needed while it stands, so they stay (valid
    ones cost nothing). A substitute whose references are not all in the plan is built as
    planned.

    Plain data in, plain data out: `ixc plan` shows the whole plan, the scheduler runs
    this part of it. The caller keeps the whole plan from garbage collection meanwhile, so
    what was judged valid here is still there when a later node reads it."""
    substitutes = substitutes or {}
    by_uid = {n.uid: n for n in plan.nodes}
    substituted: dict[str, tuple[str, ...]] = {}
    needed: set[str] = set()
    stack = list(plan.targets) or list(by_uid)  # no targets: every node is asked for
    while stack:
        uid = stack.pop()
        node = by_uid.get(uid)
        if node is None or uid in needed:
            continue
        needed.add(uid)
        if node.kind == "realm":
            stack.extend(node.deps)
            continue
        if is_valid(node):
            continue
        references = substitutes.get(uid)
        if node.kind == "build" and references is not None and all(
                r in by_uid for r in references):
            substituted[uid] = tuple(references)
            stack.extend(references)
        else:
            stack.extend(node.deps)
    if len(needed) == len(plan.nodes) and not substituted:
        return plan
    return Plan(tuple(dataclasses.replace(n, kind="substitute", deps=substituted[n.uid])
                      if n.uid in substituted else n
                      for n in plan.nodes if n.uid in needed), plan.targets)


def url_basename(url: str) -> str:
    """The last path segment of `url` (no query, no fragment, percent-decoded).

    Falls back to "source" when there is no usable segment (`http://host/`, `..`, ...).
    """
    path = urllib.parse.urlsplit(url).path
    name = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
    return name if is_plain_file_name(name) else "source"


def is_plain_file_name(name: str) -> bool:
    """Whether `name` names a file inside a folder, never the folder itself, its parent or
    a path below it (a source's name in a build's `$src`)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name
