"""Run `ixd` with its trio loop watched for blocking file-system calls (test_loop_blocking).

`python -m tests.loop_audit REPORT IXD-ARGS...` runs the daemon as `python -m
ixd.daemon.main IXD-ARGS...` does, with a trio instrument that knows when a task of the loop
is running and an audit hook (`sys.addaudithook`) that, while one is, records each file-system
event on the loop's thread (`open`, `os.mkdir`, `os.scandir`, `subprocess.Popen`, ...) to
REPORT: one JSON line per distinct event and stack of ix frames. Only events with an audit
hook are seen (a `stat` has none); procfs reads and a descriptor wrapped in a file object
are not disk I/O and are left out.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import trio

#: the audit events of calls that may wait for a disk (or, for Popen, a fork and exec)
BLOCKING_EVENTS = frozenset({
    "open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.remove", "os.rmdir",
    "os.symlink", "os.link", "os.chmod", "os.chown", "os.truncate", "os.utime",
    "os.walk", "shutil.rmtree", "shutil.copyfile", "shutil.copytree", "shutil.move",
    "subprocess.Popen", "sqlite3.connect",
})
#: the frames of a stack that are ix's own (the rest is trio, the standard library)
OWN = f"{os.sep}ixd{os.sep}"


class LoopAudit(trio.abc.Instrument):  # type: ignore[misc]
    """Knows whether a task of the loop is running now, on which thread; records the
    blocking events it is told of meanwhile."""

    def __init__(self, report: Path) -> None:
        self.fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self.loop_thread: int | None = None
        self.stepping = False
        self.seen: set[tuple[str, tuple[str, ...]]] = set()
        self._inside = False

    def before_run(self) -> None:
        self.loop_thread = threading.get_ident()

    def before_task_step(self, task: object) -> None:
        self.stepping = True

    def after_task_step(self, task: object) -> None:
        self.stepping = False

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in BLOCKING_EVENTS or not self.stepping or self._inside:
            return
        if threading.get_ident() != self.loop_thread:
            return
        if event == "open" and (isinstance(args[0], int)  # a descriptor wrapped: no I/O
                                or str(args[0]).startswith(("/proc/", "/dev/"))):
            return
        self._inside = True
        try:
            self._record(event, args)
        finally:
            self._inside = False

    def _record(self, event: str, args: tuple[Any, ...]) -> None:
        stack = []
        frame = sys._getframe(2)  # (no traceback: linecache would open files)
        while frame is not None and len(stack) < 12:
            path = frame.f_code.co_filename
            if OWN in path:
                where = path[path.rindex(OWN) + 1:]
                stack.append(f"{where}:{frame.f_lineno}:{frame.f_code.co_name}")
            frame = frame.f_back
        key = (event, tuple(stack))
        if key in self.seen:
            return
        self.seen.add(key)
        line = json.dumps({"event": event, "arg": repr(args[0])[:200], "stack": stack})
        os.write(self.fd, line.encode() + b"\n")


def main(argv: list[str]) -> int:
    report, *ixd_args = argv
    audit = LoopAudit(Path(report))
    sys.addaudithook(audit.audit)
    run = trio.run

    def audited_run(*args: Any, **kwargs: Any) -> Any:
        kwargs["instruments"] = [*kwargs.get("instruments", ()), audit]
        return run(*args, **kwargs)

    trio.run = audited_run  # the daemon's `trio.run(serve, ...)`
    from ixd.daemon.main import main as ixd_main
    return ixd_main(ixd_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
