"""A build node from the cluster, as the machine asked to build it sees it: checked, then
planned with what it needs (`check_cluster_node`, `inputs_plan`; pure, apart from the cache
look-ups `inputs_plan` is handed).

The node comes from whoever reached the Dask scheduler: hostile until checked, like a
client's bytes. It is built here only if it is exactly what ix makes from a recipe for this
store: a build node whose uid is the hash of its own content (`recipe_node_uid`: package,
command, script, environment, inputs, sources), so that what this machine signs under a uid
is a real build of that uid and of nothing else; whose output is that uid's entry in this
store; whose inputs are store entries (substituted here from this machine's trusted caches)
and its own sources (fetched here: this machine's mirrors, then the source's URL, checked by
sha256). Everything else is refused with ClusterRefused naming what is wrong, and the
submitter builds the node itself.

Sources travel by their sha256, not through the cache: a source is named by its content
already, so any copy serves, and the worker's own mirrors (the same Debian-seeded ones, or
a site mirror) and the upstream URL are where the submitter got it too. Uploading them as
cache objects would send every source over the submitter's link for every new worker and
mix unsigned objects into a cache that holds only signed entries.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ixd.cache.format import Entry
from ixd.model.layout import Layout, entry_kind
from ixd.model.nodes import Node, Plan, Source, url_basename
from ixd.recipes.package import UID_LENGTH, recipe_node_uid
from ixd.recipes.plan import fetch_node
from ixd.wire.errors import ClusterRefused

_UID = re.compile(rf"[0-9a-f]{{{UID_LENGTH}}}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: the URL schemes a cluster node's sources may name (never a file of this machine; a file of
#: a Debian source package is looked up by this machine's apt, checked like any source)
SOURCE_SCHEMES = ("http://", "https://", "deb-src://")
#: a cluster node may ask for at most this much time beyond --build-timeout (a recipe's
#: `timeout` block): a day
MAX_EXTRA_TIMEOUT = 24 * 3600.0
#: the types of a node's fields as JSON (a string where a list belongs would be split)
_SEQUENCE = (list, tuple)
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "uid": str, "kind": str, "name": str, "deps": _SEQUENCE, "inputs": _SEQUENCE,
    "outputs": _SEQUENCE, "command": _SEQUENCE, "stdin": str, "env": dict, "net": bool,
    "sources": _SEQUENCE, "meta": dict}
#: bounds on the node's parts (a real node's are far smaller)
MAX_NAME = 1024
MAX_ITEMS = 4096


def _refuse(data: Mapping[str, Any], why: str) -> ClusterRefused:
    name = str(data.get("name", "?"))[:200]
    uid = str(data.get("uid", "?"))[:64]
    return ClusterRefused(f"{name} ({uid}): {why}; refused")


def check_cluster_node(data: Any, layout: Layout) -> Node:
    """The node `data` (a plan node's JSON) describes, if this machine may build it for the
    cluster; ClusterRefused saying why not."""
    if not isinstance(data, dict):
        raise ClusterRefused(f"a cluster build is a plan node (a map), not "
                             f"{type(data).__name__}; refused")
    try:
        for name, kind in _FIELD_TYPES.items():
            if not isinstance(data.get(name), kind):
                raise TypeError(f"{name!r} is {type(data.get(name)).__name__}")
        node = Node.from_json(data)
        _check_shapes(node)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _refuse(data, f"not a well-formed plan node ({type(exc).__name__}: "
                            f"{str(exc)[:200]})") from None
    if node.kind != "build" or not _UID.fullmatch(node.uid):
        raise _refuse(data, f"an ix worker builds build nodes, not a {node.kind} node")
    if node.entry_kind in ("", "rlm", "fix"):
        raise _refuse(data, f"entries of kind {node.entry_kind or '(none)'!r} are built "
                            f"where they are used, not on the cluster")
    out = Path(node.outputs[0]) if len(node.outputs) == 1 else None
    if out is None or out.parent != layout.store or not out.name.startswith(f"{node.uid}-") \
            or entry_kind(out) != node.entry_kind or "/" in out.name or ".." in out.name:
        raise _refuse(data, f"its output {list(node.outputs)[:2]} is not its entry in this "
                            f"machine's store {layout.store}")
    sources = {str(layout.source_path(s.sha256)): s for s in node.sources}
    for source in node.sources:
        if not _SHA256.fullmatch(source.sha256):
            raise _refuse(data, f"source sha256 {source.sha256[:80]!r} is not 64 hex digits")
        if not source.url.startswith(SOURCE_SCHEMES):
            raise _refuse(data, f"source {source.url[:200]!r} is not an http(s) or deb-src URL")
        if source.filename != url_basename(source.url):  # as recipes name their sources
            raise _refuse(data, f"source file name {source.filename[:200]!r} is not the "
                                f"last part of its URL")
    for path in node.inputs:
        entry = Path(path)
        if path in sources:
            continue
        if entry.parent != layout.store or not _UID.fullmatch(entry.name[:UID_LENGTH]) \
                or entry.name[UID_LENGTH:UID_LENGTH + 1] != "-" or ".." in entry.name:
            raise _refuse(data, f"it reads {path[:200]!r}, which is neither an entry of the "
                                f"store {layout.store} nor one of its sources")
    missing = [p for p in sources if p not in node.inputs]
    if missing:
        raise _refuse(data, f"its sources {missing[:3]} are not among its inputs")
    made = recipe_node_uid(node, layout.store)
    if made != node.uid:
        raise _refuse(data, f"its content makes the uid {made}, not {node.uid}: it is not a "
                            f"build ix made from a recipe")
    return dataclasses.replace(node, timeout=min(node.timeout, MAX_EXTRA_TIMEOUT))


def _check_shapes(node: Node) -> None:
    """TypeError or ValueError unless every part of `node` has the type a plan node's has,
    within bounds."""
    strings = [node.uid, node.name, node.stdin, *node.deps, *node.inputs, *node.outputs,
               *node.command, *node.env.keys(), *node.env.values(), node.entry_kind]
    if not all(isinstance(s, str) for s in strings):
        raise TypeError("a field that must be text is not")
    if len(node.name) > MAX_NAME or max(len(node.deps), len(node.inputs), len(node.env),
                                        len(node.command), len(node.sources)) > MAX_ITEMS:
        raise ValueError("more parts than any real node has")
    if not isinstance(node.net, bool) or not node.command:
        raise TypeError("'net' must be true or false, and 'command' name a program")
    if not all(isinstance(s, Source) and isinstance(s.url, str) and isinstance(s.sha256, str)
               and isinstance(s.filename, str) for s in node.sources):
        raise TypeError("every source has a url, a sha256 and a file name")
    if not isinstance(node.meta.get("package"), str):
        raise TypeError("meta.package must name the package")
    if node.timeout < 0 or node.timeout != node.timeout:
        raise ValueError("a negative (or not a number) timeout")


def input_uids(node: Node, store: Path) -> list[str]:
    """The uids of the store entries `node` reads."""
    return [Path(p).name[:UID_LENGTH] for p in node.inputs if Path(p).parent == store]


def inputs_plan(node: Node, layout: Layout, is_valid_uid: Callable[[str], bool],
                lookup: Callable[[Sequence[str]], Mapping[str, Entry]]) -> Plan:
    """The plan that builds a checked cluster `node` here: its sources fetched, every input
    entry this store lacks substituted with its references (`lookup`: the entries of uids
    this machine's trusted caches hold), then the node. An input no cache holds is
    ClusterRefused: the submitter pushes a build's inputs before it submits."""
    wanted = [u for u in input_uids(node, layout.store) if not is_valid_uid(u)]
    found = dict(lookup(wanted)) if wanted else {}
    nodes: dict[str, Node] = {}
    todo = list(wanted)
    while todo:
        uid = todo.pop()
        if uid in nodes or is_valid_uid(uid):
            continue
        if uid not in found:
            found.update(lookup([uid]))
        entry = found.get(uid)
        if entry is None:
            raise ClusterRefused(f"{node.name} ({node.uid}) needs {uid}, which no trusted "
                                 f"cache of this machine holds (was it pushed? is this "
                                 f"machine's --cache the submitter's --push?); refused")
        path = Path(entry.store_path)
        if path.parent != layout.store or not path.name.startswith(f"{uid}-"):
            raise ClusterRefused(f"{node.name} ({node.uid}) needs {uid}, which the caches "
                                 f"hold as {entry.store_path}, not an entry of {layout.store}"
                                 f"; refused")
        references = tuple(r for r in entry.references if r != uid)
        nodes[uid] = Node(uid=uid, kind="substitute", name=uid, deps=references, inputs=(),
                          outputs=(str(path),), entry_kind=entry_kind(path))
        todo.extend(references)
    fetches = [fetch_node(s.url, s.sha256, s.filename, layout) for s in node.sources]
    target = dataclasses.replace(node, deps=(*nodes, *(f.uid for f in fetches)))
    return Plan((*nodes.values(), *fetches, target), (node.uid,))
