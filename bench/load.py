"""Benchmark: 50 concurrent clients x 100 mixed requests against one ixd (issue 4, item 6).

    python -m bench.load [--clients 50] [--requests 100] [--jobs 2] [--seed 1]

Starts a real ixd on a fresh root and gives each client its own realm `loadK` (made before
the timed part: `bin/slow(secs=0,tag=base)` shared by all, then `bin/slow(secs=0,tag=homeK)`
at the front). Then all clients (forked processes, each with its own connection over the
real Unix socket, started together) send 100 requests each, one at a time, in a shuffled mix
(deterministic for --seed):

  40 status   the queue and running builds;
  25 dep      the closure of the realm's two packages;
  25 mut      a no-op: `mut loadK +bin/slow(secs=0,tag=homeK)` re-adds the front package;
              the answer must say unchanged, at generation 1;
  10 build    small real builds (`bin/slow(secs=0,tag=...)`, each a confined build): 5 drawn
              from 10 tags shared by all clients (joined or already valid: build:shared), 5
              of the client's own (always a new build: build:own).

Every request must succeed (and each answer is checked); failures are counted and printed and
make the exit status 1. Afterwards the build database must hold each uid built once and all
valid, and every realm exactly one generation. Prints p50 / p99 latency per op kind and
overall, and requests per second (all requests / from the first start to the last end).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench._daemon import (
    BenchDaemon,
    load_average,
    ms,
    mut_args,
    percentile,
    run_workers,
    slow,
)
from ixd.wire.transport import Client

MIX = {"status": 40, "dep": 25, "mut": 25, "build": 10}
SHARED_TAGS = 10


def plan_requests(index: int, count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """Client `index`'s requests, in a shuffled order deterministic for `seed`."""
    rng = random.Random(seed * 1000 + index)
    scale = count / sum(MIX.values())
    kinds = [k for k, n in MIX.items() for _ in range(round(n * scale))]
    kinds = (kinds + ["status"] * count)[:count]
    rng.shuffle(kinds)
    realm = f"load{index}"
    home = slow(f"home{index}")
    builds = 0
    requests: list[tuple[str, dict[str, Any]]] = []
    for kind in kinds:
        if kind == "status":
            requests.append(("status", {}))
        elif kind == "dep":
            requests.append(("dep", {"packages": [home, slow("base")]}))
        elif kind == "mut":
            requests.append(("mut", mut_args(realm, [home])))
        else:
            shared = builds % 2 == 0
            tag = f"shared{rng.randrange(SHARED_TAGS)}" if shared else f"c{index}-{builds}"
            builds += 1
            requests.append(("build", {"packages": [slow(tag)], "shared": shared}))
    return requests


def check(op: str, value: Any) -> None:
    """Raise if an answer is not what a successful request of `op` returns."""
    if op == "status":
        assert isinstance(value["builds"], list), value
    elif op == "dep":
        names = {p["name"] for p in value["packages"]}
        assert "bin/slow" in names and len(value["packages"]) >= 3, value
    elif op == "mut":
        realm = value["realms"][0]
        assert realm["changed"] is False and realm["generation"] == 1, \
            f"the no-op mut changed the realm: {realm}"
    elif op == "build":
        out = value["packages"][0]["out"]
        assert out and Path(out).is_dir(), f"no output directory {out!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=100, help="per client")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    problems: list[str] = []
    daemon = BenchDaemon.start(jobs=args.jobs, label="load")
    try:
        start = time.perf_counter()
        with daemon.connect() as client:
            for index in range(args.clients):
                result = client.request("mut", mut_args(f"load{index}",
                                                        [slow("base"), slow(f"home{index}")]))
                assert result["realms"][0]["generation"] == 1, result
        setup_rows = len(daemon.build_rows())
        print(f"load: {args.clients} clients x {args.requests} requests "
              f"({', '.join(f'{n} % {k}' for k, n in MIX.items())}), ixd --jobs {args.jobs}; "
              f"{args.clients} realms made in {time.perf_counter() - start:.2f} s "
              f"({setup_rows} builds); {load_average()}")
        plans = [plan_requests(i, args.requests, args.seed) for i in range(args.clients)]

        def work(index: int, client: Client) -> list[tuple[str, float, str | None]]:
            samples: list[tuple[str, float, str | None]] = []
            for op, op_args in plans[index]:
                kind = op
                if op == "build":
                    op_args = dict(op_args)
                    kind = "build:shared" if op_args.pop("shared") else "build:own"
                begin = time.perf_counter()
                error = None
                try:
                    check(op, client.request(op, op_args))
                except Exception as exc:  # counted, and the client goes on
                    error = f"{type(exc).__name__}: {exc}"
                samples.append((kind, time.perf_counter() - begin, error))
            return samples

        results = run_workers(daemon, args.clients, work)
        span = max(r.end for r in results) - min(r.start for r in results)
        by_op: dict[str, list[float]] = defaultdict(list)
        failed: Counter[str] = Counter()
        for r in results:
            if r.error:
                problems.append(f"client {r.index} died: {r.error}")
                continue
            for kind, latency, error in r.value:
                op = kind.split(":")[0]
                by_op[op].append(latency)
                if kind != op:
                    by_op[kind].append(latency)
                if error:
                    failed[op] += 1
                    if kind != op:
                        failed[kind] += 1
                    problems.append(f"client {r.index} {kind}: {error}")
        every = [s for op, samples in by_op.items() if op in MIX for s in samples]
        print(f"{'op':<13} {'count':>6} {'failed':>6} {'p50':>11} {'p99':>11} {'mean':>11} "
              f"{'max':>11}")
        for op in [*MIX, "build:shared", "build:own", "all"]:
            samples = every if op == "all" else by_op.get(op, [])
            if not samples:
                continue
            count_failed = sum(failed.values()) if op == "all" else failed[op]
            print(f"{op:<13} {len(samples):>6} {count_failed:>6} "
                  f"{ms(percentile(samples, 50))} {ms(percentile(samples, 99))} "
                  f"{ms(statistics.fmean(samples))} {ms(max(samples))}")
        expected = args.clients * args.requests
        print(f"throughput: {len(every)} of {expected} requests answered in {span:.2f} s = "
              f"{len(every) / span:.0f} req/s; failures: {sum(failed.values())}; "
              f"clients died: {sum(1 for r in results if r.error)}")
        if len(every) != expected:
            problems.append(f"only {len(every)} of {expected} requests were made")

        rows = daemon.build_rows()
        timed = rows[setup_rows:]
        uids = Counter(r["uid"] for r in rows)
        twice = {u: n for u, n in uids.items() if n > 1}
        not_valid = [r for r in rows if r["state"] != "valid"]
        if twice:
            problems.append(f"{len(twice)} uids were built more than once")
        if not_valid:
            problems.append(f"{len(not_valid)} builds did not end valid: "
                            f"{[(r['name'], r['state'], r['error']) for r in not_valid[:3]]}")
        build_requests = len(by_op.get("build", []))
        durations = [r["duration"] for r in timed if r["duration"] is not None]
        print(f"builds during the load: {len(timed)} for {build_requests} build requests "
              f"({len({r['uid'] for r in timed})} distinct uids, {len(twice)} built twice, "
              f"{len(not_valid)} not valid); one build itself (builds table duration): "
              f"p50 {ms(percentile(durations, 50))}, p99 {ms(percentile(durations, 99))}")
        with daemon.connect() as client:
            many = [name for name in (f"load{i}" for i in range(args.clients))
                    if len(client.request("generations", {"realm": name})["generations"]) != 1]
        if many:
            problems.append(f"realms with more than one generation: {many[:5]}")
        print(f"daemon VmHWM {daemon.vm_hwm()}; {load_average()}")
    finally:
        daemon.stop()
    for problem in problems[:20]:
        print(f"PROBLEM: {problem}")
    if len(problems) > 20:
        print(f"... and {len(problems) - 20} more problems")
    print("RESULT: " + ("all requests succeeded" if not problems else
                        f"FAILED ({len(problems)} problems)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
