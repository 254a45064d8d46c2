"""Canonicalising a build's output, reading what builds made, and the build-user pool's checks:
in-process, on trees made here."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ixd.model.layout import Layout
from ixd.store.buildusers import (
    DEFAULT_GROUP,
    BuildUser,
    BuildUserPool,
    check_pool,
    kill_processes_of,
    load_pool,
)
from ixd.store.canonical import MAX_DEPTH, STORE_MTIME, OutputRefused, canonicalise
from ixd.store.confine import build_identity_argv
from ixd.store.db import BuildDatabase
from ixd.store.elf import elf_interpreter
from ixd.store.safeio import FileTooLarge, NotRegularFile, read_bounded
from ixd.store.treehash import tree_hash
from ixd.store.verify import Problem, verify_store
from ixd.wire.errors import ConfinementUnavailable
from tests.daemon_harness import processes_of, wait_for

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="chown and mknod need root")


def make_hostile_tree(top: Path, outside: Path) -> None:
    (top / "bin").mkdir(parents=True)
    (top / "bin" / "suid").write_text("#!/bin/sh\n")
    (top / "data").write_text("data")
    (top / "data").chmod(0o666)
    os.mkfifo(top / "fifo")
    os.mknod(top / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (top / "zero").symlink_to("/dev/zero")
    (top / "escape").symlink_to(outside)
    os.link(top / "data", top / "data2")
    os.link(outside / "victim", top / "stolen")
    for path in (top, *top.rglob("*")):
        os.chown(path, 65534, 65534, follow_symlinks=False)
    (top / "bin" / "suid").chmod(0o4755)  # after chown, which clears these bits
    (top / "bin").chmod(0o2777)


def test_canonicalise_makes_a_plain_immutable_tree(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    (outside / "victim").chmod(0o644)
    top = tmp_path / "out"
    make_hostile_tree(top, outside)

    result = canonicalise(top)

    kinds = {p.name: stat.S_IFMT(p.lstat().st_mode) for p in top.rglob("*")}
    assert "fifo" not in kinds and "null" not in kinds
    assert kinds["zero"] == kinds["escape"] == stat.S_IFLNK
    for path in (top, *top.rglob("*")):
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (0, 0), path
        assert st.st_mtime == STORE_MTIME, path
        if not stat.S_ISLNK(st.st_mode):
            assert st.st_mode & 0o7222 == 0, (path, oct(st.st_mode))
    assert stat.S_IMODE((top / "bin" / "suid").stat().st_mode) == 0o555
    assert stat.S_IMODE((top / "data").stat().st_mode) == 0o444
    # hard links: every file its own, the outside file untouched
    assert (top / "data").stat().st_nlink == (top / "data2").stat().st_nlink == 1
    assert (top / "stolen").stat().st_nlink == 1
    assert (outside / "victim").stat().st_nlink == 1
    assert stat.S_IMODE((outside / "victim").stat().st_mode) == 0o644
    assert (outside / "victim").stat().st_uid == 65534  # not chowned through the link
    assert (top / "stolen").read_text() == "keep"
    notes = "\n".join(result.notes)
    for expected in ("setuid bit removed from bin/suid", "setgid bit removed from bin",
                     "removed FIFO fifo", "removed character device null",
                     "(2 links) replaced by a copy"):
        assert expected in notes
    assert result.files == 4 and result.size == len("data") * 2 + len("keep") + 10


def test_the_hash_canonicalise_computes_is_the_canonical_trees_tree_hash(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    top = tmp_path / "out"
    make_hostile_tree(top, outside)
    # names whose order tells "each folder's entries, then its sub-folders" from "depth
    # first", and byte order from case or punctuation
    for folder in ("a", "a-b", "a.b", "B", "a/z", "a/z/deep", "empty"):
        (top / folder).mkdir(parents=True)
    for file in ("a/0", "a/z/deep/x", "a-b/y", "a.b/Z", "b", "A", "a/z/1"):
        (top / file).write_bytes(file.encode() * 1000)
    (top / "a" / "z" / "1").chmod(0o751)
    (top / "dirlink").symlink_to("a/z")  # a link to a folder: a link, not walked into
    (top / "a" / "z" / "up").symlink_to("../..")

    result = canonicalise(top, content_hash=True)

    assert result.content_hash == tree_hash(top)
    assert canonicalise(top).content_hash is None  # only when asked for


def test_canonical_trees_hash_alike_and_a_second_pass_changes_nothing(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    first, second = tmp_path / "a", tmp_path / "b"
    make_hostile_tree(first, outside)
    make_hostile_tree(second, outside)
    canonicalise(first)
    canonicalise(second)
    assert tree_hash(first) == tree_hash(second)
    assert canonicalise(first).notes == []


def test_canonicalise_refuses_a_link_or_a_file_as_the_output(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("x")
    for name in ("link", "file"):
        with pytest.raises(OutputRefused, match="not a folder"):
            canonicalise(tmp_path / name)


def test_canonicalise_refuses_a_tree_nested_too_deep(tmp_path: Path) -> None:
    top = tmp_path / "out"
    deep = top
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        top.mkdir()
        dir_fd = os.open(top, os.O_RDONLY)
        for _ in range(MAX_DEPTH + 2):  # deeper than PATH_MAX allows in one path
            os.mkdir("d", dir_fd=dir_fd)
            next_fd = os.open("d", os.O_RDONLY, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        os.close(dir_fd)
    finally:
        os.close(fd)
    with pytest.raises(OutputRefused, match="nested more than"):
        canonicalise(deep)


def test_extended_attributes_are_removed(tmp_path: Path) -> None:
    top = tmp_path / "out"
    top.mkdir()
    (top / "f").write_text("x")
    try:
        os.setxattr(top / "f", "user.ix", b"1")
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip("this file system keeps no user xattrs")
        raise
    result = canonicalise(top)
    assert os.listxattr(top / "f") == []
    assert "extended attribute user.ix removed from f" in result.notes


# --- reading what builds made -----------------------------------------------------------------


def test_reads_never_follow_links_nor_wait_on_fifos(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "big").write_bytes(b"x" * 100)
    finished = threading.Event()

    def read_all() -> None:
        for name in ("fifo", "zero"):
            with pytest.raises(NotRegularFile):
                read_bounded(tmp_path / name, 10)
            with pytest.raises(NotRegularFile):
                elf_interpreter(tmp_path / name)
        finished.set()

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert finished.is_set(), "a read of a FIFO or a link to /dev/zero hung"
    with pytest.raises(FileTooLarge):
        read_bounded(tmp_path / "big", 99)
    assert read_bounded(tmp_path / "big", 100) == b"x" * 100


def test_tree_hash_does_not_hang_on_a_fifo_swapped_in(tmp_path: Path) -> None:
    top = tmp_path / "t"
    top.mkdir()
    os.mkfifo(top / "fifo")
    started = time.monotonic()
    tree_hash(top)  # a FIFO counts by its type, it is never opened
    assert time.monotonic() - started < 5


# --- the build-user pool's checks -------------------------------------------------------------


def test_unfit_build_users_are_refused_by_name() -> None:
    users = [BuildUser("ok1", 30001, 30000), BuildUser("rooty", 0, 30000),
             BuildUser("daemon", 4242, 30000), BuildUser("login", 30002, 30000),
             BuildUser("twin", 30001, 30000)]
    shells = {"ok1": "/usr/sbin/nologin", "rooty": "/usr/sbin/nologin",
              "daemon": "/usr/sbin/nologin", "login": "/bin/bash", "twin": "/bin/false"}
    with pytest.raises(ConfinementUnavailable) as caught:
        check_pool(users, "ixbld", daemon_uid=4242, shell_of=shells)
    message = caught.value.message
    assert "rooty is root" in message
    assert "daemon is the daemon's own account" in message
    assert "login can log in (shell /bin/bash)" in message
    assert "twin shares uid 30001 with ok1" in message
    assert "ok1" not in message.replace("with ok1", "")
    fit = check_pool(users[:1], "ixbld", daemon_uid=4242, shell_of=shells)
    assert fit == users[:1]
    with pytest.raises(ConfinementUnavailable, match="has no build users"):
        check_pool([], "ixbld", daemon_uid=4242, shell_of=shells)


def test_kill_reaches_a_build_user_at_its_process_limit() -> None:
    # A fork bomb leaves its uid at RLIMIT_NPROC. The helper that kills it runs as that uid
    # and must still be able to start: the limit is the build's (chpst -p), not the daemon's.
    pool = BuildUserPool(load_pool(DEFAULT_GROUP))
    with pool.holding_one() as user:  # held like a build's
        bomb = subprocess.Popen(
            [*build_identity_argv(user.uid, user.gid, max_processes=8), "/bin/sh", "-c",
             "while :; do sleep 1000 & done"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # the shell gives up at the limit and leaves 7 sleeps behind
            wait_for(lambda: len(processes_of(user.uid)) >= 7 and bomb.poll() is not None,
                     "the bomb to hit its limit")
            kill_processes_of(user)
            wait_for(lambda: not processes_of(user.uid),
                     "every process of the bomb to be gone")
        finally:
            bomb.kill()
            bomb.wait()
            subprocess.run(["pkill", "-9", "-u", str(user.uid)], check=False)


def test_verify_reports_an_entry_whose_file_turned_into_a_fifo(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "ix")
    layout.ensure()
    entry = layout.store / ("0" * 32 + "-bin-x")
    (entry / "bin").mkdir(parents=True)
    (entry / "bin" / "x").write_text("x")
    db = BuildDatabase(layout.database)
    try:
        db.register_valid("0" * 32, str(entry), "bin/x", "bin", tree_hash(entry))
    finally:
        db.close()
    assert list(verify_store(layout)) == [str(entry)]
    (entry / "bin" / "x").unlink()
    os.mkfifo(entry / "bin" / "x")  # hashing opens nothing but regular files: no hang
    (problem,) = verify_store(layout)
    assert isinstance(problem, Problem) and problem.what == "changed since it was registered"
