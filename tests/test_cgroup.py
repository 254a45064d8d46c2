"""Builds' cgroups (ixd/store/cgroup.py): which mechanism a machine offers, read from /proc
(pure), and on this machine, as root, a cgroup that really bounds a process's memory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ixd.store import cgroup
from ixd.store.cgroup import Hierarchy, enter_argv, hierarchies

#: a machine like this one: v1 controllers, and a v2 hierarchy with none of them
MIXED_MOUNTS = """\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 30 0:28 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
MIXED_OWN = """\
9:name=systemd:/
4:memory:/process_api/abc
3:pids:/
2:cpu,cpuacct:/
0::/
"""
#: a v2-only machine (systemd), ixd in a service's cgroup
V2_MOUNTS = "24 19 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_OWN = "0::/system.slice/ixd.service\n"


def test_the_hierarchies_of_a_mixed_machine() -> None:
    found = hierarchies(MIXED_MOUNTS, MIXED_OWN)
    assert Hierarchy(1, frozenset({"memory"}), Path("/sys/fs/cgroup/memory"),
                     "/process_api/abc") in found
    assert Hierarchy(1, frozenset({"pids"}), Path("/sys/fs/cgroup/pids"), "/") in found
    assert Hierarchy(1, frozenset({"cpu", "cpuacct"}), Path("/sys/fs/cgroup/cpu,cpuacct"),
                     "/") in found
    v2 = [h for h in found if h.version == 2]
    assert v2 == [Hierarchy(2, frozenset(), Path("/sys/fs/cgroup/unified"), "/")]
    memory = next(h for h in found if "memory" in h.controllers)
    assert memory.own_dir == Path("/sys/fs/cgroup/memory/process_api/abc")


def test_the_hierarchy_of_a_v2_machine() -> None:
    (only,) = hierarchies(V2_MOUNTS, V2_OWN)
    assert only.version == 2
    assert only.own_dir == Path("/sys/fs/cgroup/system.slice/ixd.service")


def test_a_v2_cgroup_without_memory_is_not_used(tmp_path: Path) -> None:
    """Unified hierarchy without controllers (this machine's): v2 is refused with why, and
    without v1's memory either there is no cgroup at all."""
    own = tmp_path / "unified"
    own.mkdir()
    (own / "cgroup.controllers").write_text("")
    mounts = f"34 30 0:30 / {own} rw,relatime - cgroup2 cgroup2 rw\n"
    (tmp_path / "root").mkdir()
    found, why = cgroup.probe(tmp_path / "root", mountinfo=mounts, cgroups="0::/\n")
    assert found is None
    assert "offers nothing, not memory and pids (not delegated)" in why


def test_entering_a_cgroup_comes_before_the_command() -> None:
    argv = enter_argv(["/cg/memory/x/cgroup.procs", "/cg/pids/x/cgroup.procs"])
    assert argv[:2] == ["/bin/sh", "-c"]
    assert argv[2] == ('echo 0 > "$1" && echo 0 > "$2" && shift 2 && exec "$@"')
    assert argv[4:] == ["/cg/memory/x/cgroup.procs", "/cg/pids/x/cgroup.procs"]
    done = subprocess.run([*enter_argv([os.devnull]), "echo", "ran"], capture_output=True,
                          text=True, check=True)
    assert done.stdout == "ran\n"


@pytest.mark.skipif(os.getuid() != 0, reason="making cgroups needs root")
def test_a_cgroup_of_this_machine_bounds_memory(tmp_path: Path) -> None:
    found, why = cgroup.probe(tmp_path)
    if found is None:
        pytest.skip(f"this machine gives ixd no cgroup: {why}")
    build = found.build("test")
    try:
        build.create(64 << 20, 32)
        hog = subprocess.run([*enter_argv(build.procs), "python3", "-c",
                              "x = bytearray(256 << 20); print('held')"],
                             capture_output=True, text=True, timeout=60, check=False)
        assert hog.returncode != 0 and "held" not in hog.stdout
        assert build.oom_kills() >= 1
        small = subprocess.run([*enter_argv(build.procs), "python3", "-c", "print('fine')"],
                               capture_output=True, text=True, timeout=60, check=True)
        assert small.stdout == "fine\n"
    finally:
        build.remove()
        found.close()
    assert not any(d.exists() for d in build.dirs)
    assert not found.memory.exists()


def test_two_roots_at_one_path_have_their_own_cgroups(tmp_path: Path) -> None:
    """Two daemons at one root path in two mount namespaces (two containers, each with its
    own /ix) share the machine's cgroups: each one's start cleans away only its own."""
    root = tmp_path / "ix"
    root.mkdir()
    first = cgroup.daemon_tag(root)
    assert cgroup.daemon_tag(root) == first  # the same root: the same cgroups, restart after
    root.rename(tmp_path / "elsewhere")
    root.mkdir()  # another folder, at the same path
    assert cgroup.daemon_tag(root) != first
