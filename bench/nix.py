"""Benchmark: ix against Nix's daemon (Debian's nix-bin), side by side, set up alike.

    python -m bench.nix [--packages 200] [--repeat 50] [--reps 3] [--jobs 2] [--timeout 120]

Both daemons are real multi-user installs started by this benchmark and stopped at its end:

- **Nix**: its own `nix-daemon` on a private store (`NIX_STORE_DIR`, `NIX_STATE_DIR`, ... under
  a fresh folder: nothing of an installed Nix is used or touched), a `nix.conf` written here:
  build users (a group `ixbenchnixbld` of `--jobs` members, made here and removed after, so
  at most `--jobs` builds run machine-wide: Nix's `max-jobs` counts per client connection),
  `sandbox = true`, `sandbox-fallback = false`, `/bin /usr /lib /lib64` in the sandbox (what
  ix's sandbox shows a build too), no substituters.
- **ix**: a real `ixd` on a fresh root (`--jobs N`, build users, the bubblewrap sandbox).

Each row runs the same workload as whole client processes against each daemon, A/B
interleaved (every sample of one side is followed by one of the other, and which goes first
alternates; each starts once both daemons are idle, so neither pays for what the other
still does after its client exited), `--reps` repetitions of the timed rows:

  cheapest request   `ixc status` / `nix-store -q --hash PATH`, with `python -S -c pass`
                     beside it (the interpreter's own start without `site`, as ixc's
                     launcher starts it: ixc's floor);
  re-add 1 of 200    re-add 1 package to a profile/realm of `--packages` distinct packages;
  re-install all     all `--packages` again, same order;
  8 x 40 shared      8 clients at once, each building 40 fresh 0.5 s packages, 30 of them the
                     same for all: 110 builds on `--jobs` slots (27.5 s ideal at 2);
  one client, 110    one client building the same 110 distinct fresh packages;
  waiter             a client builds a fresh 0.5 s package; 0.1 s later a second asks for the
                     same; how long after the first exits the second does.

Both sides build the same work: `/bin/sleep SECS`, then the shell's `echo` into the output
(Nix: a derivation with /bin/sh as its builder; ix: bench/overlay's `bin/nap`, whose host
shell comes through bld/host/sh, as Nix's sandbox shows the host's /bin).
Packages have distinct names (Nix reads `p-0` ... `p-199` as 200 versions of one package
`p`: a profile would keep one). A run over `--timeout` seconds is stopped and reported as
"hung". Every build row checks each package was built exactly once (ix: its `builds`
table; Nix: the clients' "building '...drv'" lines). The memory row is the daemon side's
summed PSS (every `nix-daemon` process: the master and one per connection; ixd's process)
sampled during the 8 x 40 run, its peak (a hung run's too: its daemons served 8 clients).
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench._daemon import (
    BENCH_OVERLAY,
    PYTHON,
    BenchDaemon,
    env,
    load_average,
    nap,
    percentile,
)
from tests.daemon_harness import PKGS, TEST_OVERLAY

#: the build-user group of the benchmark's Nix daemon (one member per build slot)
NIX_GROUP = "ixbenchnixbld"
NIX_CONF = """build-users-group = {group}
sandbox = true
sandbox-fallback = false
sandbox-paths = /bin /usr /lib /lib64
substituters =
max-jobs = {jobs}
experimental-features = nix-command
"""
#: the shared-build workload: clients, packages each, of them shared by all
CLIENTS, EACH, SHARED = 8, 40, 30
BUILD_SECS = "0.5"
#: the second client of the waiter row starts this long after the first
WAITER_LAG = 0.1
#: PSS is sampled this often during the shared-build row
PSS_EVERY = 0.25
#: a daemon is idle once its threads ran for none of this many seconds (`settle`)
SETTLE_QUIET = 0.003
#: ... or once this many seconds passed waiting for that
SETTLE_DEADLINE = 2.0


class Hung(Exception):
    """A workload ran past its timeout (its clients were killed)."""


# --- running clients ------------------------------------------------------------------------


@dataclass
class Ran:
    seconds: float
    stderr: str


def run(argv: list[str], environ: dict[str, str], timeout: float) -> Ran:
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, env=environ, cwd="/", timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise Hung(f"{argv[0]} ran over {timeout:.0f} s") from exc
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:5])}... exited {done.returncode}: "
                           f"{done.stderr.decode(errors='replace')[-2000:]}")
    return Ran(seconds, done.stderr.decode(errors="replace"))


def together(argvs: list[list[str]], environ: dict[str, str], timeout: float) -> list[Ran]:
    """All `argvs` started at once; each one's result (Hung if any ran past `timeout`)."""
    results: list[Ran | BaseException | None] = [None] * len(argvs)

    def one(index: int) -> None:
        try:
            results[index] = run(argvs[index], environ, timeout)
        except BaseException as exc:  # reported below
            results[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(argvs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, Ran)]


def waiter(first: list[str], second: list[str], environ: dict[str, str],
           timeout: float) -> float:
    """Seconds between the first client's exit and the second's (started WAITER_LAG after);
    0 when the second was out first."""
    ends: dict[str, float] = {}
    errors: list[BaseException] = []

    def client(name: str, argv: list[str]) -> None:
        try:
            run(argv, environ, timeout)
            ends[name] = time.perf_counter()
        except BaseException as exc:
            errors.append(exc)

    one = threading.Thread(target=client, args=("first", first))
    one.start()
    time.sleep(WAITER_LAG)  # the workload's fixed lag, not a synchronisation
    client("second", second)
    one.join()
    if errors:
        raise errors[0]
    return max(0.0, ends["second"] - ends["first"])


# --- PSS ------------------------------------------------------------------------------------


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def processes_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class PeakPss:
    """The peak of the summed PSS of `pids()` while the block runs (sampled in a thread)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, sum(pss_kib(p) for p in self.pids()))
            if self._stop.wait(PSS_EVERY):  # the sampling period, not a synchronisation
                return

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the two sides --------------------------------------------------------------------------


class Side:
    """One daemon under test: how each workload is spelt for it."""

    name = ""
    environ: dict[str, str]

    def cheapest(self) -> list[str]:
        raise NotImplementedError

    def install(self, indices: list[int]) -> list[str]:
        raise NotImplementedError

    def build(self, names: list[str]) -> list[str]:
        raise NotImplementedError

    def daemon_pids(self) -> list[int]:
        raise NotImplementedError

    def builds_of(self, names: list[str], ran: list[Ran]) -> Counter[str]:
        """How many times each of `names` was built (by the daemon) in a run."""
        raise NotImplementedError


class NixSide(Side):
    name = "nix"

    def __init__(self, work: Path, packages: int, jobs: int) -> None:
        self.work = work
        self.jobs = jobs
        nix = work / "nix"
        conf = work / "conf"
        conf.mkdir()
        (conf / "nix.conf").write_text(NIX_CONF.format(group=NIX_GROUP, jobs=jobs))
        (nix / "store").mkdir(parents=True)
        (nix / "var" / "nix").mkdir(parents=True)
        self.state = nix / "var" / "nix"
        self.environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "HOME": str(work), "NIX_REMOTE": "daemon", "NIX_CONF_DIR": str(conf),
            "NIX_STORE_DIR": str(nix / "store"), "NIX_STATE_DIR": str(self.state),
            "NIX_LOG_DIR": str(nix / "var" / "log" / "nix"),
        }
        self.expression = work / "packages.nix"
        self.expression.write_text(nix_expression(packages))
        self.profile = work / "profile"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["nix-daemon"], env={**self.environ, "NIX_REMOTE": ""},
            stdout=subprocess.DEVNULL, stderr=open(self.work / "daemon.log", "wb"))
        end = time.monotonic() + 30
        while not self._answers():  # polling with a deadline
            if time.monotonic() > end or self.process.poll() is not None:
                raise RuntimeError(f"nix-daemon did not start: "
                                   f"{(self.work / 'daemon.log').read_text()[-1000:]}")
            time.sleep(0.05)
        some = self.work / "some-file"
        some.write_text("x\n")
        self.some_path = subprocess.run(["nix-store", "--add", str(some)], env=self.environ,
                                        check=True, capture_output=True,
                                        text=True).stdout.strip()

    def _answers(self) -> bool:
        return (self.state / "daemon-socket" / "socket").exists() and subprocess.run(
            ["nix", "store", "ping"], env=self.environ, capture_output=True).returncode == 0

    def stop(self) -> None:
        if self.process is None:
            return
        for pid in self.daemon_pids():  # the per-connection daemons, then the master
            if pid != self.process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        self.process.terminate()
        self.process.wait(timeout=30)

    def cheapest(self) -> list[str]:
        return ["nix-store", "-q", "--hash", self.some_path]

    def install(self, indices: list[int]) -> list[str]:
        words = [w for n in indices for w in ("-A", f"p{n}")]
        return ["nix-env", "-p", str(self.profile), "-f", str(self.expression), "-i", *words]

    def build(self, names: list[str]) -> list[str]:
        listed = " ".join(f'"{n}"' for n in names)
        return ["nix-build", "--no-out-link", str(self.expression), "-A", "some",
                "--arg", "names", f"[ {listed} ]"]

    def daemon_pids(self) -> list[int]:
        return processes_named("nix-daemon")

    def builds_of(self, names: list[str], ran: list[Ran]) -> Counter[str]:
        built: Counter[str] = Counter()
        wanted = set(names)
        for result in ran:
            for line in result.stderr.splitlines():
                if line.startswith("building '") and line.endswith(".drv'..."):
                    name = line.rsplit("/", 1)[1].split("-", 1)[1].removesuffix(".drv'...")
                    if name in wanted:
                        built[name] += 1
        return built


def nix_expression(packages: int) -> str:
    """`p0` ... `pN` (the profile's packages, distinct names) and `some` (a list of fresh
    0.5 s builds by name)."""
    profile = "\n".join(f'  p{n} = mk "pk{n}" "0";' for n in range(packages))
    return ("{ names ? [] }:\nlet mk = name: secs: derivation {\n"
            "  inherit name; system = builtins.currentSystem; builder = \"/bin/sh\";\n"
            "  args = [ \"-c\" \"/bin/sleep ${secs}; echo ${name} > $out\" ]; };\n"
            f"in {{\n{profile}\n  some = map (n: mk n \"{BUILD_SECS}\") names;\n}}\n")


class IxSide(Side):
    name = "ix"

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.environ = env()
        self.daemon: BenchDaemon | None = None

    def start(self) -> None:
        self.daemon = BenchDaemon.start(jobs=self.jobs, label="nix-vs-ix",
                                        overlays=(BENCH_OVERLAY, TEST_OVERLAY, PKGS))

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()

    def _ixc(self, *words: str) -> list[str]:
        assert self.daemon is not None
        return self.daemon.ixc_argv(*words)

    def cheapest(self) -> list[str]:
        return self._ixc("status")

    def install(self, indices: list[int]) -> list[str]:
        return self._ixc("mut", "bench", *(f"+{nap(f'pk{n}')}" for n in indices))

    def build(self, names: list[str]) -> list[str]:
        return self._ixc("build", *(nap(n, BUILD_SECS) for n in names))

    def daemon_pids(self) -> list[int]:
        assert self.daemon is not None
        return [self.daemon.process.pid]

    def builds_of(self, names: list[str], ran: list[Ran]) -> Counter[str]:
        assert self.daemon is not None
        wanted = set(names)
        built: Counter[str] = Counter()
        for row in self.daemon.build_rows():
            if not row["name"].startswith("bin/nap") or row["state"] != "valid":
                continue
            tag = json.loads(row["flags"] or "{}").get("tag")
            if tag in wanted:
                built[tag] += 1
        return built


@contextmanager
def nix_build_users(count: int) -> Iterator[None]:
    """A build-user group of `count` members for the benchmark's nix-daemon."""
    names = [f"{NIX_GROUP}{i}" for i in range(1, count + 1)]
    made_group = False
    made: list[str] = []
    try:
        try:
            grp.getgrnam(NIX_GROUP)
        except KeyError:
            subprocess.run(["groupadd", "--system", NIX_GROUP], check=True)
            made_group = True
        for name in names:
            try:
                pwd.getpwnam(name)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                "/usr/sbin/nologin", "-g", NIX_GROUP, "-G", NIX_GROUP, name],
                               check=True)
                made.append(name)
        members = set(grp.getgrnam(NIX_GROUP).gr_mem)
        extra = members - set(names)
        if extra:
            raise RuntimeError(f"group {NIX_GROUP} has other members {sorted(extra)}: it "
                               f"would give Nix more than {count} build slots")
        yield
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)
        if made_group:
            subprocess.run(["groupdel", NIX_GROUP], capture_output=True)


# --- the table ------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    unit: str = "ms"
    samples: dict[str, list[float]] = field(default_factory=lambda: {"nix": [], "ix": []})
    notes: dict[str, list[str]] = field(default_factory=lambda: {"nix": [], "ix": []})
    pct: float = 50.0

    def add(self, side: str, value: float) -> None:
        self.samples[side].append(value)

    def cell(self, side: str) -> str:
        values = self.samples[side]
        if not values:
            return "; ".join(self.notes[side]) or "-"
        scale = 1000 if self.unit == "ms" else 1
        fmt = "{:.1f}" if self.unit == "ms" else "{:.2f}"
        low, mid = min(values) * scale, percentile(values, self.pct) * scale
        text = f"{fmt.format(mid)} (min {fmt.format(low)})"
        if self.pct != 50:
            text = f"p{self.pct:.0f} {text}"
        if self.notes[side]:
            text += " " + "; ".join(self.notes[side])
        return text

    def ratio(self) -> str:
        nix, ix = self.samples["nix"], self.samples["ix"]
        if not nix or not ix:
            return "-"
        return f"{percentile(ix, self.pct) / percentile(nix, self.pct):.2f}"


def interleaved(sides: list[Side], count: int, sample: Callable[[Side], None]) -> None:
    """`count` rounds; each round samples every side once, the first side alternating. Each
    sample starts once both daemons are done with the one before (`settle`): what a
    daemon does after its client exited (Nix's per-connection process ending, a write)
    is not charged to the other side's next sample."""
    for index in range(count):
        order = sides if index % 2 == 0 else sides[::-1]
        for side in order:
            settle(sides)
            sample(side)


def settle(sides: list[Side], deadline: float = SETTLE_DEADLINE) -> None:
    """Wait until no daemon process of any side works: the same processes, none of their
    threads run for SETTLE_QUIET seconds (CPU time from /proc's schedstat, in ns). Polling,
    with a deadline: a daemon busy past it is sampled busy."""
    end = time.monotonic() + deadline
    last: tuple[list[int], int] | None = None
    while time.monotonic() < end:
        pids = sorted(pid for side in sides for pid in side.daemon_pids())
        now = (pids, sum(cpu_ns(pid) for pid in pids))
        if now == last:
            return
        last = now
        time.sleep(SETTLE_QUIET)


def cpu_ns(pid: int) -> int:
    """The CPU time of every thread of `pid` so far, in ns (0 once it is gone)."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=50, help="samples of the quick rows")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the build rows")
    parser.add_argument("--jobs", type=int, default=2, help="build slots of each daemon")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds before a workload counts as hung")
    parser.add_argument("--skip-shared", action="store_true", help="skip the 8 x 40 row")
    args = parser.parse_args()
    if shutil.which("nix-daemon") is None or shutil.which("nix-env") is None:
        print("nix-bin not installed (apt-get install nix-bin to compare with Nix)")
        return 0
    if os.geteuid() != 0:
        print("bench/nix.py runs as root (it starts both daemons and makes build users)")
        return 0
    print(f"ix vs Nix {nix_version()}: {args.packages} packages, {args.jobs} build slots "
          f"each, {args.repeat} samples of the quick rows, {args.reps} of the build rows; "
          f"{load_average()}")
    work = Path(tempfile.mkdtemp(prefix="ix-nix-bench-"))
    rows: list[Row] = []
    try:
        with nix_build_users(args.jobs):
            nix, ix = NixSide(work, args.packages, args.jobs), IxSide(args.jobs)
            try:
                nix.start()
                ix.start()
                rows = measure([nix, ix], args)
            finally:
                nix.stop()
                ix.stop()
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    width = max(len(f"{r.name} [{r.unit}]") for r in rows) + 2
    cells = [(r, r.cell("nix"), r.cell("ix")) for r in rows]
    side = max(len(c) for _, *pair in cells for c in pair) + 2
    print(f"\n{'row':<{width}}{'Nix':>{side}}{'ix':>{side}}   ix/Nix")
    for row, nix_cell, ix_cell in cells:
        print(f"{row.name + f' [{row.unit}]':<{width}}{nix_cell:>{side}}{ix_cell:>{side}}"
              f"   {row.ratio()}")
    print("(median, min in brackets; `hung` = stopped at the timeout; ratio of medians)")
    print(load_average())
    return 0


def nix_version() -> str:
    done = subprocess.run(["nix-env", "--version"], capture_output=True, text=True)
    return done.stdout.strip().rsplit(" ", 1)[-1] or "?"


def measure(sides: list[Side], args: argparse.Namespace) -> list[Row]:
    timeout = args.timeout
    rows: list[Row] = []

    floor = Row("python -S -c pass (ixc's floor)")
    floor.samples["ix"] = [run([PYTHON, "-S", "-c", "pass"], env(), timeout).seconds
                           for _ in range(args.repeat)]
    cheapest = Row("cheapest request")
    interleaved(sides, args.repeat,
                lambda s: cheapest.add(s.name, run(s.cheapest(), s.environ, timeout).seconds))
    rows += [cheapest, floor]

    everything = list(reversed(range(args.packages)))
    for side in sides:  # building the profiles is set-up, not a row
        took = run(side.install(everything), side.environ, 600).seconds
        print(f"  {side.name}: {args.packages} packages built and installed in {took:.1f} s")
    readd = Row(f"re-add 1 of {args.packages}", pct=50)
    readd99 = Row(f"re-add 1 of {args.packages}", pct=99)
    def one_readd(side: Side) -> None:
        seconds = run(side.install([0]), side.environ, timeout).seconds
        readd.add(side.name, seconds)
        readd99.add(side.name, seconds)
    interleaved(sides, args.repeat, one_readd)
    reinstall = Row(f"re-install all {args.packages}")
    interleaved(sides, max(3, args.repeat // 5), lambda s: reinstall.add(
        s.name, run(s.install(everything), s.environ, timeout).seconds))
    rows += [readd, readd99, reinstall]

    stamp = time.time_ns()
    shared_row = Row(f"{CLIENTS} x {EACH} shared, {args.jobs} slots", unit="s")
    pss_row = Row("daemon PSS during it", unit="MiB")
    alone_row = Row(f"one client, {SHARED + CLIENTS * (EACH - SHARED)} builds", unit="s")
    waiter_row = Row("waiter's answer after the build", unit="ms")
    counter = iter(range(1 << 30))

    def shared(side: Side) -> None:
        tag = f"s{stamp}r{next(counter)}"
        common = [f"{tag}c{n}" for n in range(SHARED)]
        clients = [[*common, *(f"{tag}o{c}n{n}" for n in range(EACH - SHARED))]
                   for c in range(CLIENTS)]
        every = sorted({n for names in clients for n in names})
        with PeakPss(side.daemon_pids) as pss:
            try:
                start = time.perf_counter()
                ran = together([side.build(names) for names in clients], side.environ, timeout)
                shared_row.add(side.name, time.perf_counter() - start)
            except Hung:
                shared_row.notes[side.name].append("hung")
                ran = None
        # a hung run's daemons still served 8 clients until the timeout: their memory counts
        pss_row.add(side.name, pss.peak_kib / 1024)
        if ran is None:
            pss_row.notes[side.name].append("(hung)")
            return
        check_once(side, every, ran, shared_row)

    def alone(side: Side) -> None:
        tag = f"a{stamp}r{next(counter)}"
        names = [f"{tag}n{n}" for n in range(SHARED + CLIENTS * (EACH - SHARED))]
        try:
            ran = run(side.build(names), side.environ, timeout * 2)
        except Hung:
            alone_row.notes[side.name].append("hung")
            return
        alone_row.add(side.name, ran.seconds)
        check_once(side, names, [ran], alone_row)

    def waited(side: Side) -> None:
        name = f"w{stamp}r{next(counter)}"
        try:
            waiter_row.add(side.name, waiter(side.build([name]), side.build([name]),
                                             side.environ, timeout))
        except Hung:
            waiter_row.notes[side.name].append("hung")

    if not args.skip_shared:
        interleaved(sides, args.reps, shared)
        rows += [shared_row, pss_row]
    interleaved(sides, args.reps, alone)
    interleaved(sides, max(args.reps, 5), waited)
    rows += [alone_row, waiter_row]
    ideal = (SHARED + CLIENTS * (EACH - SHARED)) * float(BUILD_SECS) / args.jobs
    print(f"  (ideal for the build rows: {ideal:.1f} s)")
    return rows


def check_once(side: Side, names: list[str], ran: list[Ran], row: Row) -> None:
    built = side.builds_of(names, ran)
    twice = sorted(n for n, c in built.items() if c > 1)
    never = len([n for n in names if built[n] == 0])
    if twice:
        row.notes[side.name].append(f"{len(twice)} built twice!")
    if never:
        row.notes[side.name].append(f"{never} never built?")


if __name__ == "__main__":
    sys.exit(main())
