"""One user cannot starve the others (issue 21, rows 3 to 7): every attack below runs as a
real unprivileged account against a real root-run ixd, and the bound it meets is checked
here; the figures (latencies under the attack, memory, file sizes) are `bench/abuse.py`'s.

- build slots: three long builds of one user leave a slot for another user's build;
- logs: a build printing as fast as it can never makes a log past `--max-log-size` (head,
  marker, tail), others' requests are answered meanwhile, a follower is told what it was
  not sent, and gc deletes the logs of what it collected and of old failed builds;
- caches: thousands of flag sets from one user fill only that user's share of the package
  cache and of `var/renders.jsonl`, never their bounds, and push out nobody else's;
- memory: a build taking more than `--max-memory` fails with E_BUILD_LIMIT naming it (a
  cgroup where this machine has one, per-process RLIMIT_DATA otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import RunningDaemon, public_daemon, wait_for

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="attacks run as real accounts: root")

ATTACKER = "ixtbob"
VICTIM = "ixtalice"


def spawn(daemon: RunningDaemon, user: str, *words: str) -> subprocess.Popen[str]:
    argv, env = daemon.ixc_argv(*words, user=user)
    return subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def status(daemon: RunningDaemon) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(daemon.ixc("status", "--json").stdout)
    return value


@pytest.fixture(scope="module")
def two_slots(accounts: dict[str, int]) -> Iterator[RunningDaemon]:
    with public_daemon("ix-abuse-slots-", ["--jobs", "2"]) as running:
        yield running


def test_three_long_builds_of_one_user_leave_a_slot_for_another(
        two_slots: RunningDaemon) -> None:
    """Row 3: with --jobs 2, three 60 s builds of the attacker; the victim's 0.1 s build
    starts at once and is done long before the first of them could end."""
    daemon = two_slots
    longs = [f"bin/attack/hold(tag=long{i},secs=60)" for i in range(3)]
    flood = spawn(daemon, ATTACKER, "build", *longs)
    try:
        def attackers_builds() -> list[dict[str, Any]]:
            return [b for b in status(daemon)["builds"]
                    if b["name"].startswith("bin/attack/hold(")]

        def flooding() -> bool:
            assert flood.poll() is None, flood.communicate()
            builds = attackers_builds()
            return len(builds) == 3 and any(b["state"] == "running" for b in builds)

        wait_for(flooding, "the attacker's builds to be queued and one to run")
        started = time.monotonic()
        done = daemon.ixc("build", "bin/slow(secs=0.1,tag=victim)", user=VICTIM, timeout=55)
        took = time.monotonic() - started
        assert "-slow" in done.stdout
        # the attacker's builds: one running all along, the other two still waiting
        states = sorted(b["state"] for b in attackers_builds())
        assert states == ["queued", "queued", "running"], states
        assert took < 55  # not after a 60 s build of the attacker's
        assert flood.poll() is None
        assert status(daemon)["jobs_per_user"] == 1
    finally:
        os.killpg(flood.pid, 9)
        flood.communicate()


# --- logs ------------------------------------------------------------------------------------

MAX_LOG = 1 << 20
FLOOD_BYTES = 200_000_000


@pytest.fixture(scope="module")
def small_logs(accounts: dict[str, int]) -> Iterator[RunningDaemon]:
    with public_daemon("ix-abuse-logs-", ["--jobs", "2", "--max-log-size", str(MAX_LOG),
                                          "--keep-logs", "0", "--admin-group",
                                          "ixtadmins"]) as running:
        yield running


def package_uid(daemon: RunningDaemon, selector: str, user: str) -> str:
    packages = json.loads(daemon.ixc("dep", selector, "--json", user=user).stdout)["packages"]
    uid: str = next(p["uid"] for p in packages if p["name"] == selector.split("(")[0])
    return uid


class SizeWatch:
    """The largest size a file had, looked at as often as this thread can."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):  # a look every 2 ms, not a core spent on it
            try:
                self.largest = max(self.largest, self.path.stat().st_size)
            except FileNotFoundError:
                pass

    def __enter__(self) -> SizeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_build_printing_as_fast_as_it_can_keeps_its_log_within_the_bound(
        small_logs: RunningDaemon) -> None:
    """Row 4: the attacker's build prints 200 MB; its log never holds more than
    --max-log-size, keeps its head and its tail with a marker between, and the victim is
    answered meanwhile; a follower of the flood is told what it was not sent live."""
    daemon = small_logs
    selector = f"bin/attack/flood(bytes={FLOOD_BYTES})"
    uid = package_uid(daemon, selector, ATTACKER)
    log = daemon.root / "var" / "log" / f"{uid}.log"
    with SizeWatch(log) as watch:
        flood = spawn(daemon, ATTACKER, "build", selector)
        try:
            wait_for(lambda: watch.largest >= MAX_LOG // 2, "the flood to fill half its log")
            follower = spawn(daemon, VICTIM, "log", selector, "-f")
            assert daemon.ixc("status", user=VICTIM, timeout=30).returncode == 0
            out, err = flood.communicate(timeout=600)
            assert flood.returncode == 0, err
            followed, err = follower.communicate(timeout=120)
            assert follower.returncode == 0, err
        finally:
            for process in (flood, locals().get("follower")):
                if process is not None and process.poll() is None:
                    os.killpg(process.pid, 9)
                    process.communicate()
    assert 0 < watch.largest <= MAX_LOG
    data = log.read_bytes()
    assert len(data) <= MAX_LOG
    assert data.startswith(b"flood starts\nix flood: a line of build output")
    assert data.endswith(b"flood ends\n")
    assert b"bytes of output left out here: the log keeps the first" in data
    # the follower: the log's head as it was, what it did not get said, the end live
    assert followed.startswith("flood starts\n") and followed.endswith("flood ends\n")
    assert "bytes of output not shown here" in followed or "lines left out here" in followed
    assert len(followed) < 8 * MAX_LOG


def test_gc_deletes_the_logs_of_what_it_collects_and_of_old_failed_builds(
        small_logs: RunningDaemon) -> None:
    daemon = small_logs
    kept = "bin/slow(secs=0,tag=kept-log)"
    daemon.ixc("mut", "logs", f"+{kept}", user=VICTIM)
    collected = "bin/slow(secs=0,tag=collected-log)"
    daemon.ixc("build", collected, user=ATTACKER)
    failed = daemon.ixc("build", "bin/fails", user=ATTACKER, check=False)
    assert failed.returncode != 0
    logs = {name: daemon.root / "var" / "log" / f"{package_uid(daemon, name, VICTIM)}.log"
            for name in (kept, collected, "bin/fails")}
    assert all(path.exists() for path in logs.values())
    done = daemon.ixc("gc", user="ixtcarol")
    assert "build logs deleted" in done.stdout
    assert logs[kept].exists()  # a realm holds it: its log stays
    assert not logs[collected].exists()  # collected: its log went with it
    assert not logs["bin/fails"].exists()  # failed, and older than --keep-logs 0


# --- caches ----------------------------------------------------------------------------------

CACHE = 2 << 20
STORE = 1 << 20


@pytest.fixture(scope="module")
def small_caches(accounts: dict[str, int]) -> Iterator[RunningDaemon]:
    with public_daemon("ix-abuse-caches-", ["--jobs", "2", "--max-package-cache", str(CACHE),
                                            "--max-render-store", str(STORE)]) as running:
        yield running


#: the attacker's client: `plan` of N distinct flag sets over one connection
_FLAG_SETS = """
import json, sys
from ixd.wire.transport import Client
socket, count = sys.argv[1], int(sys.argv[2])
usage = []
with Client.connect(socket) as client:
    for n in range(count):
        client.request("plan", {"packages": [f"bin/wave(wave_style=s{n})"], "summary": True})
        if n % 100 == 99:
            usage.append(client.request("status", {})["caches"])
print(json.dumps(usage))
"""


def test_a_flood_of_flag_sets_fills_only_its_users_share_of_the_caches(
        small_caches: RunningDaemon) -> None:
    """Row 6: `plan` with 2,000 distinct flag sets from one user: the package cache and the
    render store stay within their bytes, that user within a quarter of them, and the
    victim's packages stay cached (its next plan renders nothing)."""
    daemon = small_caches
    victims = [f"bin/wave(wave_style=victim{n})" for n in range(5)]
    daemon.ixc("plan", *victims, user=VICTIM)
    before = json.loads(daemon.ixc("status", "--json", user=VICTIM).stdout)["caches"]
    assert before["package_bytes_yours"] > 0
    argv, env = daemon.ixc_argv("status", user=ATTACKER)
    flood = subprocess.run([*argv[:argv.index("-m")], "-c", _FLAG_SETS, str(daemon.socket),
                            "2000"], env=env, cwd="/", capture_output=True, text=True,
                           timeout=600, check=False)
    assert flood.returncode == 0, flood.stderr
    store = daemon.root / "var" / "renders.jsonl"
    for usage in json.loads(flood.stdout):  # as the attacker saw it, every 100 plans
        assert usage["package_bytes"] <= usage["package_bytes_max"] == CACHE
        assert usage["package_bytes_yours"] <= usage["package_bytes_per_user_max"] == CACHE // 4
        assert usage["render_store_bytes"] <= STORE
        assert usage["render_store_bytes_yours"] <= usage["render_store_bytes_per_user_max"]
    assert store.stat().st_size <= STORE
    after = json.loads(daemon.ixc("status", "--json", user=VICTIM).stdout)["caches"]
    assert after["package_bytes_yours"] == before["package_bytes_yours"]  # nothing pushed out
    assert after["render_store_bytes_yours"] == before["render_store_bytes_yours"]


# --- memory ----------------------------------------------------------------------------------

MAX_MEMORY = 128 << 20


@pytest.fixture(scope="module")
def small_memory(accounts: dict[str, int]) -> Iterator[RunningDaemon]:
    with public_daemon("ix-abuse-memory-", ["--jobs", "2", "--max-memory",
                                            str(MAX_MEMORY)]) as running:
        yield running


def test_a_build_taking_more_memory_than_its_bound_fails_naming_it(
        small_memory: RunningDaemon) -> None:
    """The first table's "a build allocating 5 GiB" row: allowed before; now the build's
    processes share --max-memory, and the build fails with E_BUILD_LIMIT naming it (this
    one asks for 512 MiB of a 128 MiB bound), while another user's build goes on."""
    daemon = small_memory
    hog = spawn(daemon, ATTACKER, "build", "bin/attack/hog(mb=512)")
    try:
        daemon.ixc("build", "bin/slow(secs=0,tag=beside-hog)", user=VICTIM, timeout=120)
        _, err = hog.communicate(timeout=300)
    finally:
        if hog.poll() is None:
            os.killpg(hog.pid, 9)
            hog.communicate()
    assert hog.returncode != 0
    assert "[E_BUILD_LIMIT]" in err, err
    cgroups = "cgroup" in daemon.log.read_text()
    if cgroups:  # the kernel's count says it was the bound
        assert f"used more than its --max-memory of {MAX_MEMORY} bytes" in err, err
    else:  # RLIMIT_DATA: each process's allocation past the bound failed
        assert "--max-memory" in err, err
    assert "hog holds" not in err  # it never got its 512 MiB
