"""What a client should tell its user when ixd is down: the command that starts it again.

Under runit, `runsv` runs ixd (the service's `run` execs it) in the service's folder: the
daemon writes `sv up SERVICE` beside its socket (`<socket>.hint`, read by `ixc` when the
socket refuses or is missing); started any other way, it removes a hint an earlier run left.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ixd.wire.transport import HINT_SUFFIX

log = logging.getLogger("ixd")

#: the folders `sv` finds a service in by its name alone
_SERVICE_FOLDERS = ("/etc/service", "/etc/sv", "/service", "/var/service")


def start_command(parent_comm: str, cwd: str) -> str | None:
    """`sv up NAME` when `runsv` runs this process in the service folder `cwd`, else None."""
    if parent_comm != "runsv":
        return None
    folder = Path(cwd)
    return f"sv up {folder.name if str(folder.parent) in _SERVICE_FOLDERS else folder}"


def write_start_hint(socket_path: Path) -> None:
    """Leave the command that starts this daemon beside its socket (or remove a stale one)."""
    hint = Path(f"{socket_path}{HINT_SUFFIX}")
    try:
        with open(f"/proc/{os.getppid()}/comm") as comm:
            parent = comm.read().strip()
        command = start_command(parent, os.getcwd())
    except OSError:
        command = None
    try:
        if command is None:
            with contextlib.suppress(FileNotFoundError):
                hint.unlink()
            return
        staging = hint.with_name(f".{hint.name}.{os.getpid()}")
        staging.write_text(command + "\n")
        staging.chmod(0o644)
        os.replace(staging, hint)
    except OSError as exc:  # a hint is a courtesy: the daemon serves without it
        log.warning("could not write %s: %s", hint, exc)
