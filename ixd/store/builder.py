"""Run one build node: a private scratch, the confined command as a build user, its log,
then a canonical output renamed into the store.

A confined build sees the store as `build/<uid>/store`, a folder only its build user can
reach (`build/` is 0711 and `build/<uid>` 0700, owned by the build user), bound at the
store's path with the build's inputs read-only on top: it writes `$out` there, and may
remove and make it again (stal/IX's scripts begin with `rm -rf $out`) or write beside it,
all of which stays in its scratch. When the command has exited, every process of the build
user is killed, `$out` must be a folder (not a link), and the tree is canonicalised
(`ixd.store.canonical`: owner the daemon, read-only, no setuid bits, no special files, no
hard links) and only then renamed into `store/`. Nothing under `store/` is writable or
setuid at any moment. A failed, cancelled or timed-out build leaves nothing behind.

The command's environment is exactly the node's `env` plus `out`, `tmp`, `src`, `uid` and
`make_thrs`: nothing is inherited from the daemon.

`run_build` is the orchestration of three parts: the scratch on disk (`ixd.store.scratch`:
prepare, settle, abandon; blocking, each one worker-thread call), the supervised process
(`ixd.store.process`), and the log (`ixd.store.buildlog`: written by a thread of its own,
quoted in failures). This module adds what makes them one build: the sandbox's argv, the
limits' watchdog, and who is to blame for what went wrong. Only the process's failing to
start is "could not be run" (BuildFailed); an OSError of the daemon's own files (its log,
the scratch it makes) is a DaemonFault; a full file system is NoSpace.

An unconfined build (`ixd --no-confine`, which logs loudly) runs as the daemon and writes
its store path directly; its output is still canonicalised.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import trio  # type: ignore[import-untyped, unused-ignore]  # trio 0.22 has no py.typed

from ixd.model.layout import Layout
from ixd.model.nodes import Node
from ixd.store import buildlog, process, scratch, space
from ixd.store.buildlog import DEFAULT_MAX_LOG, BoundedLog, LogPump
from ixd.store.buildusers import BuildUser
from ixd.store.canonical import OutputRefused
from ixd.store.cgroup import BuildCgroup, Cgroups, enter_argv
from ixd.store.confine import build_identity_argv, bwrap_path, confinement_argv, tool_path
from ixd.store.elf import MachineMismatch
from ixd.store.process import Exit
from ixd.store.scratch import Built, ContentMismatch, LimitExceeded, Scratch, tree_bytes
from ixd.wire.errors import (
    BuildFailed,
    BuildLimitExceeded,
    ConfinementUnavailable,
    DaemonFault,
    IxError,
    NoSpace,
    WrongMachine,
)

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: a build's output as the event loop gets it: lines, and (ints) counts of lines left out
#: (past the live budget), then the bytes of the log up to their end (`ixd.store.buildlog`)
LogCallback = Callable[[list[str | int], int], None]

#: how fast a build is taken to write (bytes/s) until it is seen writing faster, the
#: overshoot of --max-output-size the measurements aim below, and the shortest wait
#: between two of them (seconds): see `_Watch`
ASSUMED_WRITE_RATE = 2 << 30
OVERSHOOT_AIM = 1.15
MIN_SIZE_POLL = 0.002


@dataclass(frozen=True)
class BuildLimits:
    """What one build may use; breaking a limit fails the build and kills all of it."""

    #: seconds of wall-clock time (a recipe may ask for more with its `timeout`)
    timeout: float = 4 * 3600.0
    #: processes of the build's uid at once (RLIMIT_NPROC)
    max_processes: int = 4096
    #: bytes of its scratch and output together: no file may be larger (RLIMIT_FSIZE), the
    #: scratch is measured the more often the nearer it is (`_Watch`), the output once more
    max_output_size: int = 32 << 30
    #: the longest wait between two measurements of the scratch's size (seconds)
    size_poll: float = 1.0
    #: bytes of memory its processes share (a cgroup's bound: `ixd.store.cgroup`; where
    #: there is none, each process's data, RLIMIT_DATA); 0: none
    max_memory: int = 0
    #: bytes of its log (head and tail kept past it: `ixd.store.buildlog`)
    max_log_size: int = DEFAULT_MAX_LOG


async def run_build(
    node: Node,
    layout: Layout,
    *,
    confine: bool,
    make_thrs: int,
    on_log: LogCallback | None = None,
    user: BuildUser | None = None,
    limits: BuildLimits | None = None,
    on_exit: Callable[[], None] | None = None,
    gate: Callable[[], Awaitable[None]] | None = None,
    expect_hash: str | None = None,
    keep_log: bool = False,
    cgroups: Cgroups | None = None,
    seed: Callable[[Path], None] | None = None,
    finish: Callable[[Path], None] | None = None,
) -> Built:
    """Run a `kind == "build"` node; return when its output is canonical and in the store.

    Confined builds need `user`, the build user to run as (held by the caller for the whole
    call). `on_log` gets the command's output on the event loop (within the live budget; the
    log file gets all of it, up to `limits.max_log_size`). Raises BuildFailed (nothing left
    in the store or scratch) if the command fails, breaks a limit or cannot be run,
    ConfinementUnavailable if confinement is asked for and impossible, NoSpace (a
    BuildFailed) if the file system filled, DaemonFault if a file of the daemon's own (the
    log, the scratch) could not be made or written. `gate()` is awaited
    before the command runs (its build slot), once its scratch and its sandbox are set up
    (`process.start`). `on_exit()` is called once the command has ended and no process of
    it is left, before its output is canonicalised and moved: as soon as that is seen if it
    exited with status 0 and the file system has room for its work to wait in the trash
    (`_Build.room_to_spare`), else once its work folder is deleted. A build that fails
    otherwise never calls it (its caller hands its slot on once its files are gone). With
    `expect_hash`, an output of any other content hash is refused
    (BuildFailed caused by ContentMismatch) and never reaches the store. `keep_log`: the
    command's output goes after what the log already holds. A confined build runs in a
    cgroup of its own under `cgroups` (its memory bound), else with RLIMIT_DATA; a broken
    limit raises BuildLimitExceeded. `seed(out)` fills the private output folder before the
    command runs (as the daemon: what it makes is then given to the build user);
    `finish(out)` runs once no process of the build is left, before the output is
    canonicalised (both blocking, in threads). On trio cancellation the build's processes
    are killed and waited for, its files removed, and Cancelled re-raised.
    """
    build = _Build.of(node, layout, confine=confine, user=user,
                      limits=limits or BuildLimits(), cgroups=cgroups)
    log_file = await build.daemon_work("open its log", BoundedLog, build.log_path,
                                       build.limits.max_log_size, append=keep_log)
    try:
        etc = await build.daemon_work("prepare its scratch", build.prepare, seed)
        command, post = build.command(make_thrs, etc), process.loop_poster()
        try:
            running = await process.start(command, gate)
        except (OSError, subprocess.SubprocessError) as exc:
            raise BuildFailed(await build.failure(f"could not be run: {exc}", log_file)) from exc
        watch = build.watch()  # its time runs from here: not while it waited for its slot
        # (nothing between the start and its supervision: it kills and reaps what started)
        handed_on = False

        def ended_well(ended: Exit) -> None:
            # It exited with status 0 and nothing of it can run: where the file system has
            # room for its work to wait in the trash (`room_to_spare`), its slot goes on now,
            # before its output is read to the end, its end judged and its output settled.
            nonlocal handed_on
            if on_exit is not None and build.room_to_spare():
                on_exit()
                handed_on = True

        ended = await running.supervise(lambda fd: LogPump(fd, log_file, on_log, post), watch,
                                        ended_well)
        await build.judge(ended, watch, log_file)
        if on_exit is not None and not handed_on:
            # the slot's next build starts on the space this one's work took: free first
            await build.daemon_work("delete its work", scratch.clear_work, build.scratch,
                                    build.live_user(ended))
            on_exit()
        built = await build.settle(ended, log_file, expect_hash, finish)
        if built.notes:
            lines = await build.daemon_work("write its log", buildlog.add_notes, log_file,
                                            built.notes)
            if on_log is not None:
                on_log(lines, log_file.written)
    except BaseException as exc:  # clean-up only: what went wrong is told where it happened
        # a failed build's files are gone before its slot goes to the next (the caller
        # hands the slot on once this raises)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(scratch.abandon, build.scratch, build.user)
            full = await build.no_space(exc, log_file)
        if full is not None:
            raise full from (None if isinstance(exc, _OutOfSpace) else exc)
        raise
    finally:
        with trio.CancelScope(shield=True):  # its tail in order, unless it fits whole
            await trio.to_thread.run_sync(build.close, log_file)
    return built


def _memory_broken(limits: BuildLimits) -> str:
    """How a build broke its memory bound, in words."""
    return (f"used more than its --max-memory of {limits.max_memory} bytes (the kernel's "
            f"OOM killer ended a process of it) and was killed")


class _MemoryBroken(Exception):
    """The OOM killer ended a process of a build that exited well (`_Build.settle`)."""


class _OutOfSpace(Exception):
    """A build that failed for want of space (`run_build` tells it once its files are gone)."""


@dataclass(frozen=True)
class _Build:
    """What one run of a build node is made of, and its steps as `run_build` takes them."""

    node: Node
    layout: Layout
    user: BuildUser | None
    limits: BuildLimits
    scratch: Scratch
    cgroup: BuildCgroup | None
    #: the per-process fallback's bound on data (confined builds without a cgroup only)
    memory: int | None

    @classmethod
    def of(cls, node: Node, layout: Layout, *, confine: bool, user: BuildUser | None,
           limits: BuildLimits, cgroups: Cgroups | None) -> _Build:
        """Check the node and the confinement (nothing made yet)."""
        if node.kind != "build":
            raise ValueError(f"run_build runs build nodes, not the {node.kind} node {node.uid}")
        if not node.outputs or not node.command:
            raise ValueError(f"build node {node.name} ({node.uid}) has no output or no command")
        if confine and user is None:
            raise ValueError(f"a confined build of {node.name} needs a build user")
        if confine and bwrap_path() is None:
            raise ConfinementUnavailable(
                f"cannot build {node.name} ({node.uid}) confined: bubblewrap (`bwrap`) "
                "is not installed")
        memory = (limits.max_memory or None) if confine else None
        cgroup = cgroups.build(node.uid) if cgroups is not None and memory else None
        return cls(node, layout, user if confine else None, limits,
                   Scratch.of(node, layout, confined=confine), cgroup, memory)

    @property
    def log_path(self) -> Path:
        return self.layout.log_path(self.node.uid)

    @property
    def subject(self) -> str:
        return f"build of {self.node.name} ({self.node.uid})"

    async def daemon_work(self, doing: str, function: Callable[_P, _T], *args: _P.args,
                          **kwargs: _P.kwargs) -> _T:
        """`function(*args, **kwargs)` in a worker thread: the daemon's own work, whose
        OSError is a DaemonFault (a full file system's, NoSpace)."""

        def work() -> _T:
            try:
                return function(*args, **kwargs)
            except OSError as exc:
                if space.is_full(exc):
                    raise space.no_space(self.layout.build, f"building {self.node.name} "
                                         f"({exc})", self.log_path) from exc
                raise

        try:
            return await trio.to_thread.run_sync(work)
        except OSError as exc:
            raise DaemonFault(
                f"the {self.subject} stopped: ixd could not {doing}: {exc}; the fault is the "
                f"daemon's, not the build's: ixd's root ({self.layout.root}) must be its own "
                "and writable (the daemon's log has the details)") from exc

    def prepare(self, seed: Callable[[Path], None] | None) -> Path | None:
        """The scratch, the cgroup and the sandbox's /etc made (blocking); that /etc."""
        scratch.prepare(self.scratch, self.user, seed)
        if self.cgroup is not None:
            self.cgroup.create(self.limits.max_memory, self.limits.max_processes)
        return scratch.sandbox_etc_dir(self.layout) if self.user is not None else None

    def command(self, make_thrs: int, etc: Path | None) -> process.Command:
        """The node's command with its environment, in its sandbox if confined."""
        node, work = self.node, self.scratch
        env = dict(node.env)
        env.update(out=os.fspath(work.store_path), tmp=os.fspath(work.tmp),
                   src=os.fspath(work.src), uid=node.uid, make_thrs=str(make_thrs))
        if self.user is None or etc is None:
            return process.Command(node.command, env, work.tmp, node.stdin.encode())
        prefix = build_identity_argv(
            self.user.uid, self.user.gid, max_processes=self.limits.max_processes,
            max_file_size=self.limits.max_output_size,
            max_data=self.memory if self.cgroup is None else None)
        if self.cgroup is not None:
            prefix = enter_argv(self.cgroup.procs) + prefix
        inputs = readable_inputs(node, self.layout)

        def sandbox(info_fd: int, block_fd: int) -> list[str]:
            # (in the spawner's thread: the look-ups of the declared shell are stat calls)
            links = [] if node.host_view else declared_tools(node)
            return prefix + confinement_argv(
                net=node.net, host_view=node.host_view, links=links,
                store_view=(work.store_view, work.store_path.parent), inputs=inputs,
                binds=[(work.root, work.root)], tmp=work.tmp, etc=etc, info_fd=info_fd,
                block_fd=block_fd, chdir=work.tmp,
            ) + _unset_pwd(env, host_view=node.host_view, links=links)

        return process.Command(node.command, env, work.root, node.stdin.encode(), sandbox)

    def room_to_spare(self) -> bool:
        """Whether the build's file system has room for a whole other build beside this
        one's work (`--max-output-size` free: all a build may write), so the work need not
        be gone before the slot's next build starts: it goes to the trash with the rest of
        the scratch (`settle`). One statfs (the file system's counters, no I/O), on the
        loop: a worker thread's round trip would cost the slot more."""
        try:
            free, _total = space.free_bytes(self.layout.build)
        except OSError:
            return False
        return free >= self.limits.max_output_size

    def watch(self) -> _Watch:
        timeout = max(self.limits.timeout, self.node.timeout)
        return _Watch(self.scratch.root, self.limits, timeout,
                      trio.current_time() + timeout, self.cgroup)

    def live_user(self, ended: Exit) -> BuildUser | None:
        """The build user whose processes may still run: none once the sandbox's pid
        namespace was seen gone."""
        return None if ended.sandbox_gone else self.user

    async def failure(self, what: str, log_file: BoundedLog) -> str:
        """The message of a failed build: what happened, its log and the log's last lines."""
        return await trio.to_thread.run_sync(buildlog.failure_message, self.subject, what,
                                             log_file)

    async def judge(self, ended: Exit, watch: _Watch, log_file: BoundedLog) -> None:
        """Raise what the process's end says went wrong, if anything did."""
        if ended.output_error is not None:
            log.warning("%s: its log could not be written: %s", self.log_path,
                        ended.output_error)
        if ended.broken is None:
            if ended.status != 0:  # a bound the kernel held? (ended well: `settle` looks)
                ended.broken = await watch.broken_at_end()
        elif watch.over_output:  # every process of it is dead: what it left, for the record
            ended.broken += await watch.final_size()
        if ended.broken is not None:
            raise BuildLimitExceeded(await self.failure(ended.broken, log_file))
        if ended.status == 0:
            return
        if await trio.to_thread.run_sync(_looks_full, self.layout, log_file):
            raise _OutOfSpace  # told once its scratch is gone: what is free then
        what = process.describe_status(ended.status)
        if ended.output_error is not None:
            what += f" (its log could not be written: {ended.output_error})"
        if self.cgroup is None and self.memory is not None:
            what += (f" (were it out of memory: each of its processes may use "
                     f"{self.memory} bytes of data, --max-memory)")
        raise BuildFailed(await self.failure(what, log_file))

    async def settle(self, ended: Exit, log_file: BoundedLog, expect_hash: str | None,
                     finish: Callable[[Path], None] | None) -> Built:
        """The output canonical and in the store (with the sandbox's pid namespace seen
        gone, no process of the build is left; otherwise every process of its uid is killed
        first), or the build failed for what it made, or for a process of it the OOM killer
        ended (looked at in the same worker thread call: a build that ended well is judged
        here, not by `judge`)."""
        cgroup = self.cgroup
        settle = functools.partial(
            scratch.settle, self.scratch, self.live_user(ended),
            max_output_size=self.limits.max_output_size, expect_hash=expect_hash,
            finish=finish, machine=self.node.elf_machine)

        def judged_and_settled() -> Built:
            if cgroup is not None and cgroup.oom_kills():
                raise _MemoryBroken
            return settle()

        try:
            return await trio.to_thread.run_sync(judged_and_settled)
        except _MemoryBroken:
            raise BuildLimitExceeded(await self.failure(_memory_broken(self.limits),
                                                        log_file)) from None
        except MachineMismatch as exc:
            raise WrongMachine(await self.failure(
                f"made a program for another machine: {exc}; {self.node.name} is built "
                f"for {self.node.elf_machine}, so every ELF file it makes must be (did the "
                "build use a compiler of the host's instead of $CC?)", log_file)) from exc
        except LimitExceeded as exc:
            raise BuildLimitExceeded(await self.failure(
                f"its output could not be finished: {exc}", log_file)) from exc
        except (OSError, OutputRefused, ContentMismatch) as exc:
            raise BuildFailed(await self.failure(
                f"its output could not be finished: {exc}", log_file)) from exc

    async def no_space(self, exc: BaseException, log_file: BoundedLog) -> IxError | None:
        """The NoSpace error `exc` is (a full file system, seen or caused), if it is."""
        full = exc if space.is_full(exc) else exc.__cause__
        if isinstance(exc, NoSpace):  # told already
            return None
        if isinstance(exc, _OutOfSpace):
            doing = f"building {self.node.name}"
        elif full is not None and space.is_full(full):
            doing = f"building {self.node.name} ({full})"
        else:
            return None
        return await trio.to_thread.run_sync(lambda: space.no_space(
            self.layout.build, doing, self.log_path, buildlog.quoted_tail(log_file)))

    def close(self, log_file: BoundedLog) -> None:
        """After the build (blocking): its log closed, its cgroup removed (every process of
        the build is dead by now)."""
        try:
            log_file.finish()
        finally:
            if self.cgroup is not None:
                self.cgroup.remove()


def _looks_full(layout: Layout, log_file: BoundedLog) -> bool:
    """Whether the failed build ran out of space (blocking: its log, the file system)."""
    tail = "\n".join(buildlog.tail_lines(log_file)).encode(errors="replace")
    return space.looks_full(layout.build, tail)


# --- the sandbox ---------------------------------------------------------------------------


#: the programs a sandbox without the host's folders gets at their usual paths, from the
#: build's own PATH: scripts' `#!/bin/sh` and `#!/usr/bin/env NAME`, make's default SHELL
SANDBOX_LINKS = (("sh", "/bin/sh"), ("env", "/usr/bin/env"))


def declared_tools(node: Node) -> list[tuple[str, str]]:
    """(target, path) of the links SANDBOX_LINKS: each names the first program of that name
    in the node's PATH folders that lie in its inputs (its declared tools, store entries;
    never the host's). A build with no shell on its PATH has no /bin/sh."""
    inputs = tuple(f"{i.rstrip('/')}/" for i in node.inputs)
    folders = [d for d in node.env.get("PATH", "").split(":") if d.startswith(inputs)]
    links = []
    for name, path in SANDBOX_LINKS:
        for folder in folders:
            if os.path.exists(os.path.join(folder, name)):
                links.append((os.path.join(folder, name), path))
                break
    return links


def readable_inputs(node: Node, layout: Layout) -> list[Path]:
    """What the sandbox shows read-only: the node's inputs and its sources, each once."""
    paths = dict.fromkeys([*node.inputs, *(os.fspath(layout.source_path(s.sha256))
                                           for s in node.sources)])
    return [Path(p) for p in paths]


def _unset_pwd(env: dict[str, str], *, host_view: bool = True,
               links: Sequence[tuple[str, str]] = ()) -> list[str]:
    """bwrap always exports PWD (its working directory); `env` restores exactly `env`: the
    host's, or in a sandbox without the host's folders, the build's own (`/usr/bin/env`,
    if it has one; else the build sees PWD, its working folder)."""
    restore = [f"PWD={env['PWD']}"] if "PWD" in env else []
    if host_view:
        program = tool_path("env") or "/usr/bin/env"
    elif any(path == "/usr/bin/env" for _, path in links):
        program = "/usr/bin/env"
    else:
        return []
    return [program, "-u", "PWD", "--", *restore]


# --- the limits ----------------------------------------------------------------------------


@dataclass
class _Watch:
    """A running build's limits, checked by the task that waits for the build anyway (at the
    deadline, and whenever the scratch's size is due to be measured), not by tasks of their
    own: a short build costs no extra trips through the event loop.

    The scratch is measured the more often the nearer it is to `--max-output-size`: the next
    measurement comes before the build could write past OVERSHOOT_AIM times the bound at the
    fastest rate it was seen writing (at least ASSUMED_WRITE_RATE, what a page cache takes),
    and at least every `limits.size_poll` seconds. A single file cannot outgrow the bound at
    all (RLIMIT_FSIZE). The memory bound is the kernel's: a process its OOM killer ended in
    the build's cgroup breaks it."""

    scratch: Path
    limits: BuildLimits
    seconds: float
    deadline: float
    cgroup: BuildCgroup | None = None
    #: the last measurement: bytes, when (trio time), and the fastest growth seen (bytes/s)
    used: int = 0
    at: float | None = None
    rate: float = 0.0
    #: the build was killed for its output's size
    over_output: bool = False

    def next_poll(self) -> float:
        """Seconds until the limits are checked again."""
        room = OVERSHOOT_AIM * self.limits.max_output_size - self.used
        rate = max(self.rate, ASSUMED_WRITE_RATE)
        return min(self.limits.size_poll, max(MIN_SIZE_POLL, room / rate))

    def _measure(self) -> tuple[int, int]:
        """The scratch's bytes and the OOM killer's count (blocking)."""
        return (tree_bytes(self.scratch),
                self.cgroup.oom_kills() if self.cgroup is not None else 0)

    async def broken(self) -> str | None:
        """The limit the build broke, if it did."""
        if trio.current_time() >= self.deadline:
            return (f"did not finish within {self.seconds:.0f} s (--build-timeout) and was "
                    f"killed")
        used, oom_kills = await trio.to_thread.run_sync(self._measure)
        now = trio.current_time()
        if self.at is not None and now > self.at:
            self.rate = max(self.rate, (used - self.used) / (now - self.at))
        self.used, self.at = used, now
        if oom_kills:
            return _memory_broken(self.limits)
        if used > self.limits.max_output_size:
            self.over_output = True
            return (f"wrote {used} bytes, more than the --max-output-size of "
                    f"{self.limits.max_output_size}, and was killed")
        return None

    async def broken_at_end(self) -> str | None:
        """After the command failed by itself: a bound the kernel held (the OOM killer ended
        one of its processes; a file reached the output's size, RLIMIT_FSIZE)."""
        used, oom_kills = await trio.to_thread.run_sync(self._measure)
        if oom_kills:
            return _memory_broken(self.limits)
        if used >= self.limits.max_output_size:
            return (f"wrote {used} bytes, as much as the --max-output-size of "
                    f"{self.limits.max_output_size} (a file may be no larger), and failed")
        return None

    async def final_size(self) -> str:
        """After a build killed for its output: what its scratch held when it stopped."""
        used = await trio.to_thread.run_sync(tree_bytes, self.scratch)
        return (f"; it held {used} bytes when it stopped, "
                f"{used / self.limits.max_output_size:.2f} times the limit")
