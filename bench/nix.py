"""Benchmark: issue 13's rows for ix and for Nix's daemon (Debian's nix-bin), side by side.

    python -m bench.nix [--packages 200] [--repeat 50] [--rounds 5] [--jobs 2]

Says "nix-bin not installed" and exits 0 when `nix-daemon` is not on PATH. Otherwise it runs
the same workloads, as whole client processes, against a real ixd (fresh root, the test
overlay) and against nix-daemon (the one answering on /nix/var/nix/daemon-socket/socket, or
one started here as root with a private nix.conf: no sandbox, no build users, no
substituters, stopped at the end):

  round trip       the cheapest request: `ixc status` / `nix-store -q --hash PATH`;
  no-op re-add     re-add 1 package to a profile of `--packages` packages:
                   `ixc mut R +bin/slow(secs=0,tag=0)` / `nix-env -p P -f F -iA p0`;
  no-op re-install all `--packages` again, in the same order:
                   `ixc mut R +...` / `nix-env -p P -f F -iA p0 ... pN`;
  waiter           a client builds a fresh 0.5 s package; 0.1 s later a second asks for the
                   same; how long after the first exits the second does:
                   `ixc build` / `nix-build` (both daemons build it once);
  8 x 40 shared    8 clients at once, each building 40 fresh packages of 0.5 s, 30 of them
                   the same for all (110 builds, 2 build slots: 27.5 s ideal): the wall time
                   until the last one is done (`--no-dedup` skips it).

Nix's packages are trivial derivations (`/bin/sh -c 'echo TAG > $out'`), ix's are
`bin/slow(secs=0,tag=N)`: each daemon builds what its own format says, the same count.
Prints p50 and p99 in milliseconds and the ratio Nix / ix (above 1: ix is faster).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench._daemon import (
    PROJECT,
    PYTHON,
    BenchDaemon,
    env,
    load_average,
    ms,
    percentile,
    slow,
    timed,
)

NIX_SOCKET = Path("/nix/var/nix/daemon-socket/socket")
NIX_CONF = """build-users-group =
sandbox = false
substituters =
max-jobs = 2
"""
#: the shared-build workload: clients, packages each, of them shared by all
DEDUP_CLIENTS, DEDUP_EACH, DEDUP_SHARED = 8, 40, 30
WAITER_SECS = "0.5"
#: the second client of the waiter row starts this long after the first
WAITER_LAG = 0.1


def checked(argv: list[str], environ: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        out = subprocess.run(argv, capture_output=True, env=environ, cwd="/")
        if out.returncode != 0:
            raise RuntimeError(f"{argv[:4]}... exited {out.returncode}: "
                               f"{out.stderr.decode(errors='replace')[-2000:]}")
    return run


def waiter(first: list[str], second: list[str], environ: dict[str, str]) -> float:
    """Seconds between the first client's exit and the second's (started WAITER_LAG after);
    0 when the second was out first (it was answered as soon as the build ended)."""
    ends: dict[str, float] = {}

    def client(name: str, argv: list[str]) -> None:
        checked(argv, environ)()
        ends[name] = time.perf_counter()

    one = threading.Thread(target=client, args=("first", first))
    one.start()
    time.sleep(WAITER_LAG)  # a benchmark's fixed lag, not a synchronisation
    client("second", second)
    one.join()
    return max(0.0, ends["second"] - ends["first"])


# --- Nix ------------------------------------------------------------------------------------


def nix_env(conf: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NIX_REMOTE": "daemon",
            "NIX_CONF_DIR": str(conf), "HOME": str(conf), "LANG": "C.UTF-8"}


def nix_expression(packages: int) -> str:
    derivations = "\n".join(f'  p{n} = mk "{n}" "0";' for n in range(packages))
    clients = "\n".join(
        f"  client{c} = map (n: mk \"shared-${{tag}}-${{toString n}}\" \"{WAITER_SECS}\") "
        f"(range {DEDUP_SHARED}) ++ map (n: mk \"own{c}-${{tag}}-${{toString n}}\" "
        f"\"{WAITER_SECS}\") (range {DEDUP_EACH - DEDUP_SHARED});"
        for c in range(DEDUP_CLIENTS))
    return ("{ tag ? \"x\" }:\nlet mk = name: secs: derivation {\n"
            "  name = \"p-${name}\"; system = builtins.currentSystem; builder = \"/bin/sh\";\n"
            "  args = [ \"-c\" \"/bin/sleep ${secs}; echo ${name} > $out\" ]; };\n"
            "  range = n: builtins.genList (i: i) n;\n"
            f"in {{\n{derivations}\n  slow = mk \"slow-${{tag}}\" \"{WAITER_SECS}\";\n"
            f"{clients}\n}}\n")


def together(argvs: list[list[str]], environ: dict[str, str]) -> float:
    """Wall time of all `argvs` started at once, until the last one exits."""
    start = time.perf_counter()
    threads = [threading.Thread(target=checked(argv, environ)) for argv in argvs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


@contextmanager
def nix_daemon(conf: Path) -> Iterator[None]:
    """The nix-daemon answering on its socket; one started here if none does."""
    environ = nix_env(conf)
    process = None
    if not _answers(environ):
        process = subprocess.Popen(["nix-daemon"], env={**environ, "NIX_REMOTE": ""},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 30
        while not _answers(environ):  # polling with a deadline
            if time.monotonic() > end or process.poll() is not None:
                raise RuntimeError("nix-daemon did not start")
            time.sleep(0.05)
    try:
        yield
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


def _answers(environ: dict[str, str]) -> bool:
    return NIX_SOCKET.exists() and subprocess.run(
        ["nix", "--extra-experimental-features", "nix-command", "store", "ping"],
        env=environ, capture_output=True).returncode == 0


def nix_rows(work: Path, packages: int, repeat: int, rounds: int,
             dedup: bool) -> dict[str, list[float]]:
    conf = work / "nix-conf"
    conf.mkdir()
    (conf / "nix.conf").write_text(NIX_CONF)
    environ = nix_env(conf)
    expression = work / "packages.nix"
    expression.write_text(nix_expression(packages))
    profile = work / "profile"
    rows: dict[str, list[float]] = {}
    with nix_daemon(conf):
        some = work / "some-file"
        some.write_text("x\n")
        path = subprocess.run(["nix-store", "--add", str(some)], env=environ, check=True,
                              capture_output=True, text=True).stdout.strip()
        rows["round trip"] = timed(repeat, checked(["nix-store", "-q", "--hash", path],
                                                   environ))
        everything = [word for n in reversed(range(packages)) for word in ("-A", f"p{n}")]
        install = ["nix-env", "-p", str(profile), "-f", str(expression), "-i"]
        start = time.perf_counter()
        checked([*install, *everything], environ)()
        print(f"  nix: profile of {packages} derivations built and installed in "
              f"{time.perf_counter() - start:.2f} s")
        rows["no-op re-add"] = timed(repeat, checked([*install, "-A", "p0"], environ))
        rows["no-op re-install"] = timed(max(3, repeat // 5),
                                         checked([*install, *everything], environ))
        build = ["nix-build", "--no-out-link", str(expression), "-A", "slow", "--argstr", "tag"]
        rows["waiter"] = [waiter([*build, tag], [*build, tag], environ)
                          for tag in (f"w{time.time_ns()}-{n}" for n in range(rounds))]
        if dedup:
            tag = f"d{time.time_ns()}"
            rows["8 x 40 shared"] = [together(
                [["nix-build", "--no-out-link", str(expression), "-A", f"client{c}",
                  "--argstr", "tag", tag] for c in range(DEDUP_CLIENTS)], environ)]
    return rows


# --- ix -------------------------------------------------------------------------------------


def ix_rows(packages: int, repeat: int, rounds: int, jobs: int,
            dedup: bool) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {}
    daemon = BenchDaemon.start(jobs=jobs, label="nix-vs-ix")
    try:
        def ixc(*words: str) -> list[str]:
            return [PYTHON, str(PROJECT / "bin" / "ixc"), "--socket", str(daemon.socket),
                    *words]

        environ = env()
        rows["round trip"] = timed(repeat, checked(ixc("status"), environ))
        selectors = [slow(str(n)) for n in reversed(range(packages))]
        everything = [f"+{s}" for s in selectors]
        start = time.perf_counter()
        checked(ixc("mut", "bench", *everything), environ)()
        print(f"  ix: realm of {packages} packages built and made in "
              f"{time.perf_counter() - start:.2f} s")
        rows["no-op re-add"] = timed(repeat, checked(ixc("mut", "bench", f"+{slow('0')}"),
                                                     environ))
        rows["no-op re-install"] = timed(max(3, repeat // 5),
                                         checked(ixc("mut", "bench", *everything), environ))
        rows["waiter"] = [
            waiter(ixc("build", sel), ixc("build", sel), environ)
            for sel in (slow(f"w{time.time_ns()}-{n}", WAITER_SECS) for n in range(rounds))]
        if dedup:
            tag = f"d{time.time_ns()}"
            shared = [slow(f"shared-{tag}-{n}", WAITER_SECS) for n in range(DEDUP_SHARED)]
            rows["8 x 40 shared"] = [together(
                [ixc("build", *shared, *(slow(f"own{c}-{tag}-{n}", WAITER_SECS)
                                         for n in range(DEDUP_EACH - DEDUP_SHARED)))
                 for c in range(DEDUP_CLIENTS)], environ)]
    finally:
        daemon.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-dedup", action="store_true",
                        help="skip the 8 clients x 40 shared packages row")
    args = parser.parse_args()
    if shutil.which("nix-daemon") is None or shutil.which("nix-env") is None:
        print("nix-bin not installed (apt-get install nix-bin to compare with Nix)")
        return 0
    if os.geteuid() != 0:
        print("bench/nix.py runs as root (it may start nix-daemon)")
        return 0
    print(f"nix vs ix: {args.packages} packages, {args.repeat} runs per row; "
          f"{load_average()}")
    work = Path(tempfile.mkdtemp(prefix="ix-nix-bench-"))
    try:
        nix = nix_rows(work, args.packages, args.repeat, args.rounds, not args.no_dedup)
        ix = ix_rows(args.packages, args.repeat, args.rounds, args.jobs, not args.no_dedup)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'row (whole client processes)':<34} {'nix p50':>11} {'ix p50':>11} "
          f"{'nix p99':>11} {'ix p99':>11}  nix/ix (p50)")
    for row in [r for r in nix if r in ix]:
        n50, i50 = percentile(nix[row], 50), percentile(ix[row], 50)
        ratio = f"{n50 / i50:6.2f}x" if i50 >= 0.001 else "(ix under 1 ms)"
        print(f"{row:<34} {ms(n50)} {ms(i50)} {ms(percentile(nix[row], 99))} "
              f"{ms(percentile(ix[row], 99))}  {ratio}")
    if "8 x 40 shared" in nix:
        print("  (8 x 40 shared: Nix's max-jobs 2 holds per client connection, and without build "
              "users nothing bounds builds machine-wide, so Nix ran up to 16 at once; ix ran "
              f"{args.jobs} for everybody)")
    print(load_average())
    return 0


if __name__ == "__main__":
    sys.exit(main())
