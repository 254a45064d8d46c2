"""The one function ix's Dask workers run: build a node, push it to the cache, say so.

    ix-worker tcp://SCHEDULER:8786 --config /etc/ix/worker.json [--slots N] [-- DASK-ARGS]

starts a Dask worker (`dask worker`) offering N build slots (`--resources build=N`), with
the ix settings file in its environment.

ixd (`ixd.build.cluster`) submits `build(node)` under the key `ix-build-<uid>`; a worker machine
runs it with its own ix install and its own settings, never the submitter's: a JSON file
named by `IX_WORKER_CONFIG` (written by the worker host's administrator) gives the worker's
root, the caches it substitutes inputs from and pushes to, the keys it trusts and signs with,
its source mirrors and its build users. The node is data, checked like any node; the build
runs as on any ixd: as a build user in the sandbox, canonicalised, registered in the
worker's own store (a small ixd without a socket: the same runner and scheduler). Its
inputs come from the cache (substituted in the sandbox too), its sources from the mirrors.
The result goes to the cache, signed with the worker's key, references first and index last;
only its index (uid, content hash, size, worker) goes back through Dask, never the tree.

A build that fails returns its error (code and message) instead of raising: Dask must not
retry a build that failed on its own merits, only one whose worker died.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ixd.build.cluster import LOG_TOPIC, STARTED_TOPIC
from ixd.build.runner import StoreRunner
from ixd.build.scheduler import Scheduler
from ixd.cache.substitute import CacheSettings, Pusher, Substituter, open_caches
from ixd.model.layout import Layout, entry_kind
from ixd.model.nodes import Node, Plan
from ixd.recipes.plan import fetch_node
from ixd.store.builder import BuildLimits
from ixd.store.buildusers import DEFAULT_GROUP, BuildUserPool, load_pool
from ixd.store.db import BuildDatabase
from ixd.wire.errors import BadRequest, CacheError, IxError

#: the environment variable naming the worker's settings file
CONFIG_ENV = "IX_WORKER_CONFIG"
#: log lines are sent in batches at most this often (seconds) or this long
LOG_INTERVAL = 0.25
LOG_BATCH = 200
_UID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class WorkerConfig:
    root: Path
    cache: CacheSettings
    mirrors: tuple[str, ...] = ()
    build_users: str = DEFAULT_GROUP
    limits: BuildLimits = dataclasses.field(default_factory=BuildLimits)

    @staticmethod
    def load(path: str | None = None) -> WorkerConfig:
        path = path or os.environ.get(CONFIG_ENV)
        if not path:
            raise BadRequest(f"this Dask worker has no ix settings: set {CONFIG_ENV} to a "
                             f"JSON file with root, cache, push, trusted_keys, signing_key")
        data = json.loads(Path(path).read_text())
        cache = CacheSettings(
            caches=tuple(data.get("caches", ())), push=data["push"],
            trusted_keys=tuple(data.get("trusted_keys", ())),
            signing_key=Path(data["signing_key"]),
            credentials=Path(data["credentials"]) if data.get("credentials") else None)
        limits = BuildLimits(**data.get("limits", {}))
        return WorkerConfig(Path(data["root"]), cache, tuple(data.get("mirrors", ())),
                            data.get("build_users", DEFAULT_GROUP), limits)


def build(node_json: dict[str, Any]) -> dict[str, Any]:
    """Build `node_json` (a plan node) here and push it: `{"uid", "content_hash", "size",
    "worker"}`, or `{"uid", "error", "message"}` if it failed."""
    node = Node.from_json(node_json)
    where = _worker_address()
    try:
        _check(node)
        config = WorkerConfig.load()
        _event(STARTED_TOPIC, {"uid": node.uid, "worker": where})
        with _LogSender(node.uid) as sender:
            row = trio.run(_build, config, node, sender.line)
    except IxError as exc:
        return {"uid": node.uid, "error": exc.code, "message": exc.message, "worker": where}
    return {"uid": node.uid, "content_hash": row["hash"], "worker": where,
            "path": row["path"]}


def _check(node: Node) -> None:
    if node.kind != "build" or not _UID.fullmatch(node.uid) or not node.outputs:
        raise BadRequest(f"an ix worker builds build nodes; not {node.kind} {node.uid!r}")


_POOL_LOCK = threading.Lock()
_POOLS: dict[str, BuildUserPool] = {}


def _pool(group: str) -> BuildUserPool:
    """One pool of build users per worker process, cleared once (like a daemon's start)."""
    with _POOL_LOCK:
        pool = _POOLS.get(group)
        if pool is None:
            pool = _POOLS[group] = BuildUserPool(load_pool(group))
            pool.clear_all()
        return pool


async def _build(config: WorkerConfig, node: Node, on_line: Callable[[str], None]
                 ) -> dict[str, Any]:
    layout = Layout(config.root)
    layout.ensure()
    if Path(node.outputs[0]).parent != layout.store:
        raise BadRequest(f"{node.name} ({node.uid}) is for the store "
                         f"{Path(node.outputs[0]).parent}; this worker's is {layout.store}")
    # what the sandbox shows a build read-only: nothing of this host but store entries
    outside = [p for p in node.inputs if Path(p).parent != layout.store]
    if outside:
        raise BadRequest(f"{node.name} ({node.uid}) asks for inputs outside the store "
                         f"{layout.store}: {outside[:3]}; refused")
    db = BuildDatabase(layout.database)
    try:
        caches, push = await trio.to_thread.run_sync(open_caches, config.cache,
                                                     str(layout.store))
        assert push is not None  # WorkerConfig.load requires it
        substituter = Substituter(caches, layout, config.limits.max_output_size)
        runner = StoreRunner(layout, db, confine=True, mirrors=config.mirrors,
                             make_thrs=os.cpu_count() or 1, build_users=_pool(config.build_users),
                             limits=config.limits, substituter=substituter)
        # Dask merges submissions of one key only while its task lives: a build asked for
        # again after it finished (another ixd planned before the push landed) is not
        # built twice: the cache already has it
        pushed = (await trio.to_thread.run_sync(push.lookup, [node.uid])).get(node.uid)
        if pushed is not None and not runner.is_valid_uid(node.uid):
            return {"hash": pushed.content_hash, "path": pushed.store_path}
        if not runner.is_valid_uid(node.uid):
            plan = await trio.to_thread.run_sync(_inputs_plan, node, layout, runner,
                                                 substituter)
            scheduler = Scheduler(runner, jobs=1)

            def listener(kind: str, data: dict[str, Any]) -> None:
                if kind == "log" and data.get("uid") == node.uid:
                    on_line(data["line"])

            async with trio.open_nursery() as nursery:
                await nursery.start(scheduler.serve)
                await scheduler.run(plan, listener, os.getuid())
                nursery.cancel_scope.cancel()
        await trio.to_thread.run_sync(Pusher(push, db, layout).push, [node.uid])
        entry = db.store_entry(node.uid)
        assert entry is not None, f"{node.uid} built but not registered"
    finally:
        db.close()
    return entry


def _inputs_plan(node: Node, layout: Layout, runner: StoreRunner,
                 substituter: Substituter) -> Plan:
    """The node, its sources fetched, and every input store entry it lacks substituted from
    the caches, with their references (blocking)."""
    wanted: list[str] = []
    for path in node.inputs:
        entry = Path(path)
        if entry.parent == layout.store and _UID.fullmatch(entry.name[:32]):
            if not runner.is_valid_uid(entry.name[:32]):
                wanted.append(entry.name[:32])
    hits = substituter.lookup(wanted) if wanted else {}
    nodes: dict[str, Node] = {}
    todo = list(wanted)
    while todo:
        uid = todo.pop()
        if uid in nodes or runner.is_valid_uid(uid):
            continue
        hit = hits.get(uid)
        if hit is None:
            hits.update(substituter.lookup([uid]))
            hit = hits.get(uid)
        if hit is None:
            raise CacheError(f"{node.name} ({node.uid}) needs {uid}, which no cache of this "
                             f"worker holds: its submitter pushes its inputs first")
        references = tuple(r for r in hit.entry.references if r != uid)
        nodes[uid] = Node(uid=uid, kind="substitute", name=uid, deps=references, inputs=(),
                          outputs=(hit.entry.store_path,),
                          entry_kind=entry_kind(hit.entry.store_path))
        todo.extend(references)
    fetches = [fetch_node(s.url, s.sha256, s.filename, layout) for s in node.sources]
    target = dataclasses.replace(node, deps=(*nodes, *(f.uid for f in fetches)))
    return Plan((*nodes.values(), *fetches, target), (node.uid,))


# --- talking back through Dask -----------------------------------------------------------


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):  # not in a Dask worker (tests call build directly)
        return f"pid {os.getpid()}"


def _event(topic: str, message: dict[str, Any]) -> None:
    try:
        from distributed import get_worker

        get_worker().log_event(topic, message)
    except (ImportError, ValueError):
        pass


class _LogSender:
    """The build's log lines to ixd, in batches through Dask's events (best effort: the
    log is also kept on the worker)."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self._lines: list[str] = []
        self._sent = time.monotonic()
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self._lines.append(text)
            if len(self._lines) < LOG_BATCH and time.monotonic() - self._sent < LOG_INTERVAL:
                return
            lines, self._lines = self._lines, []
            self._sent = time.monotonic()
        _event(LOG_TOPIC, {"uid": self.uid, "lines": lines})

    def __enter__(self) -> _LogSender:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        if lines:
            _event(LOG_TOPIC, {"uid": self.uid, "lines": lines})


def main(argv: list[str] | None = None) -> int:
    """`ix-worker`: a `dask worker` for ix builds (see the module's docstring)."""
    import argparse
    import sys

    words = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in words:
        at = words.index("--")
        words, extra = words[:at], words[at + 1:]
    parser = argparse.ArgumentParser(prog="ix-worker", description=main.__doc__)
    parser.add_argument("scheduler", help="the Dask scheduler, tcp://HOST:PORT or tls://...")
    parser.add_argument("--config", required=True, type=Path,
                        help=f"the worker's ix settings (JSON; see ixd/build/worker.py), as "
                             f"{CONFIG_ENV}")
    parser.add_argument("--slots", type=int, default=1, help="builds at once (default 1)")
    args = parser.parse_args(words)
    try:
        WorkerConfig.load(str(args.config))
    except (OSError, ValueError, KeyError, IxError) as exc:
        print(f"ix-worker: {args.config}: {exc}", file=sys.stderr)
        return 2
    os.environ[CONFIG_ENV] = str(args.config.absolute())
    os.execv(sys.executable, [sys.executable, "-m", "distributed.cli.dask_worker",
                              args.scheduler, "--resources", f"build={args.slots}",
                              "--nthreads", str(args.slots), *extra])
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
