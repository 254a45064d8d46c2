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
`make_thrs`: nothing is inherited from the daemon. Blocking file-system work (preparing the
scratch, canonicalising, deleting) runs in worker threads.

An unconfined build (`ixd --no-confine`, which logs loudly) runs as the daemon and writes
its store path directly; its output is still canonicalised.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import queue
import secrets
import signal
import stat
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import outcome
import trio  # type: ignore[import-untyped, unused-ignore]  # trio 0.22 has no py.typed

from ixd.model.layout import Layout
from ixd.model.nodes import Node, Source
from ixd.store import space
from ixd.store.buildlog import DEFAULT_MAX_LOG, BoundedLog, LogPump, decode
from ixd.store.buildusers import BuildUser, kill_processes_of
from ixd.store.canonical import OutputRefused, canonicalise
from ixd.store.cgroup import BuildCgroup, Cgroups, enter_argv
from ixd.store.confine import (
    build_identity_argv,
    bwrap_path,
    confinement_argv,
    sandbox_etc,
    tool_path,
)
from ixd.store.elf import MachineMismatch, machine_check
from ixd.store.fstree import remove_tree
from ixd.wire.errors import (
    BuildFailed,
    BuildLimitExceeded,
    ConfinementUnavailable,
    WrongMachine,
)

log = logging.getLogger(__name__)

#: a build's output as the event loop gets it: lines, and (ints) counts of lines left out
#: (past the live budget), then the bytes of the log up to their end (`ixd.store.buildlog`)
LogCallback = Callable[[list[str | int], int], None]
#: the bwrap prefix of a confined build, given the fd for bwrap's --info-fd
SandboxArgv = Callable[[int], list[str]]

#: log lines quoted in a BuildFailed message
LOG_TAIL_LINES = 20
#: after the build's process exits, how long its output pipe may stay open (a background
#: process of an unconfined build holding it) before the log is closed anyway
EOF_GRACE = 5.0
#: how long to wait for killed processes to disappear before giving up on them
KILL_GRACE = 10.0
#: what _sandbox_pidfd says when the sandbox is already over (never a file descriptor)
SANDBOX_GONE = -1
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


class LimitExceeded(Exception):
    """Raised inside the build's watchdog; becomes a BuildLimitExceeded naming the limit."""


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
    in the store or scratch) if the command fails,
    breaks a limit or cannot be run, ConfinementUnavailable if confinement is asked for and
    impossible, NoSpace (a BuildFailed) if the file system filled. `on_exit()` is called once
    the command has ended and its work folder is deleted, before its output is canonicalised
    and moved (a build that fails never calls it: its caller hands its slot on once its files
    are gone). With `expect_hash`, an output of any other content hash is refused
    (BuildFailed caused by ContentMismatch) and never reaches the store. `keep_log`: the
    command's output goes after what the log already holds. A confined build runs in a
    cgroup of its own under `cgroups` (its memory bound), else with RLIMIT_DATA; a broken
    limit raises BuildLimitExceeded. `seed(out)` fills the private output folder before the
    command runs (as the daemon: what it makes is then given to the build user);
    `finish(out)` runs once no process of the build is left, before the output is
    canonicalised (both blocking, in threads). On trio cancellation the build's processes
    are killed and waited for, its files removed, and Cancelled re-raised.
    """
    if node.kind != "build":
        raise ValueError(f"run_build runs build nodes, not the {node.kind} node {node.uid}")
    if not node.outputs or not node.command:
        raise ValueError(f"build node {node.name} ({node.uid}) has no output or no command")
    if confine and user is None:
        raise ValueError(f"a confined build of {node.name} needs a build user")

    limits = limits or BuildLimits()
    store_path = Path(node.outputs[0])
    scratch = layout.scratch(node.uid)
    tmp, src = scratch / "tmp", scratch / "src"
    # confined: in the build's own view of the store; unconfined: the store path itself
    store_view = scratch / "store"
    out = store_view / store_path.name if confine else store_path
    log_path = layout.log_path(node.uid)

    env = dict(node.env)
    env.update(out=os.fspath(store_path), tmp=os.fspath(tmp), src=os.fspath(src),
               uid=node.uid, make_thrs=str(make_thrs))
    sandbox: SandboxArgv | None = None
    cgroup: BuildCgroup | None = None
    memory: int | None = None  # the per-process fallback's bound (confined builds only)
    if confine:
        assert user is not None
        if bwrap_path() is None:
            raise ConfinementUnavailable(
                f"cannot build {node.name} ({node.uid}) confined: bubblewrap (`bwrap`) "
                "is not installed"
            )
        memory = limits.max_memory or None
        if cgroups is not None and memory is not None:
            cgroup = cgroups.build(node.uid)
        prefix = build_identity_argv(
            user.uid, user.gid, max_processes=limits.max_processes,
            max_file_size=limits.max_output_size,
            max_data=memory if cgroup is None else None)
        if cgroup is not None:
            prefix = enter_argv(cgroup.procs) + prefix
        etc_dir = sandbox_etc_dir(layout)

        def sandbox(info_fd: int) -> list[str]:
            # (in the spawner's thread: the look-ups of the declared shell are stat calls)
            links = [] if node.host_view else declared_tools(node)
            return prefix + confinement_argv(
                net=node.net,
                host_view=node.host_view,
                links=links,
                store_view=(store_view, store_path.parent),
                inputs=_readable_inputs(node, layout),
                binds=[(scratch, scratch)],
                tmp=tmp,
                etc=etc_dir,
                info_fd=info_fd,
                chdir=tmp,
            ) + _unset_pwd(env, host_view=node.host_view, links=links)

    timeout = max(limits.timeout, node.timeout)
    # opening a local file: no wait worth a thread
    log_file = BoundedLog(log_path, limits.max_log_size, append=keep_log)
    try:
        prepare: Callable[[], None] | None = None
        if user is None:
            # two lstat calls on the loop; deleting what they find is a thread's work
            if _exists(store_path) or _exists(scratch):
                await trio.to_thread.run_sync(_remove_stale, store_path, scratch)
            _prepare(node, layout, out, scratch)
            if seed is not None:
                await trio.to_thread.run_sync(seed, out)
        else:
            links = _source_links(node, layout)
            build_user = user
            build_cgroup = cgroup

            def prepare() -> None:
                _make_scratch(scratch, build_user, links, out.name)
                if seed is not None:
                    seed(out)
                    _give_tree(out, build_user)
                if build_cgroup is not None:
                    build_cgroup.create(limits.max_memory, limits.max_processes)
        ran = _Outcome()
        watch = _Watch(scratch, limits, timeout, trio.current_time() + timeout, cgroup)
        ran.status = await _run_logged(
            list(node.command), env=env, cwd=tmp if user is None else scratch,
            stdin=node.stdin.encode(),
            build_log=log_file, on_log=on_log, sandbox=sandbox, outcome=ran,
            watch=watch, prepare=prepare)
        if ran.broken is None:  # a bound the kernel held: the build did not end well
            ran.broken = await watch.broken_at_end(ran.status)
        elif watch.over_output:  # every process of it is dead: what it left, for the record
            ran.broken += await watch.final_size()
        if ran.broken is not None:
            raise BuildLimitExceeded(_failure_message(node, ran.broken, log_path, log_file))
        if ran.status != 0:
            if space.looks_full(layout.build, _log_bytes(log_file)):
                raise _OutOfSpace  # told once its scratch is gone: what is free then
            what = _describe_status(ran.status)
            if ran.log_error:
                what += f" ({ran.log_error})"
            if cgroup is None and memory is not None:
                what += (f" (were it out of memory: each of its processes may use "
                         f"{memory} bytes of data, --max-memory)")
            raise BuildFailed(_failure_message(node, what, log_path, log_file))
        if on_exit is not None:
            # the slot's next build starts on the space this one's work took: free first
            await _clear_work(scratch, None if ran.sandbox_gone else user)
            on_exit()
        try:
            # with the sandbox's pid namespace seen gone, no process of the build is left;
            # otherwise every process of its uid is killed first
            built = await trio.to_thread.run_sync(
                _settle, None if ran.sandbox_gone else user, out, store_path, scratch,
                layout.trash, limits, expect_hash, finish, node.elf_machine)
        except MachineMismatch as exc:
            raise WrongMachine(_failure_message(
                node, f"made a program for another machine: {exc}; {node.name} is built "
                f"for {node.elf_machine}, so every ELF file it makes must be (did the "
                "build use a compiler of the host's instead of $CC?)", log_path,
                log_file)) from exc
        except LimitExceeded as exc:
            raise BuildLimitExceeded(_failure_message(
                node, f"its output could not be finished: {exc}", log_path,
                log_file)) from exc
        except (OSError, OutputRefused, ContentMismatch) as exc:
            raise BuildFailed(_failure_message(
                node, f"its output could not be finished: {exc}", log_path,
                log_file)) from exc
        if built.notes:
            log_file.end_line()
        lines: list[str | int] = []
        for note in built.notes:
            line = f"ix: {note}"
            log_file.write(line.encode() + b"\n")
            lines.append(line)
        if on_log is not None and lines:
            on_log(lines, log_file.written)
    except BaseException as exc:
        # a failed build's files are gone before its slot goes to the next (the caller
        # hands the slot on once this raises)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_abandon, user, out, scratch)
        if isinstance(exc, _OutOfSpace):
            raise space.no_space(layout.build, f"building {node.name}", log_path,
                                 _quoted_tail(log_file)) from None
        full = exc if space.is_full(exc) else exc.__cause__
        if full is not None and space.is_full(full):
            raise space.no_space(layout.build, f"building {node.name} ({full})", log_path,
                                 _quoted_tail(log_file)) from exc
        if isinstance(exc, (OSError, subprocess.SubprocessError)):
            raise BuildFailed(_failure_message(node, f"could not be run: {exc}", log_path,
                                               log_file)) from exc
        raise
    finally:
        with trio.CancelScope(shield=True):  # its tail in order, unless it fits whole
            await trio.to_thread.run_sync(log_file.finish)
            if cgroup is not None:  # every process of the build is dead by now
                await trio.to_thread.run_sync(cgroup.remove)
    return built


class _OutOfSpace(Exception):
    """A build that failed for want of space (`run_build` tells it once its files are gone)."""


class ContentMismatch(Exception):
    """An output whose content is not the one expected (`run_build(expect_hash=...)`)."""


@dataclass(frozen=True)
class Built:
    """A finished build's output, canonical and in the store."""

    #: what canonicalisation changed beyond owner, mode and time (also in the build's log)
    notes: tuple[str, ...]
    files: int
    size: int
    #: the output's content hash (`ixd.store.treehash`), recorded when it is registered valid
    content_hash: str
    #: the build's scratch, moved into the trash: the caller deletes it when it suits
    trashed: Path


# --- the file system -----------------------------------------------------------------------


def _exists(path: Path) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _remove_stale(store_path: Path, scratch: Path) -> None:
    """Remove an output never registered valid and an old scratch (blocking)."""
    remove_tree(store_path)  # the runner checked: not valid
    remove_tree(scratch)


def _prepare(node: Node, layout: Layout, out: Path, scratch: Path) -> None:
    """An unconfined build's fresh scratch and output folder (the daemon's own)."""
    os.mkdir(scratch, 0o700)
    os.mkdir(scratch / "tmp")
    os.mkdir(scratch / "src")
    os.mkdir(out)
    for source in node.sources:
        os.symlink(layout.source_path(source.sha256), scratch / "src" / _source_name(node, source))


def _make_scratch(scratch: Path, user: BuildUser, links: list[tuple[str, str]],
                  out_name: str) -> None:
    """A confined build's scratch with its folders and its sources' links, made by root
    and then given to the build user (blocking: the spawner's thread does it just before
    the build starts, so neither the event loop nor a process of its own is spent on it).
    No process of the build user runs yet (the pool hands out a user with none), so
    nothing can race these calls; the scratch's parent is root's."""
    try:
        os.mkdir(scratch, 0o700)
    except FileExistsError:  # left by a build cut short
        remove_tree(scratch)
        os.mkdir(scratch, 0o700)
    folders = (scratch / "tmp", scratch / "src", scratch / "store", scratch / "store" / out_name)
    for folder in folders:
        os.mkdir(folder, 0o755)
    for target, name in links:
        os.symlink(target, scratch / "src" / name)
    for folder in folders:
        os.chown(folder, user.uid, user.gid)
    os.chown(scratch, user.uid, user.gid)


def _give_tree(top: Path, user: BuildUser) -> None:
    """Make what the daemon put in a build's output the build user's (its processes may
    change it; the daemon made it, so nothing in it is a build's yet)."""
    for folder, subdirs, files in os.walk(top):
        for name in (*subdirs, *files):
            os.chown(os.path.join(folder, name), user.uid, user.gid, follow_symlinks=False)
    os.chown(top, user.uid, user.gid)


def _source_links(node: Node, layout: Layout) -> list[tuple[str, str]]:
    """(target, name) of the links to the node's sources its scratch's `src` holds."""
    return [(os.fspath(layout.source_path(source.sha256)), _source_name(node, source))
            for source in node.sources]


def _source_name(node: Node, source: Source) -> str:
    name = source.filename
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise BuildFailed(
            f"build of {node.name} ({node.uid}): source {source.url} has the bad file "
            f"name {name!r}; it must be a plain file name"
        )
    return name


def sandbox_etc_dir(layout: Layout) -> Path:
    """The sandbox's own /etc/passwd and /etc/group, written once per root (root's, 0644,
    in `build/.etc`, which build users may pass through to but not list)."""
    folder = layout.build / ".etc"
    if folder.is_dir():
        return folder
    staging = layout.build / f".etc.{os.getpid()}.{id(folder)}"
    remove_tree(staging)
    staging.mkdir(mode=0o755)
    for name, text in sandbox_etc().items():
        (staging / name).write_text(text)
        (staging / name).chmod(0o644)
    try:
        os.rename(staging, folder)
    except OSError:  # another build made it first
        remove_tree(staging)
    return folder


def _settle(user: BuildUser | None, out: Path, store_path: Path, scratch: Path,
            trash: Path, limits: BuildLimits, expect_hash: str | None = None,
            finish: Callable[[Path], None] | None = None, machine: str = "") -> Built:
    """After the command: no process of the build left (`user`'s are killed, if given), its
    output canonicalised, hashed, every ELF file checked to be for `machine` (MachineMismatch
    otherwise), and moved into the store, the scratch removed (blocking; one worker thread
    for all of it)."""
    if user is not None:
        # nothing of the build may run on while its output is canonicalised
        kill_processes_of(user)
    try:
        mode = os.lstat(out).st_mode
    except FileNotFoundError:
        raise OutputRefused(f"the build left nothing at $out ({store_path})") from None
    if not stat.S_ISDIR(mode):
        raise OutputRefused(f"the build left $out ({store_path}) as something else than a "
                            "folder (a link or a file)")
    if finish is not None:
        finish(out)
    # of relative paths: the same once moved
    canonical = canonicalise(out, content_hash=True, check=machine_check(machine))
    if canonical.size > limits.max_output_size:
        raise LimitExceeded(f"the output holds {canonical.size} bytes, more than the "
                            f"--max-output-size of {limits.max_output_size}")
    content_hash = canonical.content_hash
    assert content_hash is not None
    if expect_hash is not None and content_hash != expect_hash:
        raise ContentMismatch(f"its content hash is {content_hash}, not the expected "
                              f"{expect_hash}")
    if out != store_path:
        try:
            os.rename(out, store_path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            # a stale output a build cut short left (the runner checked: not valid)
            remove_tree(store_path)
            os.rename(out, store_path)
    # Deleting the scratch (the build's temporary files) is nobody's wait: one rename into
    # the private trash, and the daemon deletes it later (recovery empties what is left).
    trashed = trash / f"{scratch.name}.{secrets.token_hex(4)}"
    os.rename(scratch, trashed)
    return Built(tuple(canonical.notes), canonical.files, canonical.size, content_hash,
                 trashed)


async def _clear_work(scratch: Path, user: BuildUser | None) -> None:
    """Delete a finished build's work (`tmp`, `src`; its output stays in `store`): no process
    of it left first (`user`'s are killed, if given). Root uses one `rm -rf`, which holds no
    interpreter lock the event loop needs."""
    if user is not None:
        await trio.to_thread.run_sync(kill_processes_of, user)
    work = [scratch / "tmp", scratch / "src"]
    if os.geteuid() == 0:
        done = await trio.run_process(["rm", "-rf", "--one-file-system", "--",
                                       *map(os.fspath, work)], check=False,
                                      stdin=subprocess.DEVNULL, capture_stderr=True)
        if done.returncode == 0:
            return
    for folder in work:
        await trio.to_thread.run_sync(remove_tree, folder)


def _log_bytes(log_file: BoundedLog) -> bytes:
    """The end of a build's log, as written."""
    return "\n".join(_log_tail(log_file)).encode(errors="replace")


def _abandon(user: BuildUser | None, out: Path, scratch: Path) -> None:
    """After a failure or cancellation: no process of the build left, nothing of it kept."""
    try:
        if user is not None:
            kill_processes_of(user)
    finally:
        _discard(out, scratch)


def _readable_inputs(node: Node, layout: Layout) -> list[Path]:
    """What the sandbox shows read-only: the node's inputs and its sources, each once."""
    paths = dict.fromkeys([*node.inputs, *(os.fspath(layout.source_path(s.sha256))
                                           for s in node.sources)])
    return [Path(p) for p in paths]


def _discard(out: Path, scratch: Path) -> None:
    """Remove what a failed or cancelled build left; never raise over the real error."""
    for path in (out, scratch):
        try:
            remove_tree(path)
        except OSError:
            log.exception("could not remove %s", path)


def tree_bytes(path: Path) -> int:
    """Bytes allocated to the files under `path` (blocks, so sparse files count as written);
    links are not followed and files that vanish meanwhile are skipped."""
    total = 0
    stack = [os.fspath(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


# --- running the command -------------------------------------------------------------------


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
            return self._memory_broken()
        if used > self.limits.max_output_size:
            self.over_output = True
            return (f"wrote {used} bytes, more than the --max-output-size of "
                    f"{self.limits.max_output_size}, and was killed")
        return None

    async def broken_at_end(self, status: int) -> str | None:
        """After the command ended by itself: a bound the kernel held (the OOM killer ended
        one of its processes; a file reached the output's size, RLIMIT_FSIZE)."""
        used, oom_kills = await trio.to_thread.run_sync(self._measure)
        if oom_kills:
            return self._memory_broken()
        if status != 0 and used >= self.limits.max_output_size:
            return (f"wrote {used} bytes, as much as the --max-output-size of "
                    f"{self.limits.max_output_size} (a file may be no larger), and failed")
        return None

    def _memory_broken(self) -> str:
        return (f"used more than its --max-memory of {self.limits.max_memory} bytes (the "
                f"kernel's OOM killer ended a process of it) and was killed")

    async def final_size(self) -> str:
        """After a build killed for its output: what its scratch held when it stopped."""
        used = await trio.to_thread.run_sync(tree_bytes, self.scratch)
        return (f"; it held {used} bytes when it stopped, "
                f"{used / self.limits.max_output_size:.2f} times the limit")


@dataclass
class _Outcome:
    status: int = -1
    #: the limit the build broke, if it did
    broken: str | None = None
    #: the sandbox's pid 1 was seen to end (so its whole pid namespace is gone)
    sandbox_gone: bool = False
    #: the command exited by itself
    exited: bool = False
    #: why its log stops short, if it does (a full disk)
    log_error: str | None = None


async def _run_logged(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    stdin: bytes,
    build_log: BoundedLog,
    on_log: LogCallback | None,
    sandbox: SandboxArgv | None,
    outcome: _Outcome,
    watch: _Watch,
    prepare: Callable[[], None] | None = None,
) -> int:
    """Run argv (inside `sandbox` if given) with its output logged; its exit status.

    The process gets its own session. When it exits, what is left of its process group is
    killed (background processes of an unconfined build; a confined build's pid namespace
    dies with it anyway). If this is cancelled, the whole build is killed and waited for.
    `outcome.sandbox_gone` records whether the sandbox's pid 1 was seen to end: its pid
    namespace, and every process that ever ran in it, is then gone for sure. While it runs,
    `watch` is checked every `size_poll` seconds and at its deadline; a limit broken goes to
    `outcome.broken` and the build is killed. `prepare()` runs first, in the spawner's
    thread.
    """
    child = await _SPAWNER.run(lambda: _spawn(argv, env=env, cwd=cwd, stdin=stdin,
                                              sandbox=sandbox, prepare=prepare))
    popen = child.popen
    sandbox_pidfd: int | None = None
    # the output is read, logged and split into lines in a thread of its own: off the
    # event loop every other request needs, however fast the build prints
    output_done = trio.Event()
    pump = LogPump(child.output, build_log, on_log, _poster())
    pump.start(output_done.set)
    try:
        async with trio.open_nursery() as nursery:
            if child.stdin is not None:
                nursery.start_soon(_feed, child.stdin, child.stdin_rest)
            if child.info is not None:
                found = await _sandbox_pidfd(child.info)
                if found == SANDBOX_GONE:
                    outcome.sandbox_gone = True
                else:
                    sandbox_pidfd = found
            # Exited but not yet reaped: its pid (= process group id) cannot be reused
            # before we kill what is left of the group.
            while True:
                poll = trio.current_time() + watch.next_poll()
                with trio.move_on_at(min(poll, watch.deadline)):
                    await trio.lowlevel.wait_readable(child.pidfd)
                    break
                outcome.broken = await watch.broken()
                if outcome.broken is not None:  # killed whole in `finally`
                    nursery.cancel_scope.cancel()
                    return -1
            outcome.exited = True
            _kill_group(popen.pid)
            status = popen.poll()
            assert status is not None
            with trio.move_on_after(EOF_GRACE):
                await output_done.wait()
            nursery.cancel_scope.cancel()
        return status
    finally:
        pump.stop()
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
                    outcome.sandbox_gone = True
                os.close(sandbox_pidfd)
            os.close(child.pidfd)
            for stream in (child.stdin, child.info):
                if stream is not None:
                    await stream.aclose()
            await output_done.wait()  # the pump stops within POLL_SECONDS of `stop`
            if pump.error is not None:
                outcome.log_error = f"its log could not be written: {pump.error}"
                log.warning("%s: %s", build_log.path, outcome.log_error)


def _poster() -> Callable[[Callable[[], None]], None]:
    """Posting a function to this event loop from another thread (a no-op once it ended)."""
    token = trio.lowlevel.current_trio_token()

    def post(function: Callable[[], None]) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(function)

    return post


class _Spawner:
    """One long-lived thread that starts every build's process.

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
    #: stdout and stderr: the pipe's reading end (the log pump's, which closes it)
    output: int
    #: for the rest of its stdin: what did not fit in the pipe at once (None: all did)
    stdin: trio.lowlevel.FdStream | None
    stdin_rest: bytes
    #: bwrap's --info-fd
    info: trio.lowlevel.FdStream | None


def _spawn(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    stdin: bytes,
    sandbox: SandboxArgv | None,
    prepare: Callable[[], None] | None = None,
) -> _Child:
    """Start the command (blocking: in the spawner's thread), with pipes trio can read,
    after `prepare()`."""
    if prepare is not None:
        prepare()
    parent_ends: list[int] = []
    child_ends: list[int] = []
    try:
        out_r, out_w = os.pipe()
        parent_ends.append(out_r)
        child_ends.append(out_w)
        in_r, in_w = subprocess.DEVNULL, -1
        if stdin:
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
    rest = b""
    if in_w >= 0:
        rest = _write_what_fits(in_w, stdin)
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
    )


def _write_what_fits(fd: int, data: bytes) -> bytes:
    """Write what the pipe `fd` takes now of `data` (a script fits whole, mostly: no task
    of the event loop needed to feed it); what is left. Nothing is left if the reader is
    gone already; on another error, all of it is left, for the task to meet the error where
    the build's clean-up is."""
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
    started a sandbox (its message is in the log).
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


def _describe_status(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"failed with exit status {status}"


def _log_tail(log_file: BoundedLog, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        data = log_file.tail()
    except OSError:
        return []
    return [decode(line) for line in data.splitlines()[-lines:]]


def _failure_message(node: Node, what: str, log_path: Path, log_file: BoundedLog) -> str:
    return f"build of {node.name} ({node.uid}) {what}; log: {log_path}{_quoted_tail(log_file)}"


def _quoted_tail(log_file: BoundedLog) -> str:
    """The log's last lines as an error message quotes them ("" for an empty log)."""
    tail = _log_tail(log_file)
    if not tail:
        return ""
    return f"\nlast {len(tail)} lines of the log:\n" + "\n".join(f"  {line}" for line in tail)
