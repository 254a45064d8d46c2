"""Build confinement with bubblewrap: a build may write its `$out` and its scratch, nothing else.

`confinement_argv()` is the `bwrap` prefix a build command is appended to (after `--`). The
sandbox sees the host's root file system read-only, gets fresh private `/tmp`, `/run`,
`/var/tmp`, `/dev` and `/proc`, new user, mount, pid, ipc, uts, cgroup and (unless the node
may use it) network namespaces, and no capabilities at all:

- `--unshare-all` plus an explicit `--unshare-user`: a user namespace is always created (as
  root too), so the same flags work for a daemon running as root and as an ordinary account.
- `--cap-drop ALL`: bubblewrap keeps every capability when started by root. With
  CAP_SYS_ADMIN in its namespace a build could simply `mount -o remount,rw /` and write the
  host's `/etc` as root; without capabilities the read-only binds hold.
- `--disable-userns`: the build cannot create nested user namespaces (and with them regain
  capabilities over new mount namespaces).
- `--die-with-parent`, `--new-session`: the sandbox dies with the daemon and cannot push
  input into a terminal.

This module imports only the standard library (a test runs it as another user with the
system Python).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ixd.errors import ConfinementUnavailable

BWRAP = "bwrap"

#: how long the start-up probe may take before it counts as broken
PROBE_TIMEOUT = 30.0


def bwrap_path() -> str | None:
    """The absolute path of `bwrap` on the daemon's PATH, or None if it is not installed."""
    return shutil.which(BWRAP)


def confinement_argv(
    *,
    writable: Sequence[Path],
    net: bool,
    readable: Sequence[Path] = (),
    hidden: Sequence[Path] = (),
    info_fd: int | None = None,
    chdir: Path | None = None,
) -> list[str]:
    """The `bwrap ... --` prefix that confines a command.

    `writable` paths are bound read-write at the same place (they must exist); everything
    else is read-only. `readable` paths are bound read-only again after the private tmpfs
    mounts, so paths under `/tmp` (a daemon root there, as in tests) stay visible. `hidden`
    paths get an empty tmpfs over them (the daemon's socket and database). `info_fd` asks
    bwrap to write its JSON info (with the host pid of the sandbox's pid 1) to that fd;
    `chdir` is the command's working directory inside.
    """
    argv = [
        bwrap_path() or BWRAP,
        "--die-with-parent",
        "--new-session",
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--cap-drop",
        "ALL",
    ]
    if net:
        argv.append("--share-net")
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    argv += [
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        "--tmpfs", "/run",
        "--tmpfs", "/var/tmp",
    ]  # fmt: skip
    if net:
        argv += _resolver_binds()
    for path in readable:
        p = _absolute(path)
        argv += ["--ro-bind", p, p]
    for path in hidden:
        argv += ["--tmpfs", _absolute(path)]
    for path in writable:
        p = _absolute(path)
        argv += ["--bind", p, p]
    if chdir is not None:
        argv += ["--chdir", _absolute(chdir)]
    argv.append("--")
    return argv


def probe_confinement() -> str | None:
    """Try a trivial sandbox once (blocking, for daemon start).

    Returns None if confinement works, else a reason a person can act on.
    """
    bwrap = bwrap_path()
    if bwrap is None:
        return (
            "bubblewrap is not installed: no `bwrap` on PATH "
            f"({os.environ.get('PATH', os.defpath)}); install bubblewrap or run ixd without "
            "confinement"
        )
    argv = [*confinement_argv(writable=[], net=False), shutil.which("true") or "/bin/true"]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"`{bwrap} ... true` did not finish within {PROBE_TIMEOUT:.0f} s"
    except OSError as exc:
        return f"could not run {bwrap}: {exc}"
    if done.returncode == 0:
        return None
    stderr = done.stderr.decode(errors="replace").strip() or "(no output)"
    return (
        f"bwrap could not create a sandbox (exit status {done.returncode}): {stderr}. "
        "The kernel probably refuses user namespaces to this account: check "
        "/proc/sys/user/max_user_namespaces, /proc/sys/kernel/unprivileged_userns_clone and "
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"
    )


def check_confinement() -> None:
    """Raise ConfinementUnavailable with the probe's reason unless confinement works."""
    reason = probe_confinement()
    if reason is not None:
        raise ConfinementUnavailable(
            f"builds cannot be confined here: {reason}. Fix user namespaces or bubblewrap, "
            f"or start ixd with --no-confine to build unconfined")


def _absolute(path: Path) -> str:
    return os.fspath(Path(path).absolute())


def _resolver_binds() -> list[str]:
    """Keep name resolution working for `net` builds when /etc/resolv.conf points into /run."""
    try:
        target = Path("/etc/resolv.conf").resolve(strict=True)
    except OSError:
        return []
    if target.is_relative_to("/run"):
        p = os.fspath(target)
        return ["--ro-bind-try", p, p]
    return []
