"""A valid package needs none of its build inputs: after gc deletes them (lib/c, the host
tools), asking for the same realm again builds nothing (real daemon, real builds), and
`ixd --keep-build-inputs` keeps them from gc instead."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.daemon_harness import RunningDaemon, start_daemon
from tests.seeded_store import BOOT_CHAIN, SeededRoot

pytestmark = pytest.mark.lib_c_root


def _builds(daemon: RunningDaemon) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(
        daemon.ixc("--json", "builds", "--limit", "1000").stdout)["builds"]
    return rows


def _entries(daemon: RunningDaemon) -> set[str]:
    """The names of the store's entries."""
    return {p.name for p in (daemon.root / "store").iterdir()}


def _lib_c(daemon: RunningDaemon, package: str) -> Path:
    closure = json.loads(daemon.ixc("--json", "dep", package).stdout)["packages"]
    return Path(next(p["out"] for p in closure if p["name"] == "lib/c"))


def test_gc_then_mut_of_the_same_realm_builds_nothing(lib_c_root: SeededRoot) -> None:
    with lib_c_root.take() as root:
        daemon = start_daemon(root, boot=BOOT_CHAIN)
        try:
            daemon.ixc("mut", "gcm", "+bin/hello", timeout=1800)
            lib_c = _lib_c(daemon, "bin/hello")
            assert lib_c.is_dir()
            built = len(_builds(daemon))
            collected = json.loads(daemon.ixc("--json", "gc").stdout)
            assert collected["entries"] > 0 and not lib_c.exists()  # build-only: garbage
            hello = daemon.realm("gcm") / "bin" / "hello"

            # the same realm again: answered at once; a build of it: nothing to build
            again = daemon.ixc("mut", "gcm", "+bin/hello")
            assert "unchanged" in again.stdout, again.stdout
            assert "nodes to build" not in again.stderr, again.stderr
            daemon.ixc("build", "bin/hello")
            # and after a restart, through a whole plan (nothing remembered of the realm)
            assert daemon.stop() == 0
            daemon = start_daemon(root, boot=BOOT_CHAIN)
            again = daemon.ixc("mut", "gcm", "+bin/hello")
            assert "nodes to build" not in again.stderr, again.stderr
            assert len(_builds(daemon)) == built, "gc then mut rebuilt build-only inputs"
            assert not lib_c.exists()
            run = subprocess.run([str(hello)], capture_output=True, text=True, check=True)
            assert run.stdout == "Hello, world!\n"
            # nothing was rebuilt, so the next gc has nothing to delete
            assert json.loads(daemon.ixc("--json", "gc").stdout)["entries"] == 0
        finally:
            assert daemon.stop() == 0, daemon.log.read_text()


def test_keep_build_inputs_keeps_them_from_gc(lib_c_root: SeededRoot) -> None:
    with lib_c_root.daemon(["--keep-build-inputs"]) as daemon:
        daemon.ixc("mut", "kept", "+bin/greet")
        lib_c = _lib_c(daemon, "bin/greet")
        tools = {name for name in _entries(daemon) if "-bin-boot-" in name}
        assert tools and lib_c.is_dir()
        daemon.ixc("gc")
        # what bin/greet and lib/greet were built from stays: lib/c, stages 0 and 1
        assert lib_c.is_dir() and tools <= _entries(daemon)
        # and once nothing kept was built from them, they are garbage like anything else
        daemon.ixc("purge", "kept")
        daemon.ixc("gc")
        assert not lib_c.exists()
