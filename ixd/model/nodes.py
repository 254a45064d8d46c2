"""The build plan as plain data: nodes an executor runs, nothing else.

A plan is `{"nodes": [node...], "targets": [uid...]}`. Every node is a small frozen record
that dumps to JSON as it is, so `ixc plan` and snapshot tests are free.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import asdict, dataclass, field
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
    #: argv of the build command (empty for fetch and realm nodes)
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
    #: build nodes: the sandbox shows the host's system folders (/usr, /bin, /lib, ...),
    #: read-only; otherwise only the node's inputs (docs/recipes.md, "The build's view of
    #: the host"). Package builds say which they need; the daemon's own helper builds
    #: (realm fix-ups, cache unpacking) run the host's tools.
    host_view: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

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
            host_view=bool(data.get("host_view", True)),
        )


@dataclass(frozen=True)
class Plan:
    nodes: tuple[Node, ...]
    #: the uids the caller asked for, in request order
    targets: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"nodes": [n.to_json() for n in self.nodes], "targets": list(self.targets)}


def url_basename(url: str) -> str:
    """The last path segment of `url` (no query, no fragment, percent-decoded).

    Falls back to "source" when there is no usable segment (`http://host/`, `..`, ...).
    """
    path = urllib.parse.urlsplit(url).path
    name = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        return "source"
    return name
