"""Crashes, garbage collection, live recipes, full disks: nothing valid is ever lost."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import PKGS, PROJECT, TEST_OVERLAY, RunningDaemon, start_daemon
from tests.test_multiuser import running_build, wait_for

#: kills per run of the crash test; each run draws new moments (as the property tests draw
#: new cases): IX_CRASH_SEED repeats a run's, which a failure names
CRASH_ROUNDS = int(os.environ.get("IX_CRASH_ROUNDS", "10"))
CRASH_SEED = int(os.environ.get("IX_CRASH_SEED", random.randrange(1 << 32)))


def valid_entries(root: Path) -> dict[str, str]:
    with sqlite3.connect(root / "var" / "ixd.sqlite") as db:
        return dict(db.execute("SELECT uid, path FROM store").fetchall())


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ixd.daemon.main", "verify", "--root", str(root),
                           "-q"], capture_output=True, text=True, cwd=PROJECT)


def kill9(daemon: RunningDaemon) -> None:
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()


# --- crash recovery ---------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rng = random.Random(CRASH_SEED)
    daemon = start_daemon(root)
    faults = survived = 0
    try:
        daemon.ixc("mut", "crash", "+bin/slow(secs=0,tag=base)")
        for round_number in range(CRASH_ROUNDS):
            before = valid_entries(root)
            realm_before = os.readlink(daemon.realm("crash"))
            words = ["mut", "crash", f"+bin/slow(secs=0.{rng.randint(0, 4)},tag=r{round_number})",
                     f"+bin/slow(secs=0,tag=s{round_number % 3})"]
            argv, env = daemon.ixc_argv(*words)
            client = subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            # the fault: a kill at a random moment of building, assembling or switching
            time.sleep(rng.uniform(0.0, 0.8))
            kill9(daemon)
            faults += 1
            daemon = start_daemon(root)
            out, err = client.communicate(timeout=120)  # ixc retries once ixd is back
            assert client.returncode == 0, f"IX_CRASH_SEED={CRASH_SEED}: {err}"
            checked = verify(root)
            assert checked.returncode == 0, (CRASH_SEED, checked.stdout + checked.stderr)
            after = valid_entries(root)
            lost = set(before) - set(after)
            assert not lost, (f"IX_CRASH_SEED={CRASH_SEED} round {round_number}: valid "
                              f"entries lost: {lost}")
            realm = daemon.realm("crash")
            assert os.readlink(realm) != realm_before or "unchanged" in out, CRASH_SEED
            for tag in ("base", f"r{round_number}", f"s{round_number % 3}"):
                assert (realm / "bin" / f"slow-{tag}").exists(), (CRASH_SEED, round_number,
                                                                  tag, err)
            survived += 1
    finally:
        daemon.stop()
    print(f"\ncrash rounds (IX_CRASH_SEED={CRASH_SEED}): faults injected {faults}, survived "
          f"{survived}, entries lost 0")
    assert survived == faults == CRASH_ROUNDS


def test_recovery_trashes_unregistered_entries_and_repairs_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    daemon = start_daemon(root)
    daemon.ixc("mut", "fix", "+bin/slow(secs=0,tag=one)")
    good = os.readlink(daemon.realm("fix"))
    daemon.stop()
    # what a crash may leave: a half-built entry, build scratch, a switch cut short,
    # a realm link pointing nowhere
    (root / "store" / "0").mkdir()
    half = root / "store" / ("f" * 32 + "-bin-half")
    (half / "bin").mkdir(parents=True)
    (root / "build" / "x" / "tmp").mkdir(parents=True)
    os.symlink("../store/nothing", root / "realm" / ".fix.123.tmp")
    os.unlink(root / "realm" / "fix")
    os.symlink("../store/nothing", root / "realm" / "fix")
    daemon = start_daemon(root)
    try:
        assert not half.exists() and not (root / "store" / "0").exists()
        assert list((root / "build").iterdir()) == []
        assert list((root / "trash").iterdir()) == []
        assert os.readlink(daemon.realm("fix")) == good
        assert not os.path.lexists(root / "realm" / ".fix.123.tmp")
        assert "realm links repaired" in daemon.log.read_text()
        assert verify(root).returncode == 0
    finally:
        daemon.stop()


def test_verify_finds_a_changed_entry(tmp_path: Path) -> None:
    root = tmp_path / "root"
    daemon = start_daemon(root)
    built = Path(daemon.ixc("build", "bin/slow(secs=0,tag=v)").stdout.strip())
    daemon.stop()
    target = built / "bin" / "slow-v"
    target.chmod(0o755)
    target.write_text("#!/bin/sh\necho tampered\n")
    result = verify(root)
    assert result.returncode == 1
    assert f"BAD changed since it was registered: {built}" in result.stdout


# --- garbage collection ------------------------------------------------------------------


@pytest.fixture
def gc_daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    daemon = start_daemon(tmp_path / "root", extra=["--keep-generations", "1"])
    yield daemon
    daemon.stop()


def test_gc_keeps_kept_generations_and_deletes_garbage(gc_daemon: RunningDaemon) -> None:
    d = gc_daemon
    for tag in ("g1", "g2", "g3", "g4"):
        d.ixc("let", "kept", f"+bin/slow(secs=0,tag={tag})")
    gens = json.loads(d.ixc("generations", "kept", "--json").stdout)["generations"]
    paths = {g["number"]: g["path"] for g in gens}
    d.ixc("rollback", "kept", "--to", "2")  # current: 2; newest kept by policy: 4
    package_g1 = Path(json.loads(Path(paths[1], "meta.json").read_text())["store_dirs"][0])
    result = json.loads(d.ixc("gc", "--json").stdout)
    assert result["entries"] >= 3 and result["bytes"] > 0
    assert Path(paths[2]).is_dir() and Path(paths[4]).is_dir()
    assert not Path(paths[1]).exists() and not Path(paths[3]).exists()
    assert not package_g1.exists()
    assert (d.realm("kept") / "bin" / "slow-g2").exists()
    d.ixc("rollback", "kept", "--to", "4")  # a kept generation still works after gc
    assert (d.realm("kept") / "bin" / "slow-g4").exists()
    gone = d.ixc("rollback", "kept", "--to", "1", check=False)  # gc forgot it
    assert "[E_REALM]" in gone.stderr and "has no generation 1" in gone.stderr
    assert verify(d.root).returncode == 0
    # what gc deleted is built again when asked for
    d.ixc("let", "kept", "+bin/slow(secs=0,tag=g1)")
    assert (d.realm("kept") / "bin" / "slow-g1").exists()


def test_gc_during_a_build_deletes_nothing_it_uses(gc_daemon: RunningDaemon) -> None:
    d = gc_daemon
    d.ixc("build", "bin/slow(secs=0,tag=warm)")  # the tools are built and valid now
    name = "bin/slow(secs=3,tag=during-gc)"
    argv, env = d.ixc_argv("mut", "busy", f"+{name}")
    client = subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    build = wait_for(lambda: running_build(d, name), "the build to start")
    plan = json.loads(d.ixc("plan", name).stdout)
    inputs = next(n["inputs"] for n in plan["nodes"] if n["uid"] == build["uid"])
    result = json.loads(d.ixc("gc", "--json").stdout)
    assert result["entries"] >= 1  # the warm-up build was garbage
    for path in inputs:
        assert Path(path).is_dir(), path
    _out, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    assert (d.realm("busy") / "bin" / "slow-during-gc").exists()
    assert verify(d.root).returncode == 0


# --- live recipes ------------------------------------------------------------------------


def test_edited_recipe_is_picked_up_without_restart(tmp_path: Path) -> None:
    overlay = tmp_path / "live"
    recipe = overlay / "bin" / "live" / "ix.sh"
    recipe.parent.mkdir(parents=True)
    template = ("{% extends '//die/sh.sh' %}\n{% block install %}\nmkdir -p $out/bin\n"
                "printf '#!/bin/sh\\necho VERSION\\n' > $out/bin/live\nchmod +x $out/bin/live\n"
                "{% endblock %}\n")
    recipe.write_text(template.replace("VERSION", "one"))
    daemon = start_daemon(tmp_path / "root", overlays=(overlay, TEST_OVERLAY, PKGS))
    try:
        daemon.ixc("mut", "live", "+bin/live")
        run = [str(daemon.realm("live") / "bin" / "live")]
        assert subprocess.run(run, capture_output=True, text=True).stdout == "one\n"
        first_uid = daemon.ixc("dep", "bin/live", "--json").stdout
        recipe.write_text(template.replace("VERSION", "two"))
        wait_for(lambda: daemon.ixc("dep", "bin/live", "--json").stdout != first_uid,
                 "the daemon to see the edit", deadline=20)
        daemon.ixc("mut", "live", "+bin/live")
        assert subprocess.run(run, capture_output=True, text=True).stdout == "two\n"
        assert daemon.process.poll() is None
    finally:
        daemon.stop()


# --- resource faults ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.getuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_fails_the_build_cleanly(small_disk: Path, tmp_path: Path) -> None:
    big = tmp_path / "mirror"
    big.mkdir()
    payload = os.urandom(16 << 20)
    sha = hashlib.sha256(payload).hexdigest()
    (big / sha).write_bytes(payload)
    overlay = tmp_path / "overlay"
    fetcher = overlay / "bin" / "bigsrc" / "ix.sh"
    fetcher.parent.mkdir(parents=True)
    fetcher.write_text("{% extends '//die/sh.sh' %}\n{% block fetch %}\n"
                       f"https://example.invalid/big.bin\nsha:{sha}\n{{% endblock %}}\n"
                       "{% block unpack %}{% endblock %}\n"
                       "{% block install %}\nmkdir -p $out\ncp $src/big.bin $out/\n"
                       "{% endblock %}\n")
    root = small_disk / "root"
    daemon = start_daemon(root, overlays=(overlay, TEST_OVERLAY, PKGS),
                          extra=["--mirror", f"{big}/{{sha}}"])
    try:
        daemon.ixc("mut", "disk", "+bin/slow(secs=0,tag=small)")
        before = valid_entries(root)
        link = os.readlink(daemon.realm("disk"))
        # a build that writes more than the disk holds
        failed = daemon.ixc("mut", "disk", "+bin/big(mb=40)", check=False)
        assert failed.returncode != 0 and "[E_NO_SPACE]" in failed.stderr
        assert "No space left on device" in failed.stderr
        # a download that does not fit (16 MiB, twice: cache file then the build's copy)
        failed = daemon.ixc("mut", "disk", "+bin/bigsrc", check=False)
        assert failed.returncode != 0
        assert any(f"[{code}]" in failed.stderr
                   for code in ("E_FETCH", "E_BUILD_FAILED", "E_NO_SPACE"))
        assert os.readlink(daemon.realm("disk")) == link
        assert valid_entries(root).items() >= before.items()
        # nothing but the sandboxes' shared /etc (build/.etc) is left of any build
        assert [p.name for p in (root / "build").iterdir()] == [".etc"]
        assert [p for p in (root / "src").iterdir() if p.name.startswith(".")] == []
        assert verify(root).returncode == 0
        # space back: the daemon still serves and builds
        shutil.rmtree(big)
        daemon.ixc("mut", "disk", "+bin/big(mb=1)")
        assert (daemon.realm("disk") / "share" / "big").stat().st_size == 1 << 20
    finally:
        daemon.stop()


def test_locked_database_is_an_error_not_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "root"
    daemon = start_daemon(root, extra=["--db-busy-timeout", "0.5"])
    try:
        daemon.ixc("mut", "dbl", "+bin/slow(secs=0,tag=db1)")
        holder = sqlite3.connect(root / "var" / "ixd.sqlite", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            blocked = daemon.ixc("mut", "dbl", "+bin/slow(secs=0,tag=db2)", check=False)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert blocked.returncode != 0
        assert "[E_DATABASE_BUSY]" in blocked.stderr
        assert daemon.process.poll() is None
        daemon.ixc("mut", "dbl", "+bin/slow(secs=0,tag=db2)")
        assert (daemon.realm("dbl") / "bin" / "slow-db2").exists()
    finally:
        daemon.stop()


