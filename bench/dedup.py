"""Benchmark: 8 users mutating overlapping realms at once through one ixd (issue 3, item 7).

    python -m bench.dedup [--jobs 2 8] [--clients 8] [--shared 30] [--own 10] [--secs 0.5]

Each of 8 clients (separate `ixc` processes: `python -m client.main mut rK +PKG...`) puts 40
packages in its own realm `rK`: 30 shared by all clients and 10 of its own, so 75 % of each
realm overlaps every other; the union is 30 + 8 x 10 = 110 distinct packages. Each package is
`bin/slow(secs=0.5,tag=...)`: a confined build that sleeps 0.5 s and writes bin/slow-TAG.

For each --jobs value, three scenarios, each on a fresh root and a fresh daemon that first
builds the toolchain (`bld/host/sh`, through one warm-up package) so only the 110 count:

  concurrent  the 8 `ixc mut` processes started at once;
  alone       one `ixc mut` of the whole 110-package union;
  serialised  the 8 processes started at once, but each holds an exclusive flock(1) on one
              store-wide lock file around its whole `ixc mut`, the way stal/IX serialises
              concurrent users of one store: they run one after another, and the shared
              packages built by the first are reused by the rest.

It reports the builds executed (rows of the daemon's SQLite `builds` table) against the
distinct uids asked for, wall times, each client's completion time, and the ratios. Exit
status 1 if a uid was built twice, a build failed or a realm came out wrong.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench._daemon import BenchDaemon, env, load_average, slow


@dataclass
class Outcome:
    scenario: str
    jobs: int
    wall: float
    client_times: list[float]
    builds: int
    distinct_built: int
    duplicates: int
    failed: int
    expected_uids: int
    problems: list[str]
    #: seconds from the clients' start to the first build's start
    lead: float = 0.0
    #: seconds from the last build's end to the last client's exit
    tail: float = 0.0
    #: sum of build durations / (jobs x span from first build start to last build end)
    busy: float = 0.0


def realms(clients: int, shared: int, own: int, secs: str) -> dict[str, list[str]]:
    common = [slow(f"s{i:02d}", secs) for i in range(shared)]
    return {f"r{k}": common + [slow(f"u{k}-{i:02d}", secs) for i in range(own)]
            for k in range(clients)}


def union_of(by_realm: dict[str, list[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for packages in by_realm.values():
        for p in packages:
            seen.setdefault(p, None)
    return list(seen)


def expected_uids(daemon: BenchDaemon, packages: list[str]) -> set[str]:
    """The uids of the bin/slow packages asked for (`dep` plans, nothing is built)."""
    result = daemon.request("dep", {"packages": packages})
    return {p["uid"] for p in result["packages"] if p["name"] == "bin/slow"}


def run_clients(daemon: BenchDaemon, jobs_by_realm: dict[str, list[str]],
                lock: Path | None) -> tuple[float, list[float], list[str]]:
    """Start one `ixc mut` process per realm at once; wait for all. With `lock`, each runs
    under `flock -x LOCK`. Returns the wall time, each client's completion time (from the
    common start) and the problems seen."""
    problems: list[str] = []
    procs = []
    logs = []
    start = time.perf_counter()
    for realm, packages in jobs_by_realm.items():
        argv = daemon.ixc_argv("mut", realm, *(f"+{p}" for p in packages))
        if lock is not None:
            argv = ["flock", "-x", str(lock), *argv]
        log = (daemon.tmp / f"client-{realm}.log").open("w+")
        logs.append(log)
        procs.append((realm, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                              env=env(), cwd="/")))
    done: dict[str, float] = {}

    def wait(realm: str, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        done[realm] = time.perf_counter() - start

    waiters = [threading.Thread(target=wait, args=pr) for pr in procs]
    for t in waiters:
        t.start()
    for t in waiters:
        t.join()
    for (realm, proc), log in zip(procs, logs, strict=True):
        if proc.returncode != 0:
            log.seek(0)
            problems.append(f"ixc mut {realm} exited {proc.returncode}: {log.read()[-2000:]}")
        log.close()
    wall = time.perf_counter() - start
    return wall, list(done.values()), problems


def check_realms(daemon: BenchDaemon, by_realm: dict[str, list[str]]) -> list[str]:
    problems = []
    for name, packages in by_realm.items():
        state = daemon.request("list", {"realm": name})["state"]
        if len(state["entries"]) != len(packages):
            problems.append(f"realm {name} holds {len(state['entries'])} entries, "
                            f"not {len(packages)}")
        bindir = daemon.root / "realm" / name / "bin"
        for p in packages:
            tag = p.split("tag=", 1)[1].rstrip(")")
            if not (bindir / f"slow-{tag}").exists():
                problems.append(f"realm {name} lacks bin/slow-{tag}")
                break
    return problems


def scenario(name: str, jobs: int, by_realm: dict[str, list[str]], secs: str) -> Outcome:
    daemon = BenchDaemon.start(jobs=jobs, label=f"dedup-{name}")
    try:
        daemon.request("build", {"packages": [slow("warmup", "0")]})  # toolchain + renders
        warm_rows = len(daemon.build_rows())
        union = union_of(by_realm)
        wanted = expected_uids(daemon, union)
        t0 = time.time()
        if name == "alone":
            checked = {"union": union}
            wall, client_times, problems = run_clients(daemon, checked, None)
        else:
            lock = daemon.tmp / "store.lock" if name == "serialised" else None
            checked = by_realm
            wall, client_times, problems = run_clients(daemon, by_realm, lock)
        rows = daemon.build_rows()[warm_rows:]
        problems += check_realms(daemon, checked)
        built = [r["uid"] for r in rows]
        failed = sum(1 for r in rows if r["state"] != "valid")
        missing = wanted - set(built)
        if missing:
            problems.append(f"{len(missing)} wanted uids were never built")
        extra = set(built) - wanted
        if extra:
            problems.append(f"{len(extra)} unexpected uids were built")
        outcome = Outcome(name, jobs, wall, client_times, len(rows), len(set(built)),
                          len(built) - len(set(built)), failed, len(wanted), problems)
        if rows:
            first = min(r["started"] for r in rows)
            last = max(r["ended"] for r in rows)
            outcome.lead = first - t0
            outcome.tail = t0 + wall - last
            outcome.busy = sum(r["duration"] for r in rows) / (jobs * (last - first))
        return outcome
    finally:
        daemon.stop()


def report(outcomes: list[Outcome], clients: int, per_client: int, secs: float) -> None:
    jobs = outcomes[0].jobs
    by = {o.scenario: o for o in outcomes}
    print(f"\n== --jobs {jobs} == ({load_average()} at the end)")
    print(f"{'scenario':<11} {'wall':>9} {'builds run':>11} {'distinct':>9} {'wanted':>7} "
          f"{'dup':>4} {'failed':>6} {'to 1st':>7} {'slots':>6} {'after':>6}  "
          f"client completion min / median / max")
    for o in outcomes:
        times = o.client_times
        print(f"{o.scenario:<11} {o.wall:8.2f}s {o.builds:>11} {o.distinct_built:>9} "
              f"{o.expected_uids:>7} {o.duplicates:>4} {o.failed:>6} {o.lead:6.2f}s "
              f"{100 * o.busy:5.1f}% {o.tail:5.2f}s  "
              f"{min(times):6.2f}s / {statistics.median(times):6.2f}s / {max(times):6.2f}s")
    print("(to 1st: clients' start to the first build's start; slots: build durations / "
          "(jobs x first start to last end); after: last build's end to last client exit)")
    c, a, s = by["concurrent"], by["alone"], by["serialised"]
    ideal = -(-c.expected_uids // jobs) * secs  # rounds of `jobs` parallel builds
    print(f"builds executed / distinct uids (concurrent): {c.builds} / {c.expected_uids} "
          f"= {c.builds / c.expected_uids:.3f}  (without sharing: {clients * per_client} "
          f"builds = {clients * per_client / c.expected_uids:.2f}x)")
    print(f"ideal wall for {c.expected_uids} x {secs:g} s builds on {jobs} slots: "
          f"{ideal:.2f} s")
    print(f"wall concurrent / alone:      {c.wall:.2f} s / {a.wall:.2f} s = "
          f"{c.wall / a.wall:.3f}")
    print(f"wall serialised / concurrent: {s.wall:.2f} s / {c.wall:.2f} s = "
          f"{s.wall / c.wall:.3f}")
    print(f"median client completion serialised / concurrent: "
          f"{statistics.median(s.client_times):.2f} s / "
          f"{statistics.median(c.client_times):.2f} s = "
          f"{statistics.median(s.client_times) / statistics.median(c.client_times):.3f}")
    for o in outcomes:
        for problem in o.problems:
            print(f"PROBLEM ({o.scenario}, --jobs {o.jobs}): {problem}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[2, 8],
                        help="ixd --jobs values to run (default: 2 = cores, and 8)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--shared", type=int, default=30)
    parser.add_argument("--own", type=int, default=10)
    parser.add_argument("--secs", default="0.5", help="seconds each build sleeps")
    args = parser.parse_args()
    by_realm = realms(args.clients, args.shared, args.own, args.secs)
    per_client = args.shared + args.own
    union = len(union_of(by_realm))
    print(f"dedup: {args.clients} clients x {per_client} packages "
          f"({args.shared} shared = {100 * args.shared / per_client:.0f} % overlap, "
          f"{args.own} own); union {union} distinct packages; each build sleeps "
          f"{args.secs} s; clients are `ixc mut` processes; {load_average()}")
    total = time.perf_counter()
    bad = False
    for jobs in args.jobs:
        outcomes = [scenario(name, jobs, by_realm, args.secs)
                    for name in ("concurrent", "alone", "serialised")]
        report(outcomes, args.clients, per_client, float(args.secs))
        bad = bad or any(o.problems or o.duplicates or o.failed for o in outcomes)
    print(f"\ntotal bench time {time.perf_counter() - total:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
