"""Errors that say what to do (issue 23), each through a real daemon on its real socket: a
misspelt package, a flag nothing reads, a forgotten `+`, a missing compiler, a socket one
may not use, a full disk, a source without a mirror, a session folder one cannot make."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import RunningDaemon, public_daemon, start_daemon, wait_for


@pytest.fixture(scope="module")
def daemon() -> Iterator[RunningDaemon]:
    with public_daemon("ix-ux-errors-") as running:
        yield running


def _fails(result: subprocess.CompletedProcess[str], code: str) -> str:
    assert result.returncode != 0 and f"[{code}]" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


# --- finding what was meant -------------------------------------------------------------------


def test_a_misspelt_package_is_answered_with_the_closest_names(daemon: RunningDaemon) -> None:
    said = _fails(daemon.ixc("mut", "+bin/helo", check=False), "E_NO_RECIPE")
    assert "did you mean bin/hello" in said
    found = daemon.ixc("search", "hello").stdout.splitlines()
    assert found[0].startswith("bin/hello ") and "GNU hello" in found[0]


def test_a_flag_no_package_reads_is_warned_of_and_refused_with_strict(
        daemon: RunningDaemon) -> None:
    done = daemon.ixc("mut", "flagged", "+bin/wave", "--frobnicate")
    assert "flag --frobnicate on bin/wave is read by no package" in done.stderr
    done = daemon.ixc("mut", "flagged", "--wave_style=loud")  # read: no warning
    assert "read by no package" not in done.stderr
    said = _fails(daemon.ixc("mut", "--strict", "flagged", "--colour=red", check=False),
                  "E_UNREAD_FLAG")
    assert "--colour on realm flagged" in said and "--strict" in said
    assert "colour" not in daemon.ixc("list", "flagged").stdout  # nothing was changed
    said = _fails(daemon.ixc("build", "--strict", "bin/wave(frobnicate=1)", check=False),
                  "E_UNREAD_FLAG")


def test_a_new_realm_left_empty_is_refused_and_a_new_realm_is_announced(
        daemon: RunningDaemon) -> None:
    said = _fails(daemon.ixc("mut", "hello", check=False), "E_EMPTY_REALM")
    assert "did you mean `ixc mut +bin/hello`?" in said
    assert "hello" not in daemon.ixc("list").stdout.split()
    created = daemon.ixc("mut", "uxbne", "+bin/wave")
    assert "realm uxbne is new: created, owned by root" in created.stderr
    again = daemon.ixc("mut", "uxbne", "+bin/wave", "--wave_style=loud")
    assert "is new" not in again.stderr


def test_a_compiler_that_is_not_there_lists_the_ones_that_are(daemon: RunningDaemon) -> None:
    said = _fails(daemon.ixc("mut", "cc", "+bin/greet", "--cc=tcc", check=False),
                  "E_NO_RECIPE")
    assert "--cc=tcc names bld/host/tcc, which no overlay holds; --cc may be: clang, gcc" \
        in said


def test_a_source_without_a_mirror_says_how_to_give_one(tmp_path: Path) -> None:
    top = Path(tempfile.mkdtemp(prefix="ix-ux-nomirror-", dir="/var/tmp"))
    running = start_daemon(top / "root", mirror=False)
    try:
        said = _fails(running.ixc("build", "bin/unfetchable", check=False), "E_FETCH")
        assert "--mirror TEMPLATE" in said and "IX_MIRRORS" in said
    finally:
        running.stop()
        subprocess.run(["rm", "-rf", str(top)], check=False)


# --- the socket -------------------------------------------------------------------------------


def test_a_socket_one_may_not_use_is_said_at_once_with_its_mode_and_owner(
        daemon: RunningDaemon, accounts: dict[str, int]) -> None:
    daemon.socket.chmod(0o600)
    try:
        started = time.monotonic()
        said = _fails(daemon.ixc("mut", "+bin/wave", user="ixtalice", check=False),
                      "E_SOCKET_PERMISSION")
        assert time.monotonic() - started < 5  # no wait for a restart
        assert "mode 0600, owner root, group root" in said
    finally:
        daemon.socket.chmod(0o666)


def test_a_path_that_is_no_socket_is_said_at_once(daemon: RunningDaemon,
                                                  tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [*daemon.ixc_argv("status")[0][:3], "--socket", str(tmp_path), "mut", "+bin/wave"],
        capture_output=True, text=True, env=daemon.ixc_argv()[1], timeout=60)
    said = _fails(result, "E_NOT_A_SOCKET")
    assert f"{tmp_path} is a folder, not ixd's socket" in said
    assert time.monotonic() - started < 5
    missing = [*daemon.ixc_argv()[0][:3], "--socket"]
    said = _fails(subprocess.run(missing, capture_output=True, text=True,
                                 env=daemon.ixc_argv()[1], timeout=60), "E_USAGE")
    assert "--socket needs a path" in said


def test_a_read_only_command_waits_at_most_5_s_for_a_refusing_socket(tmp_path: Path,
                                                                      daemon: RunningDaemon
                                                                      ) -> None:
    stale = tmp_path / "ixd.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(stale))
    listener.close()  # a socket file nobody listens on: what a stopped daemon leaves
    argv, env = daemon.ixc_argv()
    started = time.monotonic()
    said = _fails(subprocess.run([*argv[:3], "--socket", str(stale), "status"],
                                 capture_output=True, text=True, env=env, timeout=60),
                  "E_NO_DAEMON")
    assert 4 < time.monotonic() - started < 15
    assert "waiting up to 5s" in said and "Connection refused" in said


# --- the session ------------------------------------------------------------------------------


def test_a_session_folder_that_cannot_be_made_is_an_ix_error(daemon: RunningDaemon,
                                                             tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder\n")
    said = _fails(daemon.ixc("session", "--svdir", str(blocked / "service"), "--once",
                             check=False), "E_SESSION")
    assert f"cannot make the service folder --svdir {blocked / 'service'}" in said


# --- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 24 MiB file system of its own (tmpfs), for a daemon's whole root."""
    if os.getuid() != 0:
        pytest.skip("mounting a small file system needs root")
    top = Path(tempfile.mkdtemp(prefix="ix-ux-disk-", dir="/var/tmp"))
    top.chmod(0o755)
    mount = top / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=755", "ixtest", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        subprocess.run(["rm", "-rf", str(top)], check=False)


def test_a_full_disk_names_the_file_system_and_what_frees_it(small_disk: Path) -> None:
    running = start_daemon(small_disk / "root", extra=["--jobs", "1"])
    try:
        # back to back, one slot: each build's 14 MiB of work is gone before the next starts
        running.ixc("mut", "tight", "+bin/scratchy(mb=14,tag=a)", "+bin/scratchy(mb=14,tag=b)")
        said = _fails(running.ixc("build", "bin/scratchy(mb=40,tag=c)", check=False),
                      "E_NO_SPACE")
        assert f"no space left on the file system on {small_disk}" in said
        assert "MiB free of 24.0 MiB" in said
        assert "`ixc gc`" in said and "--min-free SIZE" in said
        logged = wait_for(lambda: [line for line in running.log.read_text().splitlines()
                                   if "[E_NO_SPACE]" in line], "the daemon's log line")
        assert "ERROR" in logged[0] and f"file system on {small_disk}" in logged[0]
        # and the daemon serves on: what fits is built
        running.ixc("build", "bin/scratchy(mb=1,tag=d)")
        history = json.loads(running.ixc("--json", "builds").stdout)["builds"]
        assert [b["state"] for b in history if "tag=c" in b["name"]] == ["failed"]
    finally:
        running.stop()
