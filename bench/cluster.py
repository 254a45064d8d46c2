"""Benchmark: the dedup workload on a Dask cluster against one ixd building alone (issue 15).

    python -m bench.cluster [--workers 1 2 4] [--clients 8] [--shared 30] [--own 10]
                            [--secs 0.5] [--noop-tasks 2000]

The workload of bench/dedup.py: 8 clients each put 40 packages in a realm of their own, 30
shared by all and 10 their own (`bin/slow(secs=0.5,tag=...)`, confined builds), 110 distinct
packages in all. Run three ways, each on fresh roots:

  local       one ixd (--jobs 2) takes all 8 clients;
  cluster N   two ixd (4 clients each, each its own "machine": tests/cluster_harness.py)
              hand every build to a Dask scheduler with N ix-workers (one build slot each),
              sharing a SeaweedFS cache, for N in --workers.

Prints wall time, builds executed per uid (over all workers: must be 1), and each worker's
utilisation (the time its builds took over the wall time). Then the scheduler's own rate: a
client submits --noop-tasks no-op tasks to a scheduler with two plain workers; tasks per
second bounds how many builds 100 workers could be fed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.cluster_harness import Cluster, machine_daemon, running_cluster
from tests.daemon_harness import start_daemon


def packages(client: int, shared: int, own: int, secs: float) -> list[str]:
    names = [f"s{i}" for i in range(shared)] + [f"c{client}-{i}" for i in range(own)]
    return [f"+bin/slow(secs={secs},tag={name})" for name in names]


def run_clients(daemons: list[Any], clients: int, shared: int, own: int, secs: float) -> float:
    """All clients at once, client k on daemon k % len(daemons); the wall time."""
    begin = time.perf_counter()
    processes = []
    for k in range(clients):
        daemon = daemons[k % len(daemons)]
        argv, env = daemon.ixc_argv("mut", f"r{k}", *packages(k, shared, own, secs))
        processes.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True, cwd="/"))
    for process in processes:
        _, err = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise RuntimeError(f"a client failed: {err[-2000:]}")
    return time.perf_counter() - begin


def warm(daemon: Any) -> None:
    """The tool chain first (bld/host/sh): only the workload's own builds count."""
    daemon.ixc("build", "bin/slow(secs=0,tag=warm-up)", timeout=600)


def local(args: argparse.Namespace) -> None:
    top = Path(subprocess.run(["mktemp", "-d", "/var/tmp/ix-bench-local-XXXXXX"],
                              capture_output=True, text=True, check=True).stdout.strip())
    top.chmod(0o755)
    daemon = start_daemon(top / "root", extra=["--jobs", "2"])
    try:
        warm(daemon)
        wall = run_clients([daemon], args.clients, args.shared, args.own, args.secs)
    finally:
        daemon.stop()
        subprocess.run(["rm", "-rf", str(top)], check=False)
    print(f"{'local (1 ixd, 2 slots)':<28} {wall:8.1f} s")


def cluster(args: argparse.Namespace, workers: int) -> None:
    names = [f"w{i}" for i in range(1, workers + 1)]
    with running_cluster(names) as state:
        with machine_daemon(state, "a", state.ixd_args()) as a, \
                machine_daemon(state, "b", state.ixd_args()) as b:
            warm(a)
            warm(b)
            before = {name: len(state.worker_builds(name)) for name in names}
            wall = run_clients([a, b], args.clients, args.shared, args.own, args.secs)
        report(state, names, before, wall, workers)


def report(state: Cluster, names: list[str], before: dict[str, int], wall: float,
           workers: int) -> None:
    rows = {name: [r for r in state.worker_builds(name)[before[name]:]
                   if r["state"] == "valid"] for name in names}
    per_uid = Counter(r["uid"] for built in rows.values() for r in built)
    twice = sum(1 for n in per_uid.values() if n > 1)
    busy = {name: sum(r["duration"] or 0 for r in built) / wall for name, built in rows.items()}
    use = ", ".join(f"{name} {share:.0%} ({len(rows[name])} builds)"
                    for name, share in busy.items())
    print(f"{f'cluster: 2 ixd, {workers} workers':<28} {wall:8.1f} s   {len(per_uid)} uids "
          f"built, {twice} more than once; utilisation {use}")


def noop_rate(count: int) -> None:
    """Tasks per second through a real scheduler: no-op tasks, two plain workers."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as local_cluster, Client(local_cluster) as client:
        client.submit(int, 0).result()  # connected, warmed up
        begin = time.perf_counter()
        futures = [client.submit(int, i, key=f"noop-{i}", pure=False) for i in range(count)]
        client.gather(futures)
        wall = time.perf_counter() - begin
    print(f"scheduler: {count} no-op tasks in {wall:.2f} s = {count / wall:.0f} tasks/s "
          f"(one client, two workers, this machine)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--shared", type=int, default=30)
    parser.add_argument("--own", type=int, default=10)
    parser.add_argument("--secs", type=float, default=0.5)
    parser.add_argument("--noop-tasks", type=int, default=2000)
    args = parser.parse_args()
    distinct = args.shared + args.clients * args.own
    print(f"cluster: {args.clients} clients x {args.shared + args.own} packages "
          f"({distinct} distinct, {args.secs} s builds)")
    local(args)
    for workers in args.workers:
        cluster(args, workers)
    noop_rate(args.noop_tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
