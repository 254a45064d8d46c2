"""Benchmark: `status` requests per second with 1 and with 50 concurrent clients (issue 3, 7).

    python bench/rpc.py [--clients 1 10 50] [--requests 10000] [--jobs 2]

Starts a real ixd on a fresh root. For each client count, that many processes (forked, each
with its own connection over the real Unix socket, all connected before any starts: a
barrier) send `status` requests in a loop, one at a time each, `--requests` in total split
evenly between them. Prints requests per second (all requests / from the first start to the
last end) and the p50 / p99 latency of one request. The daemon is idle (no builds), so this is
the cost of the request path itself: framing, dispatch, the status op and its reply. The
daemon's own CPU time per request (from /proc) shows whether it or the machine is the limit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import BenchDaemon, load_average, ms, percentile, run_workers

from client.transport import Client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--requests", type=int, default=10_000, help="per run, in total")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    failures = 0
    daemon = BenchDaemon.start(jobs=args.jobs, label="rpc")
    try:
        print(f"rpc: `status` over the real socket, {args.requests} requests per run, "
              f"each client one connection and one request at a time; {load_average()}")
        with daemon.connect() as client:  # warm-up: first requests, imports, caches
            for _ in range(50):
                client.request("status", {})
        for clients in args.clients:
            per_client = args.requests // clients

            def work(index: int, client: Client, per_client: int = per_client) -> list[float]:
                samples = []
                for _ in range(per_client):
                    start = time.perf_counter()
                    value = client.request("status", {})
                    samples.append(time.perf_counter() - start)
                    if "builds" not in value:
                        raise AssertionError(f"status answered {value!r}")
                return samples

            cpu = daemon.cpu_seconds()
            results = run_workers(daemon, clients, work)
            cpu = daemon.cpu_seconds() - cpu
            errors = [r for r in results if r.error]
            failures += len(errors)
            for r in errors[:5]:
                print(f"  client {r.index} failed: {r.error}")
            samples = [s for r in results if r.value for s in r.value]
            span = max(r.end for r in results) - min(r.start for r in results)
            print(f"{clients:>3} client(s) x {per_client:>4} status: "
                  f"{len(samples) / span:8.0f} req/s  p50 {ms(percentile(samples, 50))}  "
                  f"p99 {ms(percentile(samples, 99))}  mean {ms(statistics.fmean(samples))}  "
                  f"max {ms(max(samples))}  ({len(samples)} requests in {span:.2f} s, "
                  f"{len(errors)} clients failed; daemon CPU {1e6 * cpu / len(samples):.0f} "
                  f"us/request, {100 * cpu / span:.0f} % of one core)")
        print(f"daemon VmHWM {daemon.vm_hwm()}; {load_average()}")
    finally:
        daemon.stop()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
