"""Packages → a build plan of plain nodes (fetch, build, realm), ready for the executor."""

from __future__ import annotations

import concurrent.futures
import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ixd.model.layout import Layout
from ixd.model.nodes import Node, Plan, Source
from ixd.recipes.fixup import HOOKS_SCRIPT, hook_env, hook_tools
from ixd.recipes.package import Package, content_hash, walk_closure


def fetch_node(url: str, sha256: str, filename: str, layout: Layout) -> Node:
    return Node(
        uid=sha256,
        kind="fetch",
        name=url,
        deps=(),
        inputs=(),
        outputs=(str(layout.source_path(sha256)),),
        net=True,
        sources=(Source(url, sha256, filename),),
    )


def package_nodes(targets: Iterable[Package], layout: Layout) -> list[Node]:
    """Nodes to build `targets` and everything they need, dependencies first."""
    nodes: list[Node] = []
    fetched: set[str] = set()
    for package in walk_closure(targets):
        node = package.node
        if node is None:
            continue
        for source in node.sources:
            if source.sha256 not in fetched:
                fetched.add(source.sha256)
                nodes.append(fetch_node(source.url, source.sha256, source.filename, layout))
        nodes.append(node)
    return nodes


def runtime_uids(packages: Iterable[Package]) -> list[str]:
    """The buildable uids that must be valid for `packages` to be used."""
    uids: dict[str, None] = {}
    for package in packages:
        for p in package.run_closure:
            if p.buildable:
                uids[p.uid] = None
    return list(uids)


def build_plan(targets: Sequence[Package], layout: Layout) -> Plan:
    return Plan(tuple(package_nodes(targets, layout)), tuple(runtime_uids(targets)))


def realm_dirs(packages: Sequence[Package]) -> list[str]:
    """Store dirs linked into a realm, in priority order: the front package wins, and a
    package wins over its own run dependencies."""
    dirs: dict[str, None] = {}
    for package in packages:
        for p in reversed(package.run_closure):
            if p.out_dir is not None:
                dirs.setdefault(p.out_dir, None)
    return list(dirs)


def realm_node(realm: str, packages: Sequence[Package], meta: Mapping[str, Any],
               layout: Layout, fixers: Sequence[Package] = ()) -> Node:
    """Assembling a realm is a node too, so an unchanged realm is not assembled again.

    If the packages it links ship `fix/` hooks (found when it runs: `ixd.recipes.fixup`),
    the node runs them as a build: `command`, `stdin` and `env` say how, the tools `fixers`
    bring (their store dirs in `meta["fix_tools"]`) on PATH. Its uid covers all of it."""
    dirs = realm_dirs(packages)
    deps = runtime_uids(packages)
    tools = hook_tools(fixers)
    deps.extend(p.uid for p in tools if p.uid not in deps)
    # the static policy's exceptions: what packages flagged allow_dynamic bring in
    allowed = sorted({q.out_dir for p in packages if p.flags.get("allow_dynamic", "0") != "0"
                      for q in p.run_closure if q.out_dir})
    meta = {**meta, "allow_dynamic": allowed}
    if fixers:
        meta["fixers"] = [p.display_name for p in fixers]
        meta["fix_tools"] = [p.out_dir for p in tools]
    env = hook_env(tools)
    uid = content_hash({"realm": realm, "dirs": dirs, "meta": meta,
                        "hooks": {"script": HOOKS_SCRIPT, "env": env}})
    return Node(
        uid=uid,
        kind="realm",
        name=f"realm {realm}",
        deps=tuple(deps),
        inputs=tuple(dirs),
        outputs=(str(layout.store_dir(uid, "rlm", realm)),),
        command=("/bin/sh", "-s"),
        stdin=HOOKS_SCRIPT,
        env=env,
        meta=dict(meta),
        entry_kind="rlm",
    )


def realm_plan(realm: str, packages: Sequence[Package], meta: Mapping[str, Any],
               layout: Layout, fixers: Sequence[Package] = ()) -> Plan:
    """The nodes to build and assemble a realm. `fixers` are the packages its `fix.deps`
    name, loaded as build tools (`fixup.fixer_selectors`): built before it, for its hooks."""
    nodes = package_nodes([*packages, *fixers], layout)
    node = realm_node(realm, packages, meta, layout, fixers)
    return Plan((*nodes, node), (node.uid,))


#: a streamed plan's events stay far below the wire's frame limit (16 MiB)
BATCH_BYTES = 2 << 20
BATCH_NODES = 256
#: a piece of the plan as text: small, so that the daemon never holds much of it at once
TEXT_BYTES = 256 << 10
#: pieces of text made and not compressed yet, at most
PENDING_PIECES = 4


def node_batches(plan: Plan) -> Iterator[list[dict[str, Any]]]:
    """The plan's nodes as JSON, in order, in batches of at most BATCH_NODES nodes and about
    BATCH_BYTES (a node alone may be bigger): one `plan-nodes` event each."""
    batch: list[dict[str, Any]] = []
    size = 0
    for node in plan.nodes:
        data = node.to_json()
        weight = len(node.stdin) + sum(len(k) + len(v) for k, v in node.env.items()) + 512
        if batch and (size + weight > BATCH_BYTES or len(batch) >= BATCH_NODES):
            yield batch
            batch, size = [], 0
        batch.append(data)
        size += weight
    if batch:
        yield batch


def plan_text(plan: Plan, chunk_bytes: int = TEXT_BYTES) -> Iterator[bytes]:
    """The plan as one JSON document (`Plan.to_json`'s, a node a line), in pieces of about
    `chunk_bytes`: what `ixc plan` prints, made once here and passed on as it is (a client
    decoding 80 MB of nodes and encoding them again takes seconds)."""
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    parts = ['{"nodes":[']
    size = 0
    for index, node in enumerate(plan.nodes):
        line = ("\n" if index == 0 else ",\n") + _node_text(node, encode)
        parts.append(line)
        size += len(line)
        if size >= chunk_bytes:
            yield "".join(parts).encode()
            parts, size = [], 0
    parts.append(f'\n],"targets":{encode(list(plan.targets))}}}\n')
    yield "".join(parts).encode()


def _node_text(node: Node, encode: Callable[[Any], str]) -> str:
    """`node.to_json()` as JSON, made without copying its values, the script (most of a
    plan's bytes) escaped apart: the ASCII escaper is the faster one for scripts."""
    fields = {
        "uid": node.uid, "kind": node.kind, "name": node.name, "deps": node.deps,
        "inputs": node.inputs, "outputs": node.outputs, "command": node.command,
        "env": node.env, "net": node.net,
        "sources": [{"url": s.url, "sha256": s.sha256, "filename": s.filename}
                    for s in node.sources],
        "meta": node.meta, "timeout": node.timeout, "entry_kind": node.entry_kind,
        "elf_machine": node.elf_machine, "host_view": node.host_view,
    }
    return f'{encode(fields)[:-1]},"stdin":{_escape_ascii(node.stdin)}}}'


_escape_ascii: Callable[[str], str] = json.encoder.encode_basestring_ascii


@dataclass(frozen=True)
class PlanText:
    """`plan_text` of a plan, each piece compressed on its own (zlib): a warm `ixc plan` of
    stal/IX's CI set is 80 MB of JSON and 8 MB of these."""

    targets: tuple[str, ...]
    nodes: int
    #: bytes of the JSON text
    size: int
    pieces: tuple[bytes, ...]


def compressed_plan_text(plan: Plan) -> PlanText:
    """The plan's JSON text in compressed pieces (blocking: CPU work). The pieces are
    compressed in a thread of their own while the next ones are made: zlib works without
    the interpreter's lock, so a second core takes it."""
    compressed: list[concurrent.futures.Future[bytes]] = []
    size = 0
    with concurrent.futures.ThreadPoolExecutor(1, "ixd-plan-zlib") as pool:
        for piece in plan_text(plan):
            size += len(piece)
            if len(compressed) >= PENDING_PIECES:  # a busy machine's compressor lags: the
                compressed[-PENDING_PIECES].result()  # pieces waiting for it are bounded
            compressed.append(pool.submit(zlib.compress, piece, 1))
        pieces = tuple(f.result() for f in compressed)
    return PlanText(plan.targets, len(plan.nodes), size, pieces)


def plan_summary(plan: Plan) -> dict[str, Any]:
    """`ixc plan --summary`: what the plan holds, without the nodes."""
    kinds: dict[str, int] = {}
    for node in plan.nodes:
        kinds[node.kind] = kinds.get(node.kind, 0) + 1
    builds = [n for n in plan.nodes if n.kind == "build"]
    return {
        "targets": list(plan.targets),
        "nodes": len(plan.nodes),
        "by_kind": kinds,
        "packages": sorted({n.name for n in builds}),
        "sources": sorted({s.url for n in plan.nodes if n.kind == "fetch" for s in n.sources}),
        "script_bytes": sum(len(n.stdin) for n in builds),
        "network_builds": sum(1 for n in builds if n.net),
    }
