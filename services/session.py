"""`ixc session --svdir DIR [--realm NAME]`: keep a runit service tree in step with a realm.

Runs in the foreground, as the user. Every service the realm provides
(`<root>/realm/<realm>/etc/services/<name>/`) becomes a writable folder `DIR/<name>` with a
copy of its files (runsv must write `supervise/` there, and the store is read-only);
services the realm no longer provides are stopped and removed. The realm link's folder is
watched with inotify, so a switch — `ixc mut`, `ixc let`, `ixc rollback`, `ixc purge` —
is followed at once. Folders in DIR that the session did not create (no marker file naming
this realm) are never touched.

DIR must be a folder of the caller's own that neither group nor others may write, and not a
symlink: a runsvdir runs whatever `run` files appear there, as the caller. Anything else is
refused with `E_UNSAFE_SVDIR`.

    --svdir DIR     the service tree (created if missing); a runsvdir supervises it
    --realm NAME    the realm to follow (default: your login)
    --root ROOT     the daemon's root (default: asked from ixd over the socket)
    --runsvdir      also run `runsvdir -P DIR` and stop its services on TERM: what the
                    runit session service (runit/session/run) uses
    --once          one pass, then exit
    --interval S    a full pass every S seconds besides inotify (default 30)

Signals: TERM and INT stop (with --runsvdir: after the services have stopped), HUP makes a
full pass now. Also runnable as `python3 -m services.session [--socket PATH] ...`.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from ixd.model.realm import own_login
from ixd.model.selector import validate_realm_name
from ixd.wire.errors import (
    ConnectionLost,
    DaemonUnavailable,
    IxError,
    SessionError,
    UnsafeServiceDir,
    UsageError,
)
from ixd.wire.transport import DEFAULT_SOCKET, Client
from services.reconcile import Reconciler

log = logging.getLogger("ix.session")

#: how long stopping waits for runsvdir, then for every runsv of ours, to go
STOP_DEADLINE = 20.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit; ixc reports usage errors
        raise UsageError(f"ixc session: {message} (see `ixc session --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ixc session", description=(
        "Keep a runit service tree in step with the services of a realm (foreground)."))
    parser.add_argument("--svdir", type=Path, required=True,
                        help="the service tree a runsvdir supervises (created if missing)")
    parser.add_argument("--realm", help="the realm to follow (default: your login)")
    parser.add_argument("--root", type=Path,
                        help="the daemon's root (default: asked from ixd)")
    parser.add_argument("--socket", help="ixd's socket (default: $IX_SOCKET, then "
                                         f"{DEFAULT_SOCKET})")
    parser.add_argument("--runsvdir", action="store_true",
                        help="also run runsvdir over the tree; stopping stops its services")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument("--interval", type=float, default=30.0,
                        help="seconds between full passes besides inotify (default 30)")
    return parser


def main(argv: Sequence[str], *, socket: str) -> int:
    """`ixc session ...`; `socket` is the one ixc would use (--socket or $IX_SOCKET). What
    goes wrong is an ix error (E_SESSION for the file system), never a traceback."""
    try:
        return _main(argv, socket)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise SessionError(f"ixc session: {where}{exc.strerror or exc}") from None


def _main(argv: Sequence[str], socket: str) -> int:
    args = build_parser().parse_args(list(argv))
    if args.interval <= 0:
        raise UsageError("ixc session: --interval must be more than 0 seconds")
    _setup_logging()
    svdir = Path(os.path.abspath(args.svdir))
    with _Signals() as signals:
        if args.root is not None:
            root, login = Path(os.path.abspath(args.root)), own_login()
        else:
            found = _ask_daemon(args.socket or socket, signals)
            if found is None:
                return 0  # stopped while waiting for the daemon
            root, login = found
        realm = validate_realm_name(args.realm or login)
        try:
            svdir.mkdir(mode=0o755, parents=True, exist_ok=True)
        except FileExistsError:
            pass  # a file, a dangling symlink: check_service_dir says what is wrong
        except OSError as exc:
            raise SessionError(f"ixc session: cannot make the service folder --svdir "
                               f"{svdir}: {exc.strerror or exc}; give a folder of your own "
                               f"that you can create, e.g. --svdir ~/service") from None
        check_service_dir(svdir)
        reconciler = Reconciler(svdir, root / "realm" / realm, realm)
        log.info("session of %s: realm %s (%s) -> service tree %s", own_login(), realm,
                 reconciler.realm_link, svdir)
        if args.once:
            summary = reconciler.sync()
            reconciler.reap()
            return 1 if summary.failed or summary.unreadable else 0
        return Session(reconciler, signals, runsvdir=args.runsvdir,
                       interval=args.interval).run()


def check_service_dir(path: Path, uid: int | None = None) -> None:
    """Refuse (`UnsafeServiceDir`) a service tree someone other than `uid` (default: ours)
    could put a service into: a symlink, not a folder, owned by another uid, or writable by
    its group or others. Its runsvdir would run their `run` files as us."""
    uid = os.getuid() if uid is None else uid
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise UnsafeServiceDir(f"--svdir {path}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeServiceDir(f"--svdir {path} is a symlink (to {os.readlink(path)}); give "
                               f"the folder itself")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeServiceDir(f"--svdir {path} is not a folder")
    if info.st_uid != uid:
        raise UnsafeServiceDir(
            f"--svdir {path} belongs to {_name_of(info.st_uid)}, not to {_name_of(uid)}: "
            f"its owner could put services there for your session to run; use a folder of "
            f"your own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeServiceDir(
            f"--svdir {path} is writable by its group or others (mode "
            f"{stat.S_IMODE(info.st_mode):o}): they could put services there for your "
            f"session to run; chmod go-w {path}")


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class Session:
    """The foreground loop: inotify on the realm folder, signals, runsvdir, passes."""

    def __init__(self, reconciler: Reconciler, signals: _Signals, *, runsvdir: bool,
                 interval: float) -> None:
        self.reconciler = reconciler
        self.signals = signals
        self.want_runsvdir = runsvdir
        self.interval = interval
        self.realms_dir = reconciler.realm_link.parent
        self.realm = reconciler.realm
        self.dirty = True
        self.wd: int | None = None
        self.runsvdir: subprocess.Popen[bytes] | None = None
        self.runsvdir_due: float | None = 0.0 if runsvdir else None

    def run(self) -> int:
        import pyinotify  # only this command needs it: `ixc` stays light

        self._pyinotify = pyinotify
        mask = (pyinotify.IN_CREATE | pyinotify.IN_MOVED_TO | pyinotify.IN_MOVED_FROM
                | pyinotify.IN_DELETE | pyinotify.IN_DELETE_SELF | pyinotify.IN_MOVE_SELF
                | pyinotify.IN_ONLYDIR)
        self.mask = mask
        self.wm = pyinotify.WatchManager()
        self.notifier = pyinotify.Notifier(self.wm, default_proc_fun=self._on_event)
        poller = select.poll()
        poller.register(self.signals.fd, select.POLLIN)
        poller.register(self.wm.get_fd(), select.POLLIN)
        next_pass = 0.0
        try:
            while not self.signals.stop:
                now = time.monotonic()
                if self.wd is None and self._watch():
                    self.dirty = True
                if self.signals.take_hup():
                    log.info("HUP: a full pass now")
                    self.dirty = True
                if self.dirty or now >= next_pass:
                    self.dirty = False
                    self.reconciler.sync()
                    next_pass = now + self.interval
                pending = self.reconciler.reap()
                self._mind_runsvdir(now)
                waits = [next_pass - now]
                if pending:
                    waits.append(0.1)
                if self.wd is None:
                    waits.append(1.0)
                if self.runsvdir_due is not None:
                    waits.append(self.runsvdir_due - now)
                timeout_ms = max(0, int(min(waits) * 1000))
                for fd, _event in poller.poll(timeout_ms):
                    if fd == self.signals.fd:
                        self.signals.drain()
                    else:
                        self.notifier.read_events()
                        self.notifier.process_events()
        finally:
            self._stop()
            self.notifier.stop()
        return 0

    # --- inotify ---------------------------------------------------------------------------

    def _watch(self) -> bool:
        path = str(self.realms_dir)
        wd = self.wm.add_watch(path, self.mask, rec=False, auto_add=False,
                               quiet=True).get(path, -1)
        if wd < 0:
            return False
        self.wd = wd
        return True

    def _on_event(self, event: Any) -> None:
        pyinotify = self._pyinotify
        if event.mask & pyinotify.IN_Q_OVERFLOW:
            self.dirty = True
        elif event.mask & (pyinotify.IN_DELETE_SELF | pyinotify.IN_MOVE_SELF
                           | pyinotify.IN_IGNORED):
            if self.wd is not None and event.mask & pyinotify.IN_MOVE_SELF:
                self.wm.rm_watch(self.wd, quiet=True)
            self.wd = None  # watched again (by path) on the next turn
            self.dirty = True
        elif getattr(event, "name", None) == self.realm:
            self.dirty = True

    # --- runsvdir --------------------------------------------------------------------------

    def _mind_runsvdir(self, now: float) -> None:
        if self.runsvdir is not None:
            code = self.runsvdir.poll()
            if code is None:
                return
            log.warning("runsvdir exited with status %s; starting it again in 1s", code)
            self.runsvdir = None
            self.runsvdir_due = now + 1.0
        if self.runsvdir_due is None or now < self.runsvdir_due:
            return
        env = dict(os.environ)
        # the realm's programs first on the services' PATH (through the moving realm link)
        env["PATH"] = f"{self.reconciler.realm_link}/bin:{env.get('PATH', '/usr/bin:/bin')}"
        argv = ["runsvdir", "-P", str(self.reconciler.svdir)]
        try:
            self.runsvdir = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            log.error("cannot start runsvdir (is runit installed?): %s; trying again in 10s",
                      exc)
            self.runsvdir_due = now + 10.0
            return
        self.runsvdir_due = None
        log.info("runsvdir %d supervises %s", self.runsvdir.pid, self.reconciler.svdir)

    def _stop(self) -> None:
        if not self.want_runsvdir:
            return
        deadline = time.monotonic() + STOP_DEADLINE
        proc = self.runsvdir
        if proc is not None and proc.poll() is None:
            log.info("stopping: runsvdir stops every service of %s", self.reconciler.svdir)
            proc.send_signal(signal.SIGHUP)  # runsvdir: TERM to each runsv, then exit
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # each runsv stops its service (TERM, then finish) and exits: wait for ours
        while (left := self.reconciler.running()) and time.monotonic() < deadline:
            self.reconciler.reap()
            self.signals.wait(0.05)
        if left:
            log.warning("stopping: still running after %.0fs: %s", STOP_DEADLINE,
                        " ".join(str(p) for p in left))
        log.info("session stopped")


class _Signals:
    """TERM/INT ask to stop, HUP asks for a pass, CHLD wakes the loop (runsvdir died); all
    through a wakeup pipe that the loop polls beside the inotify descriptor."""

    def __init__(self) -> None:
        self.stop = False
        self._hup = False
        self._saved: dict[int, Any] = {}
        self._saved_fd = -1
        self.fd, self._wfd = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._wfd, False)

    def __enter__(self) -> _Signals:
        self._saved_fd = signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        for signum, handler in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
                                (signal.SIGHUP, self._on_hup), (signal.SIGCHLD, _ignore)):
            self._saved[signum] = signal.signal(signum, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._saved_fd)
        os.close(self.fd)
        os.close(self._wfd)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stop:
            log.info("stopping on signal %d", signum)
        self.stop = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._hup = True

    def take_hup(self) -> bool:
        hup, self._hup = self._hup, False
        return hup

    def drain(self) -> None:
        try:
            while os.read(self.fd, 512):
                pass
        except BlockingIOError:
            pass

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, less if a signal comes."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        if poller.poll(max(0, int(seconds * 1000))):
            self.drain()


def _ignore(signum: int, frame: FrameType | None) -> None:
    pass


def _ask_daemon(socket: str, signals: _Signals) -> tuple[Path, str] | None:
    """The daemon's root and who we are to it, from a ping; waits (as long as it takes)
    while the daemon is not up, e.g. when sessions start before ixd at boot."""
    waiting = False
    while not signals.stop:
        try:
            with Client.connect(socket, agent="ixc session") as client:
                value = client.request("ping", {})
            return Path(value["root"]), str(value["login"])
        except (DaemonUnavailable, ConnectionLost) as exc:
            if not waiting:
                log.info("waiting for ixd: %s", exc.message)
                waiting = True
            signals.wait(1.0)
    return None


def _setup_logging() -> None:
    """One line per event on stderr; stamped with the time on a terminal (under runit,
    svlogd stamps each line itself)."""
    if not logging.getLogger().handlers:
        stamp = "%(asctime)s " if sys.stderr.isatty() else ""
        logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                            format=stamp + "ix-session %(levelname)s %(message)s")


def _cli(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(words, socket=os.environ.get("IX_SOCKET") or DEFAULT_SOCKET)
    except IxError as exc:
        print(f"ix session: error: {exc.message} [{exc.code}]", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(_cli())
