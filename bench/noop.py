"""Benchmark: latency of a no-op `ixc mut` on a 200-package realm (issue 3, item 7; issue 13).

    python -m bench.noop [--packages 200] [--repeat 200] [--jobs 2]

Starts a real ixd on a fresh root, builds realm `noop` of 200 packages
`bin/slow(secs=0,tag=N)` (added so that tag 0 ends up at the front), then repeats
`ixc mut noop +bin/slow(secs=0,tag=0)`: adding the front package again changes nothing, and
every answer is checked to say so (`changed: false`, the same generation; no generation is
added in the whole run). Measured, through the real Unix socket:

  process     the whole `ixc mut ...` command as installed (`client/ixc`, the launcher pip
              installs), interpreter start, imports, connect, handshake, request and exit
              included (what a user waits); its output is checked to say "unchanged";
  connection  in this process: connect + handshake + the request, a new connection each time;
  in-process  in this process, over one connection: the request alone (transport only).

For scale it also times `ixc ping` as a process and `ping` over one connection: the part of
the no-op that is not the daemon's mut work. Then the re-install of all 200 packages, words in
the realm's order (`ixc mut noop +PKG...` and `ixc let noop PKG...`: the same state, so also
a no-op), as processes and in-process. Prints p50, p99, mean and max in milliseconds, and at
the end issue 13's no-op rows against their goals.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from bench._daemon import (
    PROJECT,
    PYTHON,
    BenchDaemon,
    env,
    load_average,
    ms,
    mut_args,
    percentile,
    slow,
    timed,
)

REALM = "noop"


def line(label: str, samples: list[float]) -> str:
    return (f"{label:<44} p50 {ms(percentile(samples, 50))}  p99 {ms(percentile(samples, 99))}"
            f"  mean {ms(statistics.fmean(samples))}  max {ms(max(samples))}  (n={len(samples)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    problems: list[str] = []
    daemon = BenchDaemon.start(jobs=args.jobs, label="noop")
    try:
        # tag N-1 first ... tag 0 last: an added package goes to the front, so tag 0 is there
        packages = [slow(str(n)) for n in reversed(range(args.packages))]
        front = slow("0")
        start = time.perf_counter()
        created = daemon.request("mut", mut_args(REALM, packages))["realms"][0]
        setup = time.perf_counter() - start
        state = daemon.request("list", {"realm": REALM})["state"]
        entries = state["entries"]
        if len(entries) != args.packages:
            problems.append(f"realm holds {len(entries)} entries, not {args.packages}")
        if entries[0]["selector"] != front:
            problems.append(f"front entry is {entries[0]['selector']}, not {front}")
        builds = len(daemon.build_rows())
        generation = created["generation"]
        print(f"noop: realm {REALM!r} of {len(entries)} packages (front {entries[0]['selector']}),"
              f" built through ixd --jobs {args.jobs} in {setup:.2f} s ({builds} builds); "
              f"generation {generation}; {load_average()}")

        def check(result: dict[str, object], how: str) -> None:
            realm = result["realms"][0]  # type: ignore[index]
            if realm["changed"] or realm["generation"] != generation:
                problems.append(f"{how}: the no-op mut changed the realm: {realm}")

        request = mut_args(REALM, [front])
        reinstall = mut_args(REALM, packages)
        def ixc(*words: str) -> list[str]:
            return [PYTHON, str(PROJECT / "client" / "ixc"), "--socket", str(daemon.socket),
                    *words]

        argv = ixc("mut", REALM, f"+{front}")
        ping_argv = ixc("ping")
        mut_all_argv = ixc("mut", REALM, *(f"+{p}" for p in packages))
        let_all_argv = ixc("let", REALM, *packages)

        def process(command: list[str], how: str) -> Callable[[], None]:
            def run() -> None:
                out = subprocess.run(command, capture_output=True, text=True, env=env(),
                                     cwd="/")
                if out.returncode != 0:
                    problems.append(f"{how} exited {out.returncode}: {out.stderr}")
                    return
                if out.stdout != f"realm {REALM}: unchanged -> {created['path']}\n":
                    problems.append(f"{how}: the no-op mut changed the realm: {out.stdout}")
            return run

        process_mut = process(argv, "ixc mut process")

        def process_ping() -> None:
            out = subprocess.run(ping_argv, capture_output=True, text=True, env=env(), cwd="/")
            if out.returncode != 0:
                problems.append(f"ixc ping exited {out.returncode}: {out.stderr}")

        def connection_mut() -> None:
            with daemon.connect() as client:
                check(client.request("mut", request), "new connection")

        # the first no-op after the realm was made, then a short warm-up (not counted)
        start = time.perf_counter()
        with daemon.connect() as client:
            check(client.request("mut", request), "first")
        first = time.perf_counter() - start
        for _ in range(5):
            process_mut()

        proc = timed(args.repeat, process_mut)
        conn = timed(args.repeat, connection_mut)
        with daemon.connect() as client:
            inproc = timed(args.repeat, lambda: check(client.request("mut", request),
                                                      "one connection"))
            ping_inproc = timed(args.repeat, lambda: client.request("ping", {}))
            all_inproc = timed(args.repeat, lambda: check(client.request("mut", reinstall),
                                                          "re-install, one connection"))
        ping_proc = timed(args.repeat, process_ping)
        all_proc = timed(args.repeat, process(mut_all_argv, "ixc mut (all) process"))
        let_proc = timed(args.repeat, process(let_all_argv, "ixc let (all) process"))

        gens = daemon.request("generations", {"realm": REALM})["generations"]
        if len(gens) != 1:
            problems.append(f"the realm has {len(gens)} generations after the no-ops, not 1")
        if len(daemon.build_rows()) != builds:
            problems.append("a no-op mut ran a build")

        print(f"first no-op mut after the realm was made (one connection): {ms(first)}")
        print(line(f"no-op `ixc mut` process ({args.packages}-pkg realm)", proc))
        print(line("no-op mut, new connection each (in-process)", conn))
        print(line("no-op mut, one connection (in-process)", inproc))
        print(line("`ixc ping` process (for scale)", ping_proc))
        print(line("ping, one connection (for scale)", ping_inproc))
        print(line(f"no-op re-install of all {args.packages}: `ixc mut` process", all_proc))
        print(line(f"no-op re-install of all {args.packages}: `ixc let` process", let_proc))
        print(line(f"no-op re-install of all {args.packages}, one connection", all_inproc))
        print(f"issue 13 rows: no-op re-add 1 package to a {args.packages}-package realm "
              f"(process) p50 {ms(percentile(proc, 50))} / p99 {ms(percentile(proc, 99))} "
              f"(goal 60 / 100 ms); no-op re-install all {args.packages} (process) p50 "
              f"{ms(percentile(all_proc, 50))} (goal 100 ms)")
        print(f"answers checked: every no-op said changed=false at generation {generation}; "
              f"generations of {REALM!r} after the run: {len(gens)}; daemon VmHWM "
              f"{daemon.vm_hwm()}; {load_average()}")
    finally:
        daemon.stop()
    for problem in problems[:20]:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
