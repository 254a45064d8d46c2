"""One supervised process: started from a thread that outlives it, its output handed to a
reader of its own, its limits checked while it runs, killed whole when it ends or is given
up, reaped through a pidfd.

What it runs is an argv, an environment, a working folder and a stdin; inside a sandbox if
the caller gives the sandbox's argv (bwrap: its `--info-fd` tells the sandbox's pid 1,
whose death ends the whole pid namespace; its `--block-fd` holds the command until `start`'s
gate opens, so a sandbox is set up while the build slot it waits for is still busy). It
knows nothing of nodes, scratch folders or logs: `ixd.store.builder` puts those around it.

`start` is the only step whose failure means "the command could not be run"; everything
after it is `Running.supervise`, which always kills and reaps what it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import outcome
import trio  # type: ignore[import-untyped, unused-ignore]  # trio 0.22 has no py.typed

#: the sandbox's argv prefix, given the fds for bwrap's --info-fd and --block-fd (called in
#: the spawner's thread: it may stat files)
SandboxArgv = Callable[[int, int], list[str]]

#: after the process exits, how long its output pipe may stay open (a background process
#: of an unconfined build holding it) before the output is given up anyway
EOF_GRACE = 5.0
#: how long to wait for killed processes to disappear before giving up on them
KILL_GRACE = 10.0
#: what _sandbox_pidfd says when the sandbox is already over (never a file descriptor)
SANDBOX_GONE = -1
#: the CPU priority (nice) of a sandbox being set up ahead of its gate: work that is not
#: urgent, done while other builds run, whose commands start and end at the very moments the
#: next set-ups begin; its gate gives it the normal priority back (`_Child.open_gate`)
SETUP_NICE = 19


@dataclass(frozen=True)
class Command:
    """What to run: exactly `env` as its environment, in its own session."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    stdin: bytes = b""
    #: the sandbox's argv, put before `argv` (None: run it as it is)
    sandbox: SandboxArgv | None = None


class OutputReader(Protocol):
    """Reads the process's output pipe in a thread of its own (`ixd.store.buildlog.LogPump`)."""

    #: why keeping the output failed, if it did (the process runs on regardless)
    error: OSError | None

    def start(self, done: Callable[[], None]) -> None:
        """Start reading; `done()` is posted to the loop once the pipe is at its end or
        reading stopped."""

    def stop(self) -> None:
        """Stop reading soon, even if the pipe stays open."""


class Watchdog(Protocol):
    """The limits of a running process, checked by the task that waits for it anyway."""

    #: trio time by which the process must have exited
    deadline: float

    def next_poll(self) -> float:
        """Seconds until `broken` is due again."""

    def broken(self) -> Awaitable[str | None]:
        """The limit the process broke, if it did (it is then killed)."""


@dataclass
class Exit:
    """How a supervised process ended."""

    #: its exit status (negative: the signal that killed it); -1 when it was killed for
    #: breaking a limit
    status: int = -1
    #: the limit it broke (the watchdog's words), if it did
    broken: str | None = None
    #: the sandbox's pid 1 was seen to end (so its whole pid namespace is gone)
    sandbox_gone: bool = False
    #: why its output could not be kept whole, if it could not (the reader's error)
    output_error: OSError | None = None


async def start(command: Command, gate: Callable[[], Awaitable[None]] | None = None
                ) -> Running:
    """Start `command` in the spawner's thread. Raises OSError or SubprocessError if it
    cannot be started; what it returns must be supervised at once (`Running.supervise`).

    The command itself runs only once `gate()` has returned (the build slot it waits for).
    A sandbox is set up before: its processes start, bwrap makes its mounts and waits on
    its block fd, and the gate's byte lets it exec the command, so the slot's time goes to
    the command, not to the sandbox's set-up. If the gate raises (cancelled), what started
    is killed and reaped."""
    if command.sandbox is None:
        if gate is not None:
            await gate()
        return Running(await _SPAWNER.run(lambda: _spawn(command)))
    running = Running(await _SPAWNER.run(lambda: _spawn(command)))
    try:
        if gate is not None:
            await gate()
    except BaseException:
        with trio.CancelScope(shield=True):
            os.close(running.child.output)
            await running._reap(None)
        raise
    running.child.open_gate()
    return running


@dataclass
class Running:
    """A started process; `supervise` runs it to its end and owns its clean-up."""

    child: _Child
    exit: Exit = field(default_factory=Exit)

    @property
    def output(self) -> int:
        """The reading end of its stdout and stderr (the reader's to close)."""
        return self.child.output

    async def supervise(self, reader: Callable[[int], OutputReader], watchdog: Watchdog,
                        on_end: Callable[[Exit], None] | None = None) -> Exit:
        """Run the process to its end, its output to `reader(fd)`.

        `on_end(exit)` is called as soon as the process has exited with status 0 and its
        sandbox's pid namespace is seen gone (nothing of it can run any more), before its
        output is read to the end and its descriptors closed.

        When it exits, what is left of its process group is killed (background processes of
        an unconfined command; a sandbox's pid namespace dies with its pid 1 anyway). While
        it runs, `watchdog` is checked every `next_poll()` seconds and at its deadline; a
        limit broken goes to `Exit.broken` and the whole process is killed. If this is
        cancelled, the whole process is killed and waited for.
        """
        child, ended = self.child, self.exit
        sandbox_pidfd: int | None = None
        output_done = trio.Event()
        pump: OutputReader | None = None
        try:
            started = reader(child.output)
            started.start(output_done.set)
            pump = started  # from here on, the reader closes the pipe
            async with trio.open_nursery() as nursery:
                if child.stdin is not None:
                    nursery.start_soon(_feed, child.stdin, child.stdin_rest)
                if child.info is not None:
                    found = await _sandbox_pidfd(child.info)
                    if found == SANDBOX_GONE:
                        ended.sandbox_gone = True
                    else:
                        sandbox_pidfd = found
                # Exited but not yet reaped: its pid (= process group id) cannot be reused
                # before we kill what is left of the group.
                while True:
                    poll = trio.current_time() + watchdog.next_poll()
                    with trio.move_on_at(min(poll, watchdog.deadline)):
                        await trio.lowlevel.wait_readable(child.pidfd)
                        break
                    ended.broken = await watchdog.broken()
                    if ended.broken is not None:  # killed whole in `finally`
                        nursery.cancel_scope.cancel()
                        return ended
                _kill_group(child.popen.pid)
                status = child.popen.poll()
                assert status is not None
                ended.status = status
                if on_end is not None and status == 0:
                    await self._sandbox_ended(sandbox_pidfd)
                    if ended.sandbox_gone:
                        on_end(ended)
                with trio.move_on_after(EOF_GRACE):
                    await output_done.wait()
                nursery.cancel_scope.cancel()
            return ended
        finally:
            if pump is not None:
                pump.stop()
            else:
                os.close(child.output)
            with trio.CancelScope(shield=True):
                await self._reap(sandbox_pidfd)
                if pump is not None:
                    await output_done.wait()  # the reader stops soon after `stop`
                    ended.output_error = pump.error

    async def _sandbox_ended(self, sandbox_pidfd: int | None) -> None:
        """Once bwrap has exited: wait until its sandbox's pid 1 has ended too (it tells bwrap
        the command's status before it ends itself), if it does within KILL_GRACE."""
        if self.exit.sandbox_gone or sandbox_pidfd is None:
            return
        with trio.move_on_after(KILL_GRACE):
            await trio.lowlevel.wait_readable(sandbox_pidfd)
            self.exit.sandbox_gone = True

    async def _reap(self, sandbox_pidfd: int | None) -> None:
        """Kill whatever of the process is left and wait for it; close its descriptors."""
        child = self.child
        popen = child.popen
        if popen.returncode is None:
            if sandbox_pidfd is not None:
                # Killing the sandbox's pid 1 ends its whole pid namespace.
                _pidfd_kill(sandbox_pidfd)
            _kill_group(popen.pid)
            with trio.move_on_after(KILL_GRACE):
                await trio.lowlevel.wait_readable(child.pidfd)
            popen.poll()
        if sandbox_pidfd is not None:
            await self._sandbox_ended(sandbox_pidfd)
            os.close(sandbox_pidfd)
        os.close(child.pidfd)
        if child.gate >= 0:  # only now: bwrap reads the closed gate's end as "run it"
            os.close(child.gate)
            child.gate = -1
        for stream in (child.stdin, child.info):
            if stream is not None:
                await stream.aclose()


def loop_poster() -> Callable[[Callable[[], None]], None]:
    """Posting a function to this event loop from another thread (a no-op once it ended)."""
    token = trio.lowlevel.current_trio_token()

    def post(function: Callable[[], None]) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(function)

    return post


def describe_status(status: int) -> str:
    """An exit status in words: "failed with exit status 2", "was killed by SIGKILL"."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"failed with exit status {status}"


class _Spawner:
    """One long-lived thread that starts every supervised process.

    Starting one blocks its caller until the new process has exec'd (a millisecond or two
    on a busy machine): not the event loop's time, which every client's request needs. Not
    trio's worker threads either: bwrap's --die-with-parent (PR_SET_PDEATHSIG) fires when
    the *thread* that forked it exits, and trio retires idle worker threads after 10 s,
    which killed every confined build running longer. This thread lives as long as the
    daemon.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def run(self, start: Callable[[], _Child]) -> _Child:
        """`start()` in the spawner's thread. Not cancellable half way: a started process
        is always handed back, for the caller's clean-up to kill and reap."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        result: list[outcome.Outcome[_Child]] = []

        def job() -> None:
            result.append(outcome.capture(start))
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        self._ensure_thread()
        self._jobs.put(job)
        with trio.CancelScope(shield=True):
            await done.wait()
        return result[0].unwrap()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="ixd-spawner",
                                                daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            self._jobs.get()()


_SPAWNER = _Spawner()


@dataclass
class _Child:
    popen: subprocess.Popen[bytes]
    #: a pidfd of the process, readable once it has exited
    pidfd: int
    #: stdout and stderr: the pipe's reading end (the output reader's, which closes it)
    output: int
    #: for the rest of its stdin: what did not fit in the pipe at once (None: all did)
    stdin: trio.lowlevel.FdStream | None
    stdin_rest: bytes
    #: bwrap's --info-fd
    info: trio.lowlevel.FdStream | None
    #: the writing end of bwrap's --block-fd (-1: none, or opened)
    gate: int = -1
    #: its set-up runs at SETUP_NICE until the gate opens
    lowered: bool = False

    def open_gate(self) -> None:
        """Let the sandboxed command run (bwrap reads a byte, then execs it), at the normal
        CPU priority (bwrap starts it in a session of its own, the set-up's processes are
        given theirs back)."""
        if self.gate < 0:
            return
        if self.lowered:
            _set_nice(self.popen.pid, 0)
            self.lowered = False
        try:
            os.write(self.gate, b"\n")
        except BrokenPipeError:  # bwrap is gone already: its exit tells why
            pass
        finally:
            os.close(self.gate)
            self.gate = -1


def _spawn(command: Command) -> _Child:
    """Start the command (blocking: in the spawner's thread), with pipes trio can read."""
    argv = list(command.argv)
    parent_ends: list[int] = []
    child_ends: list[int] = []
    try:
        out_r, out_w = os.pipe()
        parent_ends.append(out_r)
        child_ends.append(out_w)
        in_r, in_w = subprocess.DEVNULL, -1
        if command.stdin:
            in_r, in_w = os.pipe()
            parent_ends.append(in_w)
            child_ends.append(in_r)
        info_r = gate_w = -1
        pass_fds: tuple[int, ...] = ()
        if command.sandbox is not None:
            info_r, info_w = os.pipe()
            parent_ends.append(info_r)
            child_ends.append(info_w)
            gate_r, gate_w = os.pipe()
            parent_ends.append(gate_w)
            child_ends.append(gate_r)
            pass_fds = (info_w, gate_r)
            argv = [*command.sandbox(info_w, gate_r), *argv]
        popen = subprocess.Popen(
            argv,
            stdin=in_r,
            stdout=out_w,
            stderr=out_w,
            env=dict(command.env),
            cwd=os.fspath(command.cwd),
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
    # A set-up ahead of its gate yields the processor; only root can give it back.
    lowered = gate_w >= 0 and os.geteuid() == 0
    if lowered:
        _set_nice(popen.pid, SETUP_NICE)
    try:
        pidfd = os.pidfd_open(popen.pid)
    except BaseException:
        popen.kill()
        popen.wait()
        for fd in parent_ends:
            os.close(fd)
        raise
    rest = b""
    if in_w >= 0:
        rest = _write_what_fits(in_w, command.stdin)
        if not rest:
            os.close(in_w)
            in_w = -1
    return _Child(
        popen=popen,
        pidfd=pidfd,
        output=out_r,
        stdin=trio.lowlevel.FdStream(in_w) if in_w >= 0 else None,
        stdin_rest=rest,
        info=trio.lowlevel.FdStream(info_r) if info_r >= 0 else None,
        gate=gate_w,
        lowered=lowered,
    )


def _set_nice(pgid: int, nice: int) -> None:
    """The CPU priority of process group `pgid`, and of its session where the kernel shares
    the processor between sessions first (autogroups: the session's own priority is what
    counts there). Best effort: a group already gone, a kernel without autogroups, is no
    fault. (procfs and a system call: no disk to wait for, on the loop too.)"""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PGRP, pgid, nice)
    with contextlib.suppress(OSError), open(f"/proc/{pgid}/autogroup", "w") as autogroup:
        autogroup.write(str(nice))


def _write_what_fits(fd: int, data: bytes) -> bytes:
    """Write what the pipe `fd` takes now of `data` (a script fits whole, mostly: no task
    of the event loop needed to feed it); what is left. Nothing is left if the reader is
    gone already; on another error, all of it is left, for the task to meet the error where
    the process's clean-up is."""
    os.set_blocking(fd, False)
    try:
        written = os.write(fd, data)
    except BrokenPipeError:  # the command exited without reading its stdin
        return b""
    except OSError:  # BlockingIOError: the pipe is full
        return data
    return data[written:]


async def _feed(stream: trio.abc.SendStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the command exited without reading all of its stdin
    finally:
        await stream.aclose()


async def _sandbox_pidfd(info: trio.lowlevel.FdStream) -> int | None:
    """A pidfd for the sandbox's pid 1, from bwrap's --info-fd JSON (closed before exec).

    SANDBOX_GONE when that process is already over: a pid namespace's init ends only after
    every other process in it, so the whole sandbox is then gone. None when bwrap never
    started a sandbox (its message is in the output).
    """
    data = b""
    while chunk := await info.receive_some(4096):
        data += chunk
        if len(data) > 1 << 20:
            return None
    try:
        pid = json.loads(data)["child-pid"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return SANDBOX_GONE
    # The pid may have been reused since the sandbox's init was reaped: only a process that
    # is pid 1 of a namespace of its own is that init (its NSpid line ends in 1).
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:  # noqa: ASYNC230 (procfs: no I/O)
            status = handle.read(4096)
        ns_pids = status.split(b"\nNSpid:", 1)[1].split(b"\n", 1)[0].split()
        ours = len(ns_pids) >= 2 and ns_pids[-1] == b"1"
    except (OSError, IndexError):
        ours = False
    if not ours:
        os.close(pidfd)
        return SANDBOX_GONE
    return pidfd


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
