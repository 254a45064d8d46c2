"""Benchmark: the project's real package set built on a Dask cluster (issue 22, item 7).

    python -m bench.cluster [--workers 1 2] [--pin] [--local] [--packages lib/c bin/hello ...]
    python -m bench.cluster --dedup [--workers 1 2 4] [--clients 8] [--shared 30] [--own 10]
                                    [--secs 0.5] [--noop-tasks 2000]

Default: the package set of tests/test_packages_real.py (lib/c from musl's source, hello,
lua, xz, less with their libraries, and whatever the set holds besides), put in one realm by
one ixd that hands every build to a cluster set up as the README says
(tests/cluster_harness.py: TLS, a `dask scheduler` and N `ix-worker`s as the unprivileged
worker account, each beside its machine's ixd with `--jobs 1`, every machine in a mount
namespace of its own on this host, a SeaweedFS cache), once for each N of --workers, each
on fresh stores and a fresh cache. Prints the wall time of the `ixc mut`, the speed-up over
the first N, the build nodes each worker ran and its utilisation (the time its builds took
over the wall time), and how many times each uid was built over all machines (must be 1).
--local adds the set built by one ixd alone (--jobs 1, no cluster), for reference; --pin
puts each worker's machine on one core of its own, as one-core machines would be.

--dedup: the issue-15 workload instead (bench/dedup.py's: 8 clients x 40 packages, 75 %
shared, `bin/slow` builds) on two ixd against N workers, then the scheduler's own rate for
no-op tasks (what bounds feeding 100 workers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests import daemon_harness
from tests.cluster_harness import Cluster, machine_daemon, running_cluster
from tests.daemon_harness import start_daemon
from tests.test_packages_real import PACKAGES


def worker_rows(state: Cluster, names: list[str], since: dict[str, int] | None = None
                ) -> dict[str, list[dict[str, Any]]]:
    """The valid build rows of each worker's machine (after `since[name]` rows)."""
    since = since or {}
    return {name: [r for r in state.worker_builds(name)[since.get(name, 0):]
                   if r["state"] == "valid"] for name in names}


def real_set(workers: int, packages: list[str], pin: bool) -> dict[str, Any]:
    """The package set on a fresh cluster of `workers` workers (with `pin`, each worker's
    machine on a core of its own): its figures."""
    names = [f"w{i}" for i in range(1, workers + 1)]
    cores = os.cpu_count() or 1
    cpus = [str(k % cores) for k in range(workers)] if pin else None
    with running_cluster(names, cpus=cpus) as state, \
            machine_daemon(state, "a", state.ixd_args("a")) as a:
        begin = time.perf_counter()
        a.ixc("mut", "bench", *[f"+{p}" for p in packages], timeout=7200)
        wall = time.perf_counter() - begin
        here = [r for r in _rows(a) if r["state"] == "valid"]
        rows = worker_rows(state, names)
    per_uid = Counter(r["uid"] for built in rows.values() for r in built)
    per_uid.update(r["uid"] for r in here)
    return {"workers": workers, "wall": wall, "rows": rows, "per_uid": per_uid,
            "here": len(here)}


def local_set(packages: list[str]) -> float:
    """The package set built by one ixd alone (--jobs 1, no cluster): the wall time."""
    top = Path(tempfile.mkdtemp(prefix="ix-bench-local-", dir="/var/tmp"))
    top.chmod(0o755)
    daemon = start_daemon(top / "root", extra=["--jobs", "1"])
    try:
        begin = time.perf_counter()
        daemon.ixc("mut", "bench", *[f"+{p}" for p in packages], timeout=7200)
        return time.perf_counter() - begin
    finally:
        daemon.stop()
        subprocess.run(["rm", "-rf", str(top)], check=False)


def _rows(daemon: Any) -> list[dict[str, Any]]:
    import json

    return list(json.loads(daemon.ixc("--json", "builds", "--limit", "1000").stdout)["builds"])


def print_real(results: list[dict[str, Any]], packages: list[str], local: float | None,
               pin: bool) -> None:
    print(f"cluster: {' '.join(packages)} in one realm, every build on the workers "
          f"(--jobs 1 each{', each worker machine on one core' if pin else ''}; "
          f"{os.cpu_count()} cores on this host, load {os.getloadavg()[0]:.1f})")
    if local is not None:
        print(f"   local: one ixd --jobs 1, no cluster: {local:.1f} s")
    print(f"{'workers':>7}  {'wall':>8}  {'speed-up':>8}  {'nodes':>5}  {'max/uid':>7}  "
          f"{'built here':>10}  per worker (nodes, utilisation)")
    first = results[0]["wall"]
    for result in results:
        wall, rows, per_uid = result["wall"], result["rows"], result["per_uid"]
        use = ", ".join(f"{name} {len(built)} {sum(r['duration'] or 0 for r in built) / wall:.0%}"
                        for name, built in rows.items())
        print(f"{result['workers']:>7}  {wall:>6.1f} s  {first / wall:>7.2f}x  "
              f"{len(per_uid):>5}  {max(per_uid.values(), default=0):>7}  "
              f"{result['here']:>10}  {use}")
    twice = sum(1 for r in results for n in r["per_uid"].values() if n > 1)
    print(f"uids built more than once over all machines: {twice} (must be 0)")


# --- the issue-15 workload -------------------------------------------------------------------


def _slow_packages(client: int, shared: int, own: int, secs: float) -> list[str]:
    names = [f"s{i}" for i in range(shared)] + [f"c{client}-{i}" for i in range(own)]
    return [f"+bin/slow(secs={secs},tag={name})" for name in names]


def dedup(args: argparse.Namespace, workers: int) -> None:
    names = [f"w{i}" for i in range(1, workers + 1)]
    with running_cluster(names) as state:
        with machine_daemon(state, "a", state.ixd_args("a")) as a, \
                machine_daemon(state, "b", state.ixd_args("b")) as b:
            for daemon in (a, b):  # the tool chain first: only the workload's builds count
                daemon.ixc("build", "bin/slow(secs=0,tag=warm-up)", timeout=600)
            before = {name: len(state.worker_builds(name)) for name in names}
            begin = time.perf_counter()
            processes = []
            for k in range(args.clients):
                daemon = (a, b)[k % 2]
                argv, env = daemon.ixc_argv("mut", f"r{k}", *_slow_packages(
                    k, args.shared, args.own, args.secs))
                processes.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.PIPE, text=True, cwd="/"))
            for process in processes:
                _, err = process.communicate(timeout=3600)
                if process.returncode != 0:
                    raise RuntimeError(f"a client failed: {err[-2000:]}")
            wall = time.perf_counter() - begin
        rows = worker_rows(state, names, before)
    per_uid = Counter(r["uid"] for built in rows.values() for r in built)
    twice = sum(1 for n in per_uid.values() if n > 1)
    busy = ", ".join(f"{name} {sum(r['duration'] or 0 for r in built) / wall:.0%} "
                     f"({len(built)} builds)" for name, built in rows.items())
    print(f"{f'2 ixd, {workers} workers':<20} {wall:8.1f} s   {len(per_uid)} uids built, "
          f"{twice} more than once; utilisation {busy}")


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
    parser.add_argument("--workers", type=int, nargs="+")
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES))
    parser.add_argument("--pin", action="store_true",
                        help="each worker's machine on one core of its own (taskset), as "
                             "one-core machines: on a small host, workers otherwise share "
                             "its cores and their builds only slow each other down")
    parser.add_argument("--local", action="store_true",
                        help="also the set built by one ixd alone, for reference")
    parser.add_argument("--dedup", action="store_true",
                        help="the issue-15 workload of bin/slow builds instead")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--shared", type=int, default=30)
    parser.add_argument("--own", type=int, default=10)
    parser.add_argument("--secs", type=float, default=0.5)
    parser.add_argument("--noop-tasks", type=int, default=2000)
    args = parser.parse_args()
    if args.dedup:
        print(f"cluster: {args.clients} clients x {args.shared + args.own} packages "
              f"({args.shared + args.clients * args.own} distinct, {args.secs} s builds)")
        for workers in args.workers or [1, 2, 4]:
            dedup(args, workers)
        noop_rate(args.noop_tasks)
        return 0
    try:
        local = local_set(args.packages) if args.local else None
        results = [real_set(workers, args.packages, args.pin)
                   for workers in args.workers or [1, 2]]
    finally:  # the copy of ix the worker account ran
        shutil.rmtree(daemon_harness._READABLE, ignore_errors=True)
    print_real(results, args.packages, local, args.pin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
