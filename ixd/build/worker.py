"""`ix-worker`: a Dask worker for ix builds, and `build`, the one function it runs.

    ix-worker tls://SCHEDULER:8786 --tls-ca CA --tls-cert CERT --tls-key KEY
              [--socket /ix/var/ixd.sock] [--slots N] [--name NAME] [-- DASK-WORKER-ARGS]
    ix-worker tcp://SCHEDULER:8786 --insecure-cluster ...     (no TLS: see docs/security.md)

Dask runs whatever function a client it accepts submits, so the process running Dask's
tasks must be worth nothing to an attacker: ix-worker refuses to run as root, and is run as
an unprivileged account of its own (`ixworker`, made by runit/worker-account.sh) that holds
no key and cannot write the store. It starts `dask worker` offering N build slots
(`--resources build=N`), and starts it again, after a bounded back-off, whenever it ends:
Dask's worker exits when its scheduler goes away, and comes back here when it returns.

ixd (`ixd.build.cluster`) submits `build(node)` under the key `ix-build-<uid>`. `build` hands
the node to this machine's own ixd over its socket (op `cluster-build`, which only the
account given to that ixd as `--cluster-worker-account` may call). That ixd checks the
node, substitutes its inputs from its trusted caches, fetches its sources, builds it in its
sandbox as a build user, canonicalises it, signs it with its own key (root's, out of this
account's reach) and pushes it to the cache; `build` returns its index (uid, content hash,
path, worker) through Dask, never the tree, and streams its log lines through Dask's
events. A build that failed on its own merits returns its error (Dask must not retry it);
anything else that kept this machine from building it returns E_CLUSTER_REFUSED (the
submitter then builds it itself), and a lost connection to the local ixd E_CLUSTER_LOST
(it is submitted again).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ixd import __version__
from ixd.build.cluster_terms import LOG_TOPIC, STARTED_TOPIC, check_transport
from ixd.wire.errors import (
    BuildCancelled,
    BuildFailed,
    ClusterLost,
    ClusterRefused,
    ConnectionLost,
    DependencyFailed,
    IxError,
)
from ixd.wire.frames import Event
from ixd.wire.transport import DEFAULT_SOCKET, Client

log = logging.getLogger("ix-worker")

#: the environment variable naming the socket of this machine's ixd (set by `main`)
SOCKET_ENV = "IX_WORKER_SOCKET"
#: log lines are sent in batches at most this often (seconds) or this long
LOG_INTERVAL = 0.25
LOG_BATCH = 200
#: `dask worker` is started again this long after it ended (doubling up to RESTART_MAX;
#: back to RESTART_FIRST once one ran for STEADY seconds)
RESTART_FIRST = 1.0
RESTART_MAX = 30.0
STEADY = 60.0
AGENT = f"ix-worker {__version__}"


def build(node_json: Any) -> dict[str, Any]:
    """Have this machine's ixd build `node_json` (a plan node) and push it: `{"uid",
    "content_hash", "path", "worker"}`, or `{"uid", "error", "message", "worker"}`."""
    where = _worker_address()
    data = node_json if isinstance(node_json, dict) else {}
    uid, name = str(data.get("uid", "?"))[:64], str(data.get("name", "?"))[:200]
    socket = os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    _event(STARTED_TOPIC, {"uid": uid, "worker": where})
    log.info("building %s (%s) through %s", name, uid, socket)
    try:
        with _LogSender(uid) as sender, Client.connect(socket, agent=AGENT) as client:
            reply = client.request("cluster-build", {"node": node_json},
                                   on_event=lambda event: _forward(event, uid, sender))
    except IxError as exc:
        answer = _failure(exc)
        log.warning("%s (%s) not built here: %s [%s]", name, uid, answer["message"],
                    answer["error"])
        return {**answer, "uid": uid, "worker": where}
    if not isinstance(reply, dict) or not isinstance(reply.get("content_hash"), str):
        return {"uid": uid, "worker": where, "error": ClusterRefused.code,
                "message": f"this machine's ixd answered {str(reply)[:200]!r}, not an index"}
    log.info("built %s (%s)", name, uid)
    return {"uid": uid, "content_hash": reply["content_hash"], "path": reply.get("path"),
            "worker": where}


def _failure(exc: IxError) -> dict[str, str]:
    """What the submitter hears of `exc`: the build's own failure as it is (it would fail
    anywhere), a lost connection to this machine's ixd as E_CLUSTER_LOST (submit it again),
    anything else as E_CLUSTER_REFUSED (build it there)."""
    if isinstance(exc, BuildFailed) and not isinstance(exc, (DependencyFailed, BuildCancelled)):
        return {"error": exc.code, "message": exc.message}
    if isinstance(exc, ConnectionLost):
        return {"error": ClusterLost.code,
                "message": f"this machine's ixd went away mid-build: {exc.message}"}
    if isinstance(exc, ClusterRefused):
        return {"error": exc.code, "message": exc.message}
    return {"error": ClusterRefused.code, "message": f"{exc.message} [{exc.code}]"}


def _forward(event: Event, uid: str, sender: _LogSender) -> None:
    line = event.data.get("line")
    if event.kind == "log" and event.data.get("uid") == uid and isinstance(line, str):
        sender.line(line)


# --- talking back through Dask -----------------------------------------------------------


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):  # not in a Dask worker (tests call build directly)
        return f"pid {os.getpid()}"


def _event(topic: str, message: dict[str, Any]) -> None:
    try:
        from distributed import get_worker

        get_worker().log_event(topic, message)
    except (ImportError, ValueError):
        pass


class _LogSender:
    """The build's log lines to ixd, in batches through Dask's events (best effort: the
    log is also kept on the worker's machine)."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self._lines: list[str] = []
        self._sent = time.monotonic()
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self._lines.append(text)
            if len(self._lines) < LOG_BATCH and time.monotonic() - self._sent < LOG_INTERVAL:
                return
            lines, self._lines = self._lines, []
            self._sent = time.monotonic()
        _event(LOG_TOPIC, {"uid": self.uid, "lines": lines})

    def __enter__(self) -> _LogSender:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        if lines:
            _event(LOG_TOPIC, {"uid": self.uid, "lines": lines})


# --- the program -------------------------------------------------------------------------


def dask_worker_argv(scheduler: str, *, slots: int, tls: tuple[Path, Path, Path] | None,
                     name: str | None, extra: list[str]) -> list[str]:
    """The `dask worker` command ix-worker runs (and runs again)."""
    argv = [sys.executable, "-m", "distributed.cli.dask_worker", scheduler,
            "--resources", f"build={slots}", "--nthreads", str(slots)]
    if tls is not None:
        argv += ["--tls-ca-file", str(tls[0]), "--tls-cert", str(tls[1]),
                 "--tls-key", str(tls[2])]
    if name:
        argv += ["--name", name]
    return argv + extra


class Supervisor:
    """Runs `dask worker` until stopped, again after a bounded back-off whenever it ends."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env
        self.stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None

    def stop(self, signum: int = signal.SIGTERM, _frame: object = None) -> None:
        self.stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        delay = RESTART_FIRST
        while not self.stopping.is_set():
            began = time.monotonic()
            self._child = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL)
            if self.stopping.is_set():  # stopped while it started
                self._child.send_signal(signal.SIGTERM)
            status = self._child.wait()
            if self.stopping.is_set():
                break
            ran = time.monotonic() - began
            if ran >= STEADY:
                delay = RESTART_FIRST
            log.warning("dask worker exited (status %d) after %.0f s (its scheduler went away?); "
                        "starting it again in %.0f s", status, ran, delay)
            self.stopping.wait(delay)
            delay = min(delay * 2, RESTART_MAX)
        return 0


def main(argv: list[str] | None = None) -> int:
    """`ix-worker`: a `dask worker` for ix builds (see the module's docstring)."""
    import argparse

    words = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in words:
        at = words.index("--")
        words, extra = words[:at], words[at + 1:]
    parser = argparse.ArgumentParser(prog="ix-worker",
                                     description="a Dask worker for ix builds (README)")
    parser.add_argument("scheduler", help="the Dask scheduler, tls://HOST:PORT (tcp://... with "
                                          "--insecure-cluster)")
    parser.add_argument("--socket", type=Path, default=Path(DEFAULT_SOCKET),
                        help=f"this machine's ixd, started with --cluster-worker-account "
                             f"naming this account (default {DEFAULT_SOCKET})")
    parser.add_argument("--slots", type=int, default=1, help="builds at once (default 1)")
    parser.add_argument("--name", help="the worker's name in the cluster")
    parser.add_argument("--tls-ca", type=Path, help="the cluster's CA certificate")
    parser.add_argument("--tls-cert", type=Path, help="this worker's certificate")
    parser.add_argument("--tls-key", type=Path, help="its private key")
    parser.add_argument("--insecure-cluster", action="store_true",
                        help="plain TCP: whoever reaches the scheduler runs code here, as "
                             "this account")
    args = parser.parse_args(words)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s ix-worker %(levelname)s %(message)s")
    tls_given = [args.tls_ca, args.tls_cert, args.tls_key]
    try:
        if os.geteuid() == 0:
            raise IxError("ix-worker runs whatever the cluster submits: it refuses to run as "
                          "root; run it as an unprivileged account of its own (e.g. ixworker, "
                          "`sh runit/worker-account.sh`)")
        if any(tls_given) and not all(tls_given):
            raise IxError("--tls-ca, --tls-cert and --tls-key go together")
        check_transport(args.scheduler, tls=all(tls_given), insecure=args.insecure_cluster,
                        who="ix-worker")
        if args.slots < 1:
            raise IxError(f"--slots must be at least 1, not {args.slots}")
    except IxError as exc:
        print(f"ix-worker: {exc.message}", file=sys.stderr)
        return 2
    if args.insecure_cluster:
        for _ in range(3):  # loud, at every start
            log.warning("--insecure-cluster: the scheduler %s is reached over plain TCP: "
                        "whoever can reach it runs code here as uid %d", args.scheduler,
                        os.geteuid())
    env = {**os.environ, SOCKET_ENV: str(args.socket.absolute())}
    if all(tls_given):
        env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
    tls = (args.tls_ca, args.tls_cert, args.tls_key) if all(tls_given) else None
    supervisor = Supervisor(dask_worker_argv(args.scheduler, slots=args.slots, tls=tls,
                                             name=args.name, extra=extra), env)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    log.info("ix-worker %s: %d build slots on %s for the ixd at %s", __version__, args.slots,
             args.scheduler, args.socket)
    return supervisor.run()


if __name__ == "__main__":
    raise SystemExit(main())
