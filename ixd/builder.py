"""Run one build node: fresh scratch, the (confined) command, its log, a read-only output.

A build writes straight into its store dir `$out` (outputs embed their final path). Before it
runs, a stale `$out` and scratch dir are removed; after a success the scratch is removed and
`$out` made read-only; after a failure or a cancellation both are removed, so nothing
half-built stays in the store. The command's environment is exactly the node's `env` plus
`out`, `tmp`, `src`, `uid` and `make_thrs`: nothing is inherited from the daemon.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import trio  # type: ignore[import-untyped, unused-ignore]  # trio 0.22 has no py.typed

from ixd.confine import bwrap_path, confinement_argv
from ixd.errors import BuildFailed, ConfinementUnavailable
from ixd.layout import Layout
from ixd.nodes import Node

log = logging.getLogger(__name__)

LineCallback = Callable[[str], None]
#: the bwrap prefix of a confined build, given the fd for bwrap's --info-fd
SandboxArgv = Callable[[int], list[str]]

#: log lines quoted in a BuildFailed message
LOG_TAIL_LINES = 20
#: after the build's process exits, how long its output pipe may stay open (a background
#: process of an unconfined build holding it) before the log is closed anyway
EOF_GRACE = 5.0
#: how long to wait for killed processes to disappear before giving up on them
KILL_GRACE = 10.0
#: a "line" longer than this is passed to the callback in pieces
MAX_LINE = 64 * 1024
_READ_SIZE = 64 * 1024


async def run_build(
    node: Node,
    layout: Layout,
    *,
    confine: bool,
    make_thrs: int,
    on_log_line: LineCallback | None = None,
) -> None:
    """Run a `kind == "build"` node; return when its output is complete and read-only.

    Raises BuildFailed (output and scratch removed) if the command fails or cannot be run,
    ConfinementUnavailable if `confine` is asked for and bubblewrap is missing. On trio
    cancellation the build's processes are killed and waited for, output and scratch removed,
    and Cancelled re-raised.
    """
    if node.kind != "build":
        raise ValueError(f"run_build runs build nodes, not the {node.kind} node {node.uid}")
    if not node.outputs or not node.command:
        raise ValueError(f"build node {node.name} ({node.uid}) has no output or no command")

    out = Path(node.outputs[0])
    scratch = layout.scratch(node.uid)
    tmp = scratch / "tmp"
    src = scratch / "src"
    log_path = layout.log_path(node.uid)

    env = dict(node.env)
    env.update(
        out=os.fspath(out),
        tmp=os.fspath(tmp),
        src=os.fspath(src),
        uid=node.uid,
        make_thrs=str(make_thrs),
    )
    sandbox: SandboxArgv | None = None
    if confine:
        if bwrap_path() is None:
            raise ConfinementUnavailable(
                f"cannot build {node.name} ({node.uid}) confined: bubblewrap (`bwrap`) "
                "is not installed"
            )

        def sandbox(info_fd: int) -> list[str]:
            return confinement_argv(
                writable=[out, scratch],
                net=node.net,
                # bound again in case the root is under /tmp (which gets a private tmpfs)
                readable=[layout.store, layout.sources],
                # the daemon's socket and database
                hidden=[layout.var],
                info_fd=info_fd,
                chdir=tmp,
            ) + _unset_pwd(env)

    try:
        # Log writes are small and go to a local file: plain blocking I/O is fine here.
        with open(log_path, "wb") as log_file:  # noqa: ASYNC230
            _prepare(node, layout, out=out, scratch=scratch, tmp=tmp, src=src)
            status = await _run_logged(
                list(node.command),
                env=env,
                cwd=tmp,
                stdin=node.stdin.encode(),
                log_file=log_file,
                on_line=on_log_line,
                sandbox=sandbox,
            )
    except BaseException as exc:
        _discard(out, scratch)
        if isinstance(exc, Exception) and not isinstance(exc, BuildFailed):
            raise BuildFailed(_failure_message(node, f"could not be run: {exc}", log_path)) from exc
        raise

    if status != 0:
        _discard(out, scratch)
        raise BuildFailed(_failure_message(node, _describe_status(status), log_path))

    try:
        remove_tree(scratch)
        make_read_only(out)
    except OSError as exc:
        _discard(out, scratch)
        raise BuildFailed(
            _failure_message(node, f"its output could not be finished: {exc}", log_path)
        ) from exc


# --- the file system -----------------------------------------------------------------------


def make_read_only(path: Path) -> None:
    """Make a finished output immutable: directories 0o555, files lose their write bits.

    Execute bits stay; setuid, setgid and sticky bits are dropped. Symlinks are neither
    followed nor changed.
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return
    if not stat.S_ISDIR(st.st_mode):
        _chmod_if_changed(os.fspath(path), st.st_mode, stat.S_IMODE(st.st_mode) & 0o555)
        return
    stack = [os.fspath(path)]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                mode = entry.stat(follow_symlinks=False).st_mode
                _chmod_if_changed(entry.path, mode, stat.S_IMODE(mode) & 0o555)
        os.chmod(directory, 0o555)


def remove_tree(path: Path) -> None:
    """Delete a file or directory tree, read-only ones too; a missing path is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    # Entries can only be unlinked from a writable (and searchable) directory.
    stack = [os.fspath(path)]
    while stack:
        directory = stack.pop()
        mode = stat.S_IMODE(os.lstat(directory).st_mode)
        if mode & 0o700 != 0o700:
            os.chmod(directory, mode | 0o700)
        with os.scandir(directory) as entries:
            stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
    shutil.rmtree(path)


def _chmod_if_changed(path: str, old_mode: int, new_mode: int) -> None:
    if stat.S_IMODE(old_mode) != new_mode:
        os.chmod(path, new_mode)


def _prepare(node: Node, layout: Layout, *, out: Path, scratch: Path, tmp: Path, src: Path) -> None:
    remove_tree(out)
    remove_tree(scratch)
    tmp.mkdir(parents=True)
    src.mkdir()
    for source in node.sources:
        name = source.filename
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise BuildFailed(
                f"build of {node.name} ({node.uid}): source {source.url} has the bad file "
                f"name {name!r}; it must be a plain file name"
            )
        (src / name).symlink_to(layout.source_path(source.sha256))
    # The build writes into $out; it must exist to be bound into the sandbox.
    out.mkdir()


def _discard(out: Path, scratch: Path) -> None:
    """Remove what a failed or cancelled build left; never raise over the real error."""
    for path in (out, scratch):
        try:
            remove_tree(path)
        except OSError:
            log.exception("could not remove %s", path)


# --- running the command -------------------------------------------------------------------


async def _run_logged(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    stdin: bytes,
    log_file: BinaryIO,
    on_line: LineCallback | None,
    sandbox: SandboxArgv | None,
) -> int:
    """Run argv (inside `sandbox` if given) with its output logged; its exit status.

    The process gets its own session. When it exits, what is left of its process group is
    killed (background processes of an unconfined build; a confined build's pid namespace
    dies with it anyway). If this is cancelled, the whole build is killed and waited for.
    """
    child = _spawn(argv, env=env, cwd=cwd, with_stdin=bool(stdin), sandbox=sandbox)
    popen = child.popen
    sandbox_pidfd: int | None = None
    try:
        output_done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, child.output, log_file, on_line, output_done)
            if child.stdin is not None:
                nursery.start_soon(_feed, child.stdin, stdin)
            if child.info is not None:
                sandbox_pidfd = await _sandbox_pidfd(child.info)
            # Exited but not yet reaped: its pid (= process group id) cannot be reused
            # before we kill what is left of the group.
            await trio.lowlevel.wait_readable(child.pidfd)
            _kill_group(popen.pid)
            status = popen.poll()
            assert status is not None
            with trio.move_on_after(EOF_GRACE):
                await output_done.wait()
            nursery.cancel_scope.cancel()
        return status
    finally:
        with trio.CancelScope(shield=True):
            if popen.returncode is None:
                if sandbox_pidfd is not None:
                    # Killing the sandbox's pid 1 ends its whole pid namespace.
                    _pidfd_kill(sandbox_pidfd)
                _kill_group(popen.pid)
                with trio.move_on_after(KILL_GRACE):
                    await trio.lowlevel.wait_readable(child.pidfd)
                popen.poll()
            if sandbox_pidfd is not None:
                with trio.move_on_after(KILL_GRACE):
                    await trio.lowlevel.wait_readable(sandbox_pidfd)
                os.close(sandbox_pidfd)
            os.close(child.pidfd)
            for stream in (child.output, child.stdin, child.info):
                if stream is not None:
                    await stream.aclose()


@dataclass
class _Child:
    popen: subprocess.Popen[bytes]
    #: a pidfd of the process, readable once it has exited
    pidfd: int
    #: stdout and stderr
    output: trio.lowlevel.FdStream
    stdin: trio.lowlevel.FdStream | None
    #: bwrap's --info-fd
    info: trio.lowlevel.FdStream | None


def _spawn(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    with_stdin: bool,
    sandbox: SandboxArgv | None,
) -> _Child:
    """Start the command from the calling thread (trio's), with pipes trio can read.

    Not `trio.lowlevel.open_process`: that forks from a worker thread, and bwrap's
    --die-with-parent (PR_SET_PDEATHSIG) fires when the *thread* that forked it exits. trio
    retires idle worker threads after 10 s, which killed every confined build running longer.
    Forking takes a millisecond; the loop does not notice.
    """
    parent_ends: list[int] = []
    child_ends: list[int] = []
    try:
        out_r, out_w = os.pipe()
        parent_ends.append(out_r)
        child_ends.append(out_w)
        in_r, in_w = subprocess.DEVNULL, -1
        if with_stdin:
            in_r, in_w = os.pipe()
            parent_ends.append(in_w)
            child_ends.append(in_r)
        info_r = -1
        pass_fds: tuple[int, ...] = ()
        if sandbox is not None:
            info_r, info_w = os.pipe()
            parent_ends.append(info_r)
            child_ends.append(info_w)
            pass_fds = (info_w,)
            argv = [*sandbox(info_w), *argv]
        popen = subprocess.Popen(
            argv,
            stdin=in_r,
            stdout=out_w,
            stderr=out_w,
            env=env,
            cwd=os.fspath(cwd),
            start_new_session=True,
            pass_fds=pass_fds,
        )
    except BaseException:
        for fd in parent_ends:
            os.close(fd)
        raise
    finally:
        for fd in child_ends:
            os.close(fd)
    try:
        pidfd = os.pidfd_open(popen.pid)
    except BaseException:
        popen.kill()
        popen.wait()
        for fd in parent_ends:
            os.close(fd)
        raise
    return _Child(
        popen=popen,
        pidfd=pidfd,
        output=trio.lowlevel.FdStream(out_r),
        stdin=trio.lowlevel.FdStream(in_w) if in_w >= 0 else None,
        info=trio.lowlevel.FdStream(info_r) if info_r >= 0 else None,
    )


async def _pump(
    stream: trio.abc.ReceiveStream,
    log_file: BinaryIO,
    on_line: LineCallback | None,
    done: trio.Event,
) -> None:
    pending = b""
    try:
        while chunk := await stream.receive_some(_READ_SIZE):
            log_file.write(chunk)
            log_file.flush()
            if on_line is None:
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                on_line(_decode(line))
            if len(pending) > MAX_LINE:
                on_line(_decode(pending))
                pending = b""
        if pending and on_line is not None:
            on_line(_decode(pending))
    finally:
        done.set()


async def _feed(stream: trio.abc.SendStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the command exited without reading all of its stdin
    finally:
        await stream.aclose()


async def _sandbox_pidfd(info: trio.lowlevel.FdStream) -> int | None:
    """A pidfd for the sandbox's pid 1, from bwrap's --info-fd JSON (closed before exec)."""
    data = b""
    while chunk := await info.receive_some(4096):
        data += chunk
        if len(data) > 1 << 20:
            return None
    try:
        pid = json.loads(data)["child-pid"]
    except (ValueError, KeyError, TypeError):
        return None  # bwrap failed before starting the sandbox; its message is in the log
    if not isinstance(pid, int):
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None  # already over


def _unset_pwd(env: dict[str, str]) -> list[str]:
    """bwrap always exports PWD (its working directory); `env` restores exactly `env`."""
    restore = [f"PWD={env['PWD']}"] if "PWD" in env else []
    return [shutil.which("env") or "/usr/bin/env", "-u", "PWD", "--", *restore]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pidfd_kill(pidfd: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- messages ------------------------------------------------------------------------------


def _decode(line: bytes) -> str:
    return line.decode(errors="replace").removesuffix("\r")


def _describe_status(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"failed with exit status {status}"


def _log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read()
    except OSError:
        return []
    return [_decode(line) for line in data.splitlines()[-lines:]]


def _failure_message(node: Node, what: str, log_path: Path) -> str:
    message = f"build of {node.name} ({node.uid}) {what}; log: {log_path}"
    tail = _log_tail(log_path)
    if tail:
        message += f"\nlast {len(tail)} lines of the log:\n" + "\n".join(
            f"  {line}" for line in tail
        )
    return message
