"""Build confinement with bubblewrap: an allow-list of what a build may see, and its limits.

`confinement_argv()` is the `bwrap` prefix a build command is appended to (after `--`). The
sandbox's root is an empty tmpfs (read-only once set up) holding only:

- with `host_view` (a build that uses the host's tools: stage 0's captures, the `bld/host/*`
  wrappers, the daemon's own helper builds), the host's `/usr` (and the `/bin`, `/lib`…
  links or folders beside it) read-only, and a few files of `/etc` a tool chain needs
  (`alternatives/`, the loader cache); without it (every build on the bootstrapped chain,
  docs/recipes.md "The build's view of the host"), none of the host's programs, libraries
  or their configuration: `/bin/sh` and `/usr/bin/env` are links (`links`) to the build's
  own declared shell and `env`, store inputs;
- a `passwd` and `group` of the sandbox's own; never `/etc/shadow`, `/root`, home folders,
  the rest of the daemon's root or its socket;
- the build's own view of the store: a folder of its scratch bound read-write at the store's
  path, holding its output (`$out`), with each input of the build (store dirs of its
  dependencies) bound read-only on top; its source files read-only at their own paths; its
  scratch folder, read-write, at its own path and at `/tmp`;
- fresh `/proc`, a minimal `/dev` (read-only, with a small `/dev/shm`).

New user, mount, pid, ipc, uts, cgroup and (unless the node may use it) network namespaces;
no capabilities (`--cap-drop ALL`); no nested user namespaces (`--disable-userns`); a new
session; the sandbox dies with the daemon. The daemon starts bwrap as a build user of its own
(`ixd.store.buildusers`), so inside it looks like uid 1000 and on the host it is that build user.

`build_identity_argv()` is the `chpst` prefix that runs a build as its build user with its
processes bounded (RLIMIT_NPROC counts per real uid, and every running build has a uid of its
own, so it bounds exactly one build); `identity_argv()` runs a helper as a build user.

This module imports only the standard library.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ixd.wire.errors import ConfinementUnavailable

BWRAP = "bwrap"
CHPST = "chpst"

#: how long the start-up probe may take before it counts as broken
PROBE_TIMEOUT = 30.0
#: the uid and gid a build sees itself as (the same in every build: outputs that record an
#: owner do not depend on which build user ran them)
SANDBOX_UID = 1000
SANDBOX_GID = 1000
#: size of the sandbox's /dev/shm (a tmpfs: memory, so it is kept small)
SHM_SIZE = 64 << 20

#: top-level host folders a tool chain needs: bound read-only, or recreated as the same link
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: files of /etc host tools read (alternatives: cc -> gcc; the dynamic loader's cache)
_ETC_FOR_TOOLS = ("/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf",
                  "/etc/ld.so.conf.d", "/etc/localtime")
#: and what a `net` build needs to resolve names and check certificates
_ETC_FOR_NET = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf",
                "/etc/gai.conf", "/etc/services", "/etc/protocols", "/etc/ssl",
                "/etc/ca-certificates")


def bwrap_path() -> str | None:
    """The absolute path of `bwrap` on the daemon's PATH, or None if it is not installed."""
    return tool_path(BWRAP)


#: tools found on a PATH: (name, PATH) -> absolute path
_FOUND_TOOLS: dict[tuple[str, str | None], str] = {}


def tool_path(name: str) -> str | None:
    """`shutil.which(name)`, remembered once found for as long as PATH stays the same: a
    look-up is a stat call per folder of PATH, and every build names three tools."""
    path = os.environ.get("PATH")
    found = _FOUND_TOOLS.get((name, path))
    if found is None:
        found = shutil.which(name, path=path)
        if found is not None:
            _FOUND_TOOLS[(name, path)] = found
    return found


def sandbox_etc(passwd_name: str = "ixbuild") -> dict[str, str]:
    """The sandbox's own /etc/passwd and /etc/group (no host account is named in them)."""
    return {
        "passwd": (f"root:x:0:0:root:/:/bin/sh\n"
                   f"{passwd_name}:x:{SANDBOX_UID}:{SANDBOX_GID}:ix build:/tmp:/bin/sh\n"
                   f"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
        "group": (f"root:x:0:\n{passwd_name}:x:{SANDBOX_GID}:\nnogroup:x:65534:\n"),
    }


def confinement_argv(
    *,
    net: bool,
    host_view: bool = True,
    links: Sequence[tuple[str, str]] = (),
    store_view: tuple[Path, Path] | None = None,
    inputs: Sequence[Path] = (),
    binds: Sequence[tuple[Path, Path]] = (),
    tmp: Path | None = None,
    etc: Path | None = None,
    info_fd: int | None = None,
    block_fd: int | None = None,
    chdir: Path | None = None,
) -> list[str]:
    """The `bwrap ... --` prefix that confines a command.

    `host_view`: the host's system folders are bound read-only (else none of them);
    `links` are (target, path) pairs made as links in the sandbox (`/bin/sh` -> a store
    input's shell).
    `store_view` (host folder, store path): the build's own folder bound read-write at the
    store's path, under the inputs (a build may remove and make its `$out` again, or write
    beside it: all of it in its own folder). `inputs` are bound read-only at their own
    paths (they must exist), over the store view; `binds` are
    (host path, sandbox path) pairs bound read-write; `tmp` is bound read-write at `/tmp`
    (else /tmp is a small tmpfs); `etc` is a folder holding the sandbox's `passwd` and
    `group`. `info_fd` asks bwrap to write its JSON info (with the host pid of the sandbox's
    pid 1) to that fd; `block_fd`: bwrap sets the sandbox up, then waits for a byte on that
    fd before it runs the command; `chdir` is the command's working directory inside.
    """
    argv = [
        bwrap_path() or BWRAP,
        "--die-with-parent",
        "--new-session",
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_GID),
        "--hostname", "ix",
        "--cap-drop", "ALL",
    ]  # fmt: skip
    if net:
        argv.append("--share-net")
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    if block_fd is not None:
        argv += ["--block-fd", str(block_fd)]
    if host_view:
        argv += _system_dirs_argv()
    argv += ["--dir", "/etc"]
    for path in (*(_ETC_FOR_TOOLS if host_view else ()), *(_ETC_FOR_NET if net else ())):
        argv += ["--ro-bind-try", path, path]
    if net:
        argv += _resolver_binds()
    if etc is not None:
        for name in ("passwd", "group"):
            argv += ["--ro-bind", _absolute(etc / name), f"/etc/{name}"]
    argv += [
        "--dev", "/dev",
        "--size", str(SHM_SIZE), "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",
        "--proc", "/proc",
    ]  # fmt: skip
    if tmp is not None:
        argv += ["--bind", _absolute(tmp), "/tmp"]
    else:
        argv += ["--size", str(SHM_SIZE), "--tmpfs", "/tmp"]
    if store_view is not None:
        argv += ["--bind", _absolute(store_view[0]), _absolute(store_view[1])]
    for path in inputs:
        p = _absolute(path)
        argv += ["--ro-bind", p, p]
    for host, inside in binds:
        argv += ["--bind", _absolute(host), _absolute(inside)]
    for target, path in links:
        argv += ["--symlink", target, path]
    # nothing else of the sandbox's root tmpfs may be written
    argv += ["--remount-ro", "/"]
    if chdir is not None:
        argv += ["--chdir", _absolute(chdir)]
    argv.append("--")
    return argv


def identity_argv(uid: int, gid: int) -> list[str]:
    """The prefix that runs the rest as `uid`/`gid`, with `gid` its only group: runit's
    `chpst -u :UID:GID` (numeric, no account lookup). The daemon starts it as root through a
    cheap vfork+exec; switching the uid in the forked child itself (Popen's `user=`) would
    copy the daemon's whole page table per build, and util-linux's setpriv costs twice
    chpst's start-up."""
    return [tool_path(CHPST) or CHPST, "-u", f":{uid}:{gid}"]


def build_identity_argv(uid: int, gid: int, *, max_processes: int,
                        max_file_size: int | None = None,
                        max_data: int | None = None) -> list[str]:
    """The prefix that runs a build as its build user, within its limits, in one exec:
    `chpst -p N` bounds the processes of its uid (RLIMIT_NPROC counts per real uid, and
    every running build has a uid of its own, so it bounds exactly one build), `-c 0`
    forbids core dumps, `-f` bounds the size of any file it writes (RLIMIT_FSIZE: a single
    file can never outgrow the output bound, however fast it is written), `-d` each
    process's data (RLIMIT_DATA: the memory bound where no cgroup can be had). Per build,
    not on the daemon: a helper the daemon starts as that uid later (`kill -9 -1` after a
    fork bomb) must be able to exec while the uid is at its limit."""
    argv = [tool_path(CHPST) or CHPST, "-p", str(max_processes), "-c", "0"]
    if max_file_size is not None:
        argv += ["-f", str(max_file_size)]
    if max_data is not None:
        argv += ["-d", str(max_data)]
    return [*argv, "-u", f":{uid}:{gid}"]


def probe_confinement(user: tuple[int, int] | None = None) -> str | None:
    """Try a trivial sandbox once (blocking, for daemon start), as `user` (uid, gid) if given.

    Returns None if confinement works, else a reason a person can act on.
    """
    bwrap = bwrap_path()
    if bwrap is None:
        return (
            "bubblewrap is not installed: no `bwrap` on PATH "
            f"({os.environ.get('PATH', os.defpath)}); install bubblewrap or run ixd without "
            "confinement"
        )
    if shutil.which(CHPST) is None:
        return f"{CHPST} (runit) is not installed: builds could not run as build users"
    argv = [*confinement_argv(net=False), "/bin/true"]
    ids: dict[str, object] = {}
    if user is not None:
        ids = {"user": user[0], "group": user[1], "extra_groups": []}
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
            cwd="/",
            **ids,  # type: ignore[call-overload]
        )
    except subprocess.TimeoutExpired:
        return f"`{bwrap} ... true` did not finish within {PROBE_TIMEOUT:.0f} s"
    except OSError as exc:
        return f"could not run {bwrap}: {exc}"
    if done.returncode == 0:
        return None
    stderr = done.stderr.decode(errors="replace").strip() or "(no output)"
    if done.returncode < 0:  # not the kernel's refusal: something else killed it
        return (f"`{bwrap} ... true` was killed by signal {-done.returncode} "
                f"({_signal_name(-done.returncode)}) before it finished: {stderr}. That is "
                f"no kernel limit: something signalled it (the OOM killer, or a program "
                f"killing its build user's processes); start ixd again")
    return (
        f"bwrap could not create a sandbox (exit status {done.returncode}): {stderr}. "
        "The kernel probably refuses user namespaces to this account: check "
        "/proc/sys/user/max_user_namespaces, /proc/sys/kernel/unprivileged_userns_clone and "
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns; fix user namespaces or "
        "bubblewrap, or start ixd with --no-confine to build unconfined"
    )


def check_confinement(user: tuple[int, int] | None = None) -> None:
    """Raise ConfinementUnavailable with the probe's reason unless confinement works."""
    reason = probe_confinement(user)
    if reason is not None:
        raise ConfinementUnavailable(f"builds cannot be confined here: {reason}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


@functools.cache
def _system_dirs_argv() -> tuple[str, ...]:
    """The host's system folders, bound or recreated as links: looked at once per daemon,
    not a dozen system calls per build (they change only when the host's layout does)."""
    return tuple(arg for top in _SYSTEM_DIRS for arg in _system_dir(top))


def _system_dir(top: str) -> list[str]:
    """Bind a top-level system folder read-only, or recreate it as the link it is."""
    if os.path.islink(top):
        return ["--symlink", os.readlink(top), top]
    if os.path.isdir(top):
        return ["--ro-bind", top, top]
    return []


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
