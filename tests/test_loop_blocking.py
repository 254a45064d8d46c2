"""Nothing of a build blocks the event loop on the file system: a real ixd, watched by an
audit hook and a trio instrument (tests/loop_audit.py), builds a package into a realm and
fails another (test recipes on the host's shell), and no blocking file-system call ran on
the loop's thread from the build's modules (the scratch, the process, the log, the build
users, the builder, the runner)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import PROJECT, RunningDaemon, public_daemon, wait_for

#: the modules of a build's path: none of them may block the loop
BUILD_PATH = ("ixd/store/builder.py", "ixd/store/scratch.py", "ixd/store/process.py",
              "ixd/store/buildlog.py", "ixd/store/buildusers.py", "ixd/build/runner.py")


def findings(report: Path) -> list[dict[str, Any]]:
    if not report.exists():
        return []
    return [json.loads(line) for line in report.read_text().splitlines()]


def of_the_build(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in found if any(frame.startswith(BUILD_PATH) for frame in f["stack"])]


#: the instrument and the hook in a process of their own (a hook is never removed): a file
#: opened on the loop is found, one opened in a worker thread or outside the run is not
CHECK = """
import sys, trio
from pathlib import Path
from tests.loop_audit import LoopAudit
top = Path(sys.argv[1])
audit = LoopAudit(top / "loop.jsonl")
sys.addaudithook(audit.audit)

def touch(path):
    open(path, "w").close()

async def main():
    touch(top / "on-the-loop")
    await trio.to_thread.run_sync(touch, top / "in-a-thread")

trio.run(main, instruments=[audit])
touch(top / "after-the-run")
"""


def test_the_audit_sees_blocking_calls_on_the_loop_and_only_there(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", CHECK, str(tmp_path)], check=True, cwd=PROJECT)
    opened = [f["arg"] for f in findings(tmp_path / "loop.jsonl") if f["event"] == "open"]
    assert opened == [repr(str(tmp_path / "on-the-loop"))], opened


pytestmark_root = pytest.mark.skipif(os.getuid() != 0, reason="a confined daemon runs as root")


@pytest.fixture(scope="module")
def audited() -> Iterator[tuple[RunningDaemon, Path]]:
    top = Path(tempfile.mkdtemp(prefix="ix-loop-audit-"))
    report = top / "loop.jsonl"
    try:
        with public_daemon("ix-audit-", ["--jobs", "1"],
                           module=("tests.loop_audit", str(report))) as running:
            yield running, report
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytestmark_root
def test_a_build_does_no_blocking_file_work_on_the_loop(
        audited: tuple[RunningDaemon, Path]) -> None:
    daemon, report = audited
    started = len(findings(report))  # the daemon's start-up: not a build's
    daemon.ixc("mut", "audit", "+bin/slow(secs=0,tag=audit)")
    failed = daemon.ixc("build", "bin/fails", check=False)
    assert failed.returncode != 0 and "broken on purpose" in failed.stderr
    # the built package's scratch, deleted from the trash off the build's way, is gone too
    wait_for(lambda: not any((daemon.root / "trash").iterdir()), "the trash emptied")
    found = findings(report)[started:]
    blocking = of_the_build(found)
    assert not blocking, json.dumps(blocking, indent=1)
