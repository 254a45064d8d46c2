"""Build users: every build runs under a host uid of its own, like Nix's `nixbld1..N`.

A build is untrusted code. Inside its sandbox it may look like any uid; on the host it runs as
one of a pool of accounts that are neither root, nor the daemon's account, nor a login: the
members of a group (`ixd --build-users ixbld`, created by `runit/install.sh` and `.ci/setup`
with `runit/build-users.sh`). Two builds running at once never share a uid, and before a user
is handed out and after its build ends every process of that uid is killed, so nothing of one
build can touch the next one's files.

Switching to another uid needs root: a daemon that is not root cannot confine builds this
way, and refuses to start unless told `--no-confine`.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import logging
import os
import pwd
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from ixd.store.confine import identity_argv
from ixd.wire.errors import BuildUserStuck, ConfinementUnavailable

log = logging.getLogger("ixd.store.buildusers")

DEFAULT_GROUP = "ixbld"
#: shells that mean "no login"; a build user with any other shell is refused
NO_LOGIN_SHELLS = frozenset({"/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false"})
#: where each build uid in use is locked, machine-wide (shared by every ixd of the machine)
LOCK_DIR = Path("/run/ix/build-users")
#: seconds `kill -9 -1` may take
KILL_TIMEOUT = 30.0
#: seconds the start-up probe waits for a build user other daemons do not hold
PROBE_USER_DEADLINE = 60.0


@dataclass(frozen=True)
class BuildUser:
    name: str
    uid: int
    gid: int


def members_of(group: str) -> list[BuildUser]:
    """The accounts of `group` (listed members and those whose primary group it is)."""
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        raise ConfinementUnavailable(
            f"there is no group {group!r} of build users: create it with "
            f"`sh runit/build-users.sh {group} 16` (as root), or name another with "
            f"--build-users, or start ixd with --no-confine") from None
    names = set(entry.gr_mem)
    names.update(p.pw_name for p in pwd.getpwall() if p.pw_gid == entry.gr_gid)
    users = []
    for name in sorted(names):
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            continue  # a group line naming a deleted account
        users.append(BuildUser(name, account.pw_uid, entry.gr_gid))
    return sorted(users, key=lambda u: u.uid)


def check_pool(users: Iterable[BuildUser], group: str, daemon_uid: int,
               shell_of: dict[str, str] | None = None) -> list[BuildUser]:
    """The users fit to run builds; raise ConfinementUnavailable naming every unfit one.

    Pure apart from the shell lookup (`shell_of` replaces it in tests).
    """
    pool = list(users)
    problems = []
    seen: dict[int, str] = {}
    for user in pool:
        shell = (shell_of or {}).get(user.name)
        if shell is None:
            shell = _shell(user.name)
        if user.uid == 0 or user.gid == 0:
            problems.append(f"{user.name} is root (uid {user.uid}, gid {user.gid})")
        elif user.uid == daemon_uid:
            problems.append(f"{user.name} is the daemon's own account (uid {user.uid})")
        elif shell not in NO_LOGIN_SHELLS:
            problems.append(f"{user.name} can log in (shell {shell}); give it "
                            f"/usr/sbin/nologin")
        elif user.uid in seen:
            problems.append(f"{user.name} shares uid {user.uid} with {seen[user.uid]}")
        seen.setdefault(user.uid, user.name)
    if problems:
        raise ConfinementUnavailable(
            f"build users of group {group!r} are unfit: {'; '.join(problems)}. Build users "
            f"must be unprivileged accounts of their own without a login")
    if not pool:
        raise ConfinementUnavailable(
            f"group {group!r} has no build users: add some with "
            f"`sh runit/build-users.sh {group} 16` (as root)")
    return pool


def _shell(name: str) -> str:
    try:
        return pwd.getpwnam(name).pw_shell
    except KeyError:
        return ""


def load_pool(group: str) -> list[BuildUser]:
    """The checked build users of `group`; the daemon must be root to use them."""
    if os.geteuid() != 0:
        raise ConfinementUnavailable(
            f"build users ({group}) need a daemon running as root (this is uid "
            f"{os.geteuid()}): a build must never run as the daemon's own account. Run ixd as "
            f"root, or start it with --no-confine to build unconfined")
    return check_pool(members_of(group), group, os.geteuid())


def kill_processes_of(user: BuildUser) -> None:
    """SIGKILL every process of `user`'s uid (blocking; about a millisecond).

    `kill -9 -1` run as that uid signals every process it may signal in one sweep, under the
    kernel's task list lock: a process being forked meanwhile is aborted by the pending
    SIGKILL, so a fork bomb cannot outrun it the way a scan of /proc could be outrun. A
    process with SIGKILL pending never runs user code again, so once this returns nothing
    of the build can act, even if the kernel has not reaped it yet. (kill(-1) reports success
    even when it only met processes it may not signal, so its status says nothing.) The
    switch of uid is chpst's, so the daemon spawns it with a cheap vfork.
    """
    try:
        subprocess.run(
            [*identity_argv(user.uid, user.gid), "/bin/sh", "-c", "kill -9 -1 2>/dev/null; exit 0"],
            env={"PATH": "/usr/bin:/bin"}, cwd="/", stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, timeout=KILL_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        raise BuildUserStuck(
            f"could not kill the processes of build user {user.name} (uid {user.uid}): "
            f"{exc.stderr.decode(errors='replace').strip() or exc}") from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildUserStuck(
            f"could not kill the processes of build user {user.name} (uid {user.uid}): "
            f"{exc}") from exc


def _start_kill(user: BuildUser) -> subprocess.Popen[bytes] | OSError:
    """`kill_processes_of(user)` started, not waited for (or why it could not start)."""
    try:
        return subprocess.Popen(
            [*identity_argv(user.uid, user.gid), "/bin/sh", "-c", "kill -9 -1 2>/dev/null; exit 0"],
            env={"PATH": "/usr/bin:/bin"}, cwd="/", stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        return exc


def _finish_kill(sweep: subprocess.Popen[bytes] | OSError) -> str | None:
    """Wait for a sweep `_start_kill` started: None once done, else why it failed."""
    if isinstance(sweep, OSError):
        return str(sweep)
    try:
        _, stderr = sweep.communicate(timeout=KILL_TIMEOUT)
    except subprocess.TimeoutExpired:
        sweep.kill()
        sweep.wait()
        return f"no answer within {KILL_TIMEOUT} s"
    if sweep.returncode != 0:
        return stderr.decode(errors="replace").strip() or f"exit status {sweep.returncode}"
    return None


class BuildUserPool:
    """Hands each running build a uid of its own; waits when all are taken.

    Several daemons on one machine may share a group of build users (tests do; so may an
    admin's second store). Like Nix's user locks, each uid in use is held with an exclusive
    `flock` on a file in LOCK_DIR, so no two daemons ever run builds as one uid, and one
    daemon's `kill -9 -1` never meets another daemon's build.
    """

    def __init__(self, users: Iterable[BuildUser], lock_dir: Path = LOCK_DIR) -> None:
        self.users = tuple(users)
        self.lock_dir = lock_dir
        self._free: list[BuildUser] = list(reversed(self.users))
        #: set (and replaced) whenever a user goes back to the pool
        self._wakeup = trio.Event()
        self._held: dict[int, int] = {}  # uid -> fd of its lock file
        _ensure_lock_dir(lock_dir)

    def __len__(self) -> int:
        return len(self.users)

    def clear_all(self) -> None:
        """Kill whatever runs as any build user (blocking; at daemon start, when nothing of
        ours runs yet). Users held by another daemon are left to it. The sweeps run side by
        side: one after another they took a quarter of a second of every start."""
        mine = [user for user in self.users if self._lock(user)]
        try:
            sweeps = [(user, _start_kill(user)) for user in mine]
            stuck = [f"{user.name} (uid {user.uid}): {why}" for user, sweep in sweeps
                     if (why := _finish_kill(sweep)) is not None]
        finally:
            for user in mine:
                os.close(self._held.pop(user.uid))
        if stuck:
            raise BuildUserStuck(f"could not kill the processes of build users: "
                                 f"{'; '.join(stuck)}")

    @contextlib.contextmanager
    def holding_one(self, deadline: float = PROBE_USER_DEADLINE) -> Iterator[BuildUser]:
        """A build user no other daemon holds, locked while the block runs (blocking: for
        the start-up probe, before the event loop). Another daemon's start-up `kill -9 -1`
        passes over a locked user, as it does over a running build."""
        end = time.monotonic() + deadline
        delay = 0.01
        while True:
            user = next((u for u in self.users if self._lock(u)), None)
            if user is not None:
                break
            if time.monotonic() > end:
                raise ConfinementUnavailable(
                    f"all {len(self.users)} build users are held by other daemons of this "
                    f"machine (locks in {self.lock_dir}) after {deadline:.0f} s; add build "
                    f"users with runit/build-users.sh")
            time.sleep(delay)  # polled with the deadline above: the holders are elsewhere
            delay = min(delay * 2, 0.5)
        try:
            yield user
        finally:
            self._release(user, back_to_pool=False)

    @contextlib.asynccontextmanager
    async def take(self) -> AsyncIterator[BuildUser]:
        """A build user nobody else holds, with no process left (`clear_all` at start, and
        every holder kills its processes before it lets go: run_build does, in its own
        worker threads). A BuildUserStuck raised through here means the holder could not, and
        the user is dropped from the pool instead of going back."""
        user = await self._acquire()
        cleared = False
        try:
            yield user
            cleared = True
        except BuildUserStuck:
            log.error("build user %s (uid %d) could not be cleared of processes; it is not "
                      "used again until ixd restarts", user.name, user.uid)
            raise
        except BaseException:
            cleared = True
            raise
        finally:
            self._release(user, back_to_pool=cleared)

    async def _acquire(self) -> BuildUser:
        delay = 0.01
        while True:
            if not self._free:
                await self._wakeup.wait()
                continue
            # the lock files are opened off the loop; a uid locked there is this task's
            # alone (a lock of another task, or daemon, on it fails), so it is still free
            user = await trio.to_thread.run_sync(self._lock_first, tuple(reversed(self._free)))
            if user is not None:
                self._free.remove(user)
                return user
            # every free uid is held by another daemon: look again a little later
            await trio.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _lock_first(self, users: Sequence[BuildUser]) -> BuildUser | None:
        """The first of `users` locked now, if any (blocking)."""
        return next((user for user in users if self._lock(user)), None)

    def _lock(self, user: BuildUser) -> bool:
        fd = os.open(self.lock_dir / str(user.uid),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[user.uid] = fd
        return True

    def _release(self, user: BuildUser, *, back_to_pool: bool) -> None:
        fd = self._held.pop(user.uid, None)
        if fd is not None:
            os.close(fd)  # releases the lock
        if back_to_pool:
            self._free.append(user)
            self._wakeup.set()
            self._wakeup = trio.Event()


def _ensure_lock_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        raise ConfinementUnavailable(f"{path} (the build users' lock files) must be a folder "
                                     f"of the daemon's own, not a link or someone else's")
