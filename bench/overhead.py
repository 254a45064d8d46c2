"""Benchmark: the daemon's own cost per build node, beyond the build itself (issue 13, item 3).

    python -m bench.overhead [--nodes 1000] [--jobs 2]

One `mut` of a realm of N trivial packages (`bin/slow(secs=0,tag=oK)`: a confined build
that writes one small script) through a real ixd with --jobs J. Each node's slot time is
wall x J / N. The build itself is what the same command costs when run directly, without
the daemon: this process runs one more such node's own command (from the daemon's plan) in
the sandbox the builder makes (`chpst` as a build user + `bwrap` with the same binds),
N/10 times, J at a time, in the same run. The difference is the daemon's per-node overhead
(scheduling, scratch, logging, output canonicalisation, hashing, database writes,
registration): the issue's goal is <= 5 ms.

Also prints the builds table's own figures (the span from one build's start to its end, as
the daemon recorded it), the daemon's CPU time per node, and that of its child processes
(the builds themselves and the daemon's helper processes: on a machine others share, CPU
time is steadier than wall time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench._daemon import BenchDaemon, load_average, ms, mut_args, percentile, slow
from ixd.store.buildusers import DEFAULT_GROUP, BuildUserPool, load_pool
from ixd.store.confine import build_identity_argv, confinement_argv, sandbox_etc


def direct_runs(node: dict[str, Any], count: int, jobs: int) -> float:
    """Median wall time of `node`'s own command (a plan node of the daemon's, its inputs
    still in the store) run directly in the sandbox the builder makes, as a build user
    (held like a daemon holds one), `jobs` at a time: the build itself, without the daemon."""
    top = Path(tempfile.mkdtemp(prefix="ix-overhead-", dir="/var/tmp"))
    top.chmod(0o755)
    etc = top / "etc"
    etc.mkdir()
    for name, text in sandbox_etc().items():
        (etc / name).write_text(text)
    store_path = Path(node["outputs"][0])
    pool = BuildUserPool(load_pool(DEFAULT_GROUP))
    times: list[float] = []

    async def one(index: int, slots: trio.CapacityLimiter) -> None:
        async with slots, pool.take() as user:
            scratch = top / f"s{index}"
            for sub in ("", "tmp", "src", "out"):
                (scratch / sub).mkdir()
                os.chown(scratch / sub, user.uid, user.gid)
            env = {**node["env"], "out": str(store_path), "tmp": str(scratch / "tmp"),
                   "src": str(scratch / "src"), "uid": node["uid"], "make_thrs": "1"}
            argv = [*build_identity_argv(user.uid, user.gid, max_processes=512),
                    *confinement_argv(net=False, inputs=[Path(p) for p in node["inputs"]],
                                      binds=[(scratch, scratch), (scratch / "out", store_path)],
                                      tmp=scratch / "tmp", etc=etc, chdir=scratch / "tmp"),
                    *node["command"]]
            begin = time.perf_counter()
            await trio.run_process(argv, env=env, stdin=node["stdin"].encode(),
                                   stdout=subprocess.DEVNULL, cwd=scratch)
            times.append(time.perf_counter() - begin)

    async def all_runs() -> None:
        slots = trio.CapacityLimiter(jobs)
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(one, index, slots)

    try:
        trio.run(all_runs)
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    daemon = BenchDaemon.start(jobs=args.jobs, label="overhead")
    try:
        # the tool chain first (bld/host/sh and what it needs), so only the N nodes count
        daemon.request("build", {"packages": [slow("warm-up")]})
        before = len(daemon.build_rows())
        cpu_before = daemon.cpu_seconds()
        children_before = daemon.children_cpu_seconds()
        packages = [slow(f"o{i}") for i in range(args.nodes)]
        begin = time.perf_counter()
        result = daemon.request("mut", mut_args("overhead", packages))
        wall = time.perf_counter() - begin
        cpu = daemon.cpu_seconds() - cpu_before
        children = daemon.children_cpu_seconds() - children_before
        rows = daemon.build_rows()[before:]
        assert result["realms"][0]["changed"], result
        if len(rows) != args.nodes or any(r["state"] != "valid" for r in rows):
            print(f"FAILED: {len(rows)} builds for {args.nodes} nodes, "
                  f"{sum(r['state'] != 'valid' for r in rows)} not valid")
            return 1
        daemon.report_log()
        # one more package's node, to run its command without the daemon
        plan = daemon.request("plan", {"packages": [slow("bare")]})
        node = next(n for n in plan["nodes"] if n["name"].startswith("bin/slow"))
        bare = direct_runs(node, max(20, args.nodes // 10), args.jobs)
    finally:
        daemon.stop()
    slot = wall * args.jobs / args.nodes
    spans = [r["duration"] for r in rows if r["duration"] is not None]
    print(f"overhead: {args.nodes} trivial confined builds, ixd --jobs {args.jobs}; "
          f"{load_average()}")
    print(f"  realm of {args.nodes} built in {wall:.2f} s: slot time per node {ms(slot)}")
    print(f"  its command run directly in the same sandbox, {args.jobs} at a time: {ms(bare)}")
    print(f"  daemon overhead per node (slot time - bare command): {ms(slot - bare)} "
          f"(goal <= 5 ms)")
    print(f"  builds table span per build: p50 {ms(percentile(spans, 50))}, "
          f"p99 {ms(percentile(spans, 99))}")
    print(f"  daemon CPU per node: {ms(cpu / args.nodes)}")
    print(f"  its child processes' CPU per node (builds and helpers): "
          f"{ms(children / args.nodes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
