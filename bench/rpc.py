"""Benchmark: `status` requests per second with 1 and with 50 concurrent clients (issue 3, 7),
the cheapest request as a whole `ixc` process and a waiter's finish (issue 13).

    python -m bench.rpc [--clients 1 10 50] [--requests 10000] [--jobs 2]
                        [--process-repeat 100] [--waiter-rounds 10]

Starts a real ixd on a fresh root. For each client count, that many processes (forked, each
with its own connection over the real Unix socket, all connected before any starts: a
barrier) send `status` requests in a loop, one at a time each, `--requests` in total split
evenly between them. Prints requests per second (all requests / from the first start to the
last end) and the p50 / p99 latency of one request. The daemon is idle (no builds), so this is
the cost of the request path itself: framing, dispatch, the status op and its reply. The
daemon's own CPU time per request (from /proc) shows whether it or the machine is the limit.

Then issue 13's rows:
  cheapest request  `ixc status` as a whole process (interpreter start, imports, connect,
                    handshake, request, exit), run as `python -m client.main` and as the
                    installed launcher `client/ixc`; the bare interpreter (`python -c pass`) for
                    scale;
  waiter's finish   one client starts a shared build (`bin/slow`, 0.5 s); once it has
                    started, a second client asks for the same (`build`, and `mut` of a realm
                    holding it); the time from the first client's `finished` event to the
                    second client's reply.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time

from bench._daemon import (
    PROJECT,
    PYTHON,
    BenchDaemon,
    env,
    load_average,
    ms,
    mut_args,
    percentile,
    run_workers,
    slow,
)
from ixd.wire.frames import Event
from ixd.wire.transport import Client

#: how long one shared build of the waiter row takes
WAITER_BUILD_SECS = "0.5"


def process_samples(argv: list[str], repeat: int) -> list[float]:
    """Wall time of `argv` as a whole process, `repeat` times (after 3 not counted)."""
    samples = []
    for index in range(repeat + 3):
        start = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, env=env(), cwd="/")
        took = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"{argv} exited {out.returncode}: {out.stderr!r}")
        if index >= 3:
            samples.append(took)
    return samples


def summary(samples: list[float]) -> str:
    return (f"p50 {ms(percentile(samples, 50))}  p99 {ms(percentile(samples, 99))}  "
            f"max {ms(max(samples))}  (n={len(samples)})")


def waiter_finish(daemon: BenchDaemon, op: str, tag: str) -> float:
    """Seconds from the end of a shared build (the starting client's `finished` event) to
    the reply of a second client waiting for it with `op`."""
    selector = slow(tag, WAITER_BUILD_SECS)
    started = threading.Event()
    finished: list[float] = []
    failed: list[BaseException] = []

    def on_event(event: Event) -> None:
        if event.kind == "started":
            started.set()
        elif event.kind == "finished" and event.data["name"].startswith("bin/slow"):
            finished.append(time.perf_counter())

    def first() -> None:
        try:
            with daemon.connect() as client:
                client.request("build", {"packages": [selector]}, on_event)
        except BaseException as exc:
            failed.append(exc)
            started.set()

    thread = threading.Thread(target=first)
    thread.start()
    started.wait(60)
    args = ({"packages": [selector]} if op == "build"
            else mut_args(f"waiter-{tag}", [selector]))
    with daemon.connect() as client:
        client.request(op, args)
        replied = time.perf_counter()
    thread.join()
    if failed or not finished:
        raise RuntimeError(f"the first client's build failed: {failed}")
    return replied - finished[0]


def issue_13_rows(daemon: BenchDaemon, repeat: int, rounds: int) -> None:
    print(f"issue 13: `ixc status` as a whole process, {repeat} runs each; {load_average()}")
    bare = process_samples([PYTHON, "-c", "pass"], repeat)
    print(f"  bare interpreter (python -c pass)             {summary(bare)}")
    rows: dict[str, list[float]] = {}
    for label, argv in [
        ("python -m client.main status", daemon.ixc_argv("status")),
        ("client/ixc status (the installed launcher)",
         [PYTHON, str(PROJECT / "client" / "ixc"), "--socket", str(daemon.socket), "status"]),
    ]:
        rows[label] = process_samples(argv, repeat)
        print(f"  {label:<46}{summary(rows[label])}")
    print(f"issue 13: a waiter's finish after a shared build of {WAITER_BUILD_SECS} s ends, "
          f"{rounds} rounds each; {load_average()}")
    for op in ("build", "mut"):
        finishes = [waiter_finish(daemon, op, f"waiter-{op}-{n}-{time.time_ns()}")
                    for n in range(rounds)]
        rows[f"waiter ({op})"] = finishes
        print(f"  waiter's `{op}` reply after the build ended   {summary(finishes)}")
    launcher = rows["client/ixc status (the installed launcher)"]
    print(f"issue 13 rows: cheapest request, whole client process p50 "
          f"{ms(percentile(launcher, 50))} (goal 35 ms; bare interpreter "
          f"{ms(percentile(bare, 50))}); a waiter's finish after a shared build ends p50 "
          f"{ms(percentile(rows['waiter (build)'], 50))} (build), "
          f"{ms(percentile(rows['waiter (mut)'], 50))} (mut) (goal 20 ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--requests", type=int, default=10_000, help="per run, in total")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--process-repeat", type=int, default=100)
    parser.add_argument("--waiter-rounds", type=int, default=10)
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
        issue_13_rows(daemon, args.process_repeat, args.waiter_rounds)
        print(f"daemon VmHWM {daemon.vm_hwm()}; {load_average()}")
    finally:
        daemon.stop()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
