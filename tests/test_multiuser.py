"""Many users, one daemon: real accounts, peer credentials, one deduplicating queue."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import RunningDaemon, build_processes, public_daemon, wait_for


@pytest.fixture(scope="module")
def daemon(accounts: dict[str, int]) -> Iterator[RunningDaemon]:
    with public_daemon("ix-multi-", ["--admin-group", "ixtadmins", "--jobs", "2"]) as running:
        yield running



def status(daemon: RunningDaemon) -> list[dict[str, Any]]:
    builds: list[dict[str, Any]] = json.loads(daemon.ixc("status", "--json").stdout)["builds"]
    return builds


def running_build(daemon: RunningDaemon, name: str) -> dict[str, Any] | None:
    return next((b for b in status(daemon) if b["name"] == name and b["state"] == "running"),
                None)


def build_rows(daemon: RunningDaemon) -> list[dict[str, Any]]:
    with sqlite3.connect(daemon.root / "var" / "ixd.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM builds")]


def spawn_ixc(daemon: RunningDaemon, user: str, *words: str) -> subprocess.Popen[str]:
    argv, env = daemon.ixc_argv(*words, user=user)
    return subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_client(process: subprocess.Popen[str]) -> None:
    """Kill the client and runuser's child with it: the whole process group."""
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


# --- identity and ownership -----------------------------------------------------------


def test_users_cannot_touch_each_others_realms(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "+bin/slow(secs=0,tag=a1)", user="ixtalice")  # realm named by login
    daemon.ixc("mut", "bobside", "+bin/slow(secs=0,tag=b1)", user="ixtbob")
    alice_link = os.readlink(daemon.realm("ixtalice"))
    bob_link = os.readlink(daemon.realm("bobside"))

    refusals = [
        ("ixtbob", ["mut", "ixtalice", "+bin/slow(secs=0,tag=evil)"], "ixtalice"),
        ("ixtbob", ["purge", "ixtalice"], "ixtalice"),
        ("ixtbob", ["rollback", "ixtalice"], "ixtalice"),
        ("ixtalice", ["mut", "bobside", "-bin/slow(secs=0,tag=b1)"], "ixtbob"),
        ("ixtalice", ["mut", "system", "+bin/slow(secs=0,tag=s)"], "root"),
        # a realm named after a login belongs to that user even before it exists
        ("ixtalice", ["mut", "ixtcarol", "+bin/slow(secs=0,tag=c)"], "ixtcarol"),
    ]
    for user, words, owner in refusals:
        result = daemon.ixc(*words, user=user, check=False)
        assert result.returncode != 0, (user, words)
        assert "[E_PERMISSION]" in result.stderr, result.stderr
        assert owner in result.stderr and words[1] in result.stderr
    assert os.readlink(daemon.realm("ixtalice")) == alice_link
    assert os.readlink(daemon.realm("bobside")) == bob_link
    assert not os.path.lexists(daemon.realm("system"))
    assert not os.path.lexists(daemon.realm("ixtcarol"))
    # reading is open to all
    listing = daemon.ixc("list", "ixtalice", user="ixtbob").stdout
    assert "bin/slow(secs=0,tag=a1)" in listing


def test_admin_group_and_root_may_change_system(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "system", "+bin/slow(secs=0,tag=sys)", user="ixtcarol")
    owner = json.loads(daemon.ixc("list", "system", "--json").stdout)["owner"]
    assert owner == "root"
    daemon.ixc("mut", "system", "+bin/slow(secs=0,tag=sys2)")  # root
    refused = daemon.ixc("purge", "system", user="ixtbob", check=False)
    assert "[E_PERMISSION]" in refused.stderr
    # carol's admin rights cover root's realms, not other users'
    refused = daemon.ixc("mut", "ixtalice", "+bin/slow(secs=0,tag=c2)", user="ixtcarol",
                         check=False)
    assert "[E_PERMISSION]" in refused.stderr


def test_files_on_disk_are_writable_only_by_the_daemon(daemon: RunningDaemon) -> None:
    assert daemon.socket.stat().st_mode & 0o777 == 0o666
    for path in (daemon.root / "store", daemon.root / "realm", daemon.root / "var" / "log"):
        mode = path.stat().st_mode & 0o777
        assert mode & 0o022 == 0, (path, oct(mode))
    assert (daemon.root / "var" / "ixd.sqlite").stat().st_mode & 0o077 == 0
    probe = daemon.ixc_argv(user="ixtbob")[0][:4]  # runuser -u ixtbob --
    attempt = subprocess.run([*probe, "touch", str(daemon.root / "store" / "x")],
                             capture_output=True)
    assert attempt.returncode != 0


# --- one queue ------------------------------------------------------------------------


def test_overlapping_requests_build_each_uid_once(daemon: RunningDaemon) -> None:
    shared = ["+bin/slow(secs=2,tag=shared1)", "+bin/slow(secs=1,tag=shared2)"]
    alice = spawn_ixc(daemon, "ixtalice", "mut", "ovl-a", *shared,
                      "+bin/slow(secs=0,tag=only-a)")
    wait_for(lambda: running_build(daemon, "bin/slow(secs=2,tag=shared1)"),
             "alice's shared build to run")
    bob = spawn_ixc(daemon, "ixtbob", "mut", "ovl-b", *shared, "+bin/slow(secs=0,tag=only-b)")
    _a_out, a_err = alice.communicate(timeout=120)
    _b_out, b_err = bob.communicate(timeout=120)
    assert alice.returncode == 0, a_err
    assert bob.returncode == 0, b_err

    rows = [r for r in build_rows(daemon) if "tag=shared" in r["name"] or "tag=only" in r["name"]]
    per_uid: dict[str, int] = {}
    for row in rows:
        per_uid[row["uid"]] = per_uid.get(row["uid"], 0) + 1
    assert len(per_uid) == 4 and set(per_uid.values()) == {1}, rows
    assert {r["state"] for r in rows} == {"valid"}
    # bob saw the shared build that alice started, as a shared one
    assert "waiting for (shared) bin/slow(secs=2,tag=shared1)" in b_err
    assert "built bin/slow(secs=2,tag=shared1)" in a_err
    assert "built bin/slow(secs=2,tag=shared1)" in b_err
    for realm, own in (("ovl-a", "only-a"), ("ovl-b", "only-b")):
        bins = sorted(p.name for p in (daemon.realm(realm) / "bin").iterdir())
        assert bins == sorted(["slow-shared1", "slow-shared2", f"slow-{own}"])


def test_build_cancelled_when_its_only_waiter_leaves(daemon: RunningDaemon) -> None:
    name = "bin/slow(secs=300,tag=abandoned)"
    client = spawn_ixc(daemon, "ixtalice", "build", name)
    build = wait_for(lambda: running_build(daemon, name), "the build to start")
    log = daemon.root / "var" / "log" / f"{build['uid']}.log"
    # its script runs (started is the daemon's word; the sandbox takes a moment to start)
    wait_for(lambda: "starts" in log.read_text(), "the build's script to run")
    kill_client(client)
    wait_for(lambda: not any(b["name"] == name for b in status(daemon)),
             "the build to be cancelled")
    row = next(r for r in build_rows(daemon) if r["uid"] == build["uid"])
    assert row["state"] == "cancelled"
    assert not list((daemon.root / "store").glob(f"{build['uid']}-*"))
    assert not (daemon.root / "build" / build["uid"]).exists()
    # nothing of the build's process tree is left (killed processes may take a moment to go)
    wait_for(lambda: not build_processes(build["uid"]), "every process of the build to be gone",
             15)


def test_build_goes_on_while_another_waits(daemon: RunningDaemon) -> None:
    name = "bin/slow(secs=3,tag=kept)"
    leaver = spawn_ixc(daemon, "ixtalice", "build", name)
    wait_for(lambda: running_build(daemon, name), "the build to start")
    stayer = spawn_ixc(daemon, "ixtbob", "build", name)
    wait_for(lambda: (running_build(daemon, name) or {}).get("waiting") == ["ixtalice",
                                                                            "ixtbob"],
             "both users to wait")
    kill_client(leaver)
    out, err = stayer.communicate(timeout=60)
    assert stayer.returncode == 0, err
    assert Path(out.strip(), "bin", "slow-kept").exists()
    assert [r["state"] for r in build_rows(daemon) if r["name"] == name] == ["valid"]


# --- generations ----------------------------------------------------------------------


def test_generations_and_rollback(daemon: RunningDaemon) -> None:
    def generations() -> dict[str, Any]:
        result: dict[str, Any] = json.loads(
            daemon.ixc("generations", "gens", "--json", user="ixtbob").stdout)
        return result

    daemon.ixc("mut", "gens", "+bin/slow(secs=0,tag=g1)", user="ixtbob")
    daemon.ixc("mut", "gens", "+bin/slow(secs=0,tag=g2)", user="ixtbob")
    assert [g["number"] for g in generations()["generations"]] == [1, 2]
    # a mutation that changes nothing adds no generation
    again = daemon.ixc("mut", "gens", "+bin/slow(secs=0,tag=g2)", user="ixtbob")
    assert "unchanged" in again.stdout
    assert [g["number"] for g in generations()["generations"]] == [1, 2]
    assert (daemon.realm("gens") / "bin" / "slow-g2").exists()

    daemon.ixc("rollback", "gens", user="ixtbob")
    assert generations()["current"] == 1
    assert not (daemon.realm("gens") / "bin" / "slow-g2").exists()
    assert (daemon.realm("gens") / "bin" / "slow-g1").exists()
    daemon.ixc("rollback", "gens", "--to", "2", user="ixtbob")
    assert generations()["current"] == 2
    assert (daemon.realm("gens") / "bin" / "slow-g2").exists()
    bad = daemon.ixc("rollback", "gens", "--to", "9", user="ixtbob", check=False)
    assert "[E_REALM]" in bad.stderr and "no generation 9" in bad.stderr
    # a change after a rollback starts from the current generation
    daemon.ixc("rollback", "gens", user="ixtbob")
    daemon.ixc("mut", "gens", "+bin/slow(secs=0,tag=g3)", user="ixtbob")
    latest = generations()
    assert latest["current"] == 3
    entries = [e["selector"] for e in latest["generations"][-1]["state"]["entries"]]
    assert entries == ["bin/slow(secs=0,tag=g3)", "bin/slow(secs=0,tag=g1)"]


def test_history_and_logs_are_visible(daemon: RunningDaemon) -> None:
    daemon.ixc("build", "bin/slow(secs=0,tag=seen)", user="ixtalice")
    builds = json.loads(daemon.ixc("builds", "--json", user="ixtbob").stdout)["builds"]
    row = next(b for b in builds if b["name"] == "bin/slow(secs=0,tag=seen)")
    assert row["requested_by"] == "ixtalice" and row["state"] == "valid"
    assert {"uid", "name", "state", "duration", "requested_by"} <= row.keys()
    log = daemon.ixc("log", row["uid"], user="ixtbob").stdout
    assert "slow build seen starts" in log
    assert daemon.ixc("log", "bin/slow(secs=0,tag=seen)").stdout == log


def test_gc_needs_root_or_the_admin_group(daemon: RunningDaemon) -> None:
    refused = daemon.ixc("gc", user="ixtbob", check=False)
    assert refused.returncode != 0 and "[E_PERMISSION]" in refused.stderr
    assert "gc: " in daemon.ixc("gc", user="ixtcarol").stdout
    # what users have in their realms survives the collection
    assert (daemon.realm("ixtalice") / "bin" / "slow-a1").exists()


def test_log_follows_a_running_build(daemon: RunningDaemon) -> None:
    name = "bin/slow(secs=2,tag=followed)"
    builder = spawn_ixc(daemon, "ixtalice", "build", name)
    wait_for(lambda: running_build(daemon, name), "the build to start")
    followed = daemon.ixc("log", name, "-f", user="ixtbob")
    assert "slow build followed starts" in followed.stdout
    _, err = builder.communicate(timeout=60)
    assert builder.returncode == 0, err
    # -f returned because the build ended, not before: the output was made by then
    row = next(r for r in build_rows(daemon) if r["name"] == name)
    assert row["state"] == "valid"
