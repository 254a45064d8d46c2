"""Builds handed to a Dask cluster (`ixd --dask tls://HOST:PORT`): ixd's side.

A build node is submitted as `ixd.build.worker.build(node)` under the key `ix-build-<uid>`,
with `resources={"build": 1}` (each worker offers as many build slots as it says). Dask's keys
are global: two ixd asking for one uid at once get one computation. The worker hands the node
to its own machine's ixd, which builds, pushes the entry to the binary cache and answers with
its index; ixd then substitutes it from the cache like any other hit (`ixd.build.runner`), so
a tree never travels through Dask.

Dask runs whatever function a client it accepts submits, so acceptance is the gate: mutual
TLS with certificates of the cluster's own CA (`ixd cluster-certs`), encryption required. A
plain `tcp://` scheduler is refused unless the administrator says `--insecure-cluster`
(`check_transport`; logged at every start).

`Cluster.watch` owns the connection: it connects at start, notices within a second when the
scheduler goes away (Dask's client stops "running"), drops that client and connects a fresh
one (with its event subscriptions) as soon as the scheduler answers again; `state()` says
which (connected, reconnecting, unreachable since when) for `ixc status`. A build submitted
while the cluster is unreachable is ClusterUnavailable at once (built here unless
`--dask-required`); one whose scheduler or worker went away under it is ClusterLost (the
runner records the attempt as `lost` and tries again). The Dask client lives in its own
thread and event loop: every blocking call here goes through a worker thread. Workers tell
which of them runs a build and stream its log through Dask's events, which land in
`on_started` / `on_log` (called from the client's thread).
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ixd.build.cluster_terms import LOG_TOPIC, STARTED_TOPIC, check_transport
from ixd.model.nodes import Node
from ixd.wire.errors import ClusterLost, ClusterRefused, ClusterUnavailable, IxError

log = logging.getLogger("ixd.build.cluster")

#: how often the connection is looked at (seconds): `ixc status` is true this soon after
WATCH_INTERVAL = 1.0
#: after a failed connection attempt, the next one waits this long (doubling, bounded)
RETRY_FIRST = 1.0
RETRY_MAX = 5.0
#: how long a build waits for a connection being made before it goes elsewhere
SETTLE_WAIT = 30.0


@dataclass(frozen=True)
class ClusterSettings:
    address: str | None = None
    scheduler_file: Path | None = None
    required: bool = False
    #: TLS: the cluster's CA, and this ixd's client certificate and key (docs/security.md)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: plain TCP allowed: whoever reaches the scheduler runs code on the workers
    insecure: bool = False
    #: seconds to wait for the scheduler when connecting
    connect_timeout: float = 10.0

    @property
    def enabled(self) -> bool:
        return self.address is not None or self.scheduler_file is not None

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None

    @property
    def where(self) -> str:
        return self.address or f"scheduler file {self.scheduler_file}"

    def check(self) -> None:
        """IxError unless TLS is complete, or the cluster is declared insecure."""
        given = [p for p in (self.tls_ca, self.tls_cert, self.tls_key) if p is not None]
        if given and len(given) < 3:
            raise IxError("--tls-ca, --tls-cert and --tls-key go together: the cluster's CA, "
                          "and this ixd's certificate and key")
        for path in given:
            if not path.is_file():
                raise IxError(f"{path}: no such file (make the cluster's certificates with "
                              f"`ixd cluster-certs DIR`)")
        check_transport(self.address, tls=self.tls, insecure=self.insecure, who="ixd --dask")


def security(tls_ca: Path, cert: Path, key: Path) -> Any:
    """Dask's `Security` for mutual TLS with encryption required (untyped: Dask's)."""
    module: Any = importlib.import_module("distributed.security")
    return module.Security(tls_ca_file=str(tls_ca), tls_client_cert=str(cert),
                           tls_client_key=str(key), require_encryption=True)


#: exceptions of a Dask future that mean the scheduler or the worker went away, not that
#: the task failed, besides cancellation (the client lost its scheduler), OSError and
#: TimeoutError (matched by name: distributed is imported lazily)
_LOST = frozenset({"KilledWorker", "CommClosedError", "StreamClosedError"})


class Cluster:
    """ixd's connection to a Dask scheduler, kept by `watch`."""

    def __init__(self, settings: ClusterSettings,
                 on_started: Callable[[str, str], None] = lambda uid, worker: None,
                 on_log: Callable[[str, list[str]], None] = lambda uid, lines: None) -> None:
        self.settings = settings
        self.on_started = on_started
        self.on_log = on_log
        self._client: Any = None
        #: "connecting" (first attempt), "connected", "reconnecting", "unreachable"
        self._state = "connecting"
        self._since = time.time()
        #: what went wrong last, while not connected
        self.trouble: str | None = None
        #: set while the state is settled (connected or unreachable), for waiting builds
        self._settled = trio.Event()

    @property
    def required(self) -> bool:
        return self.settings.required

    def state(self) -> dict[str, Any]:
        """For `ixc status`: the address, the state in words, and since when."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._since))
        words = {"connected": f"connected since {since}",
                 "connecting": "connecting",
                 "reconnecting": f"reconnecting since {since} (the scheduler went away)"}
        text = words.get(self._state)
        if text is None:
            text = (f"unreachable since {since} ({self.trouble}): "
                    + ("builds fail (--dask-required)" if self.required
                       else "building locally"))
        return {"address": self.settings.where, "state": text, "status": self._state,
                "since": self._since}

    def _set(self, state: str, trouble: str | None = None) -> None:
        if state != self._state:
            self._since = time.time()
            level = logging.INFO if state == "connected" else logging.WARNING
            log.log(level, "cluster %s: %s%s", self.settings.where, state,
                    f" ({trouble})" if trouble else "")
        self._state = state
        self.trouble = trouble
        if state in ("connected", "unreachable"):
            self._settled.set()
        elif self._settled.is_set():
            self._settled = trio.Event()

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Keep the connection: made at start, made again whenever it is lost (forever,
        a retry every RETRY_FIRST..RETRY_MAX seconds); closed when cancelled."""
        task_status.started()
        retry = RETRY_FIRST
        try:
            while True:
                client = self._client
                if client is not None and client.status == "running":
                    self._set("connected")
                    retry = RETRY_FIRST
                    await trio.sleep(WATCH_INTERVAL)
                    continue
                if client is not None:  # the scheduler went away: a fresh client, later
                    self._client = None
                    self._set("reconnecting", "the connection to the scheduler was lost")
                    await trio.to_thread.run_sync(_close, client, abandon_on_cancel=True)
                try:
                    self._client = await trio.to_thread.run_sync(self._connect,
                                                                 abandon_on_cancel=True)
                except Exception as exc:  # OSError, TimeoutError, distributed's own errors
                    self._set("unreachable", f"{type(exc).__name__}: {exc}")
                    await trio.sleep(retry)
                    retry = min(retry * 2, RETRY_MAX)
                else:
                    self._set("connected")
        finally:
            client, self._client = self._client, None
            if client is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_close, client)

    async def ready(self) -> bool:
        """Whether builds can be submitted now: connected (waiting a while for a connection
        being made, at start or after the scheduler went away)."""
        if not self._settled.is_set():
            with trio.move_on_after(min(SETTLE_WAIT, self.settings.connect_timeout * 2)):
                await self._settled.wait()
        return self._state == "connected" and self._client is not None

    def unavailable(self) -> ClusterUnavailable:
        """The error of a build the cluster cannot take now."""
        return ClusterUnavailable(f"the cluster {self.settings.where} is {self._state} "
                                  f"({self.trouble or 'not connected'})")

    async def build(self, node: Node) -> dict[str, Any]:
        """Submit `node` and wait for the worker's answer (see `ixd.build.worker.build`):
        ClusterUnavailable if the cluster cannot take it, ClusterLost if it went away with
        the build, ClusterRefused if the worker's task broke. Cancelling releases our
        interest (the build goes on if another ixd waits for it too)."""
        if not await self.ready():
            raise self.unavailable()
        client = self._client
        future = await trio.to_thread.run_sync(self._submit, client, node)
        try:
            return await trio.to_thread.run_sync(self._result, future, abandon_on_cancel=True)
        finally:
            future.release()

    # --- in worker threads (blocking) --------------------------------------------------

    def _connect(self) -> Any:
        # here: a daemon without --dask runs without distributed (untyped: Any)
        distributed: Any = importlib.import_module("distributed")
        settings = self.settings
        sec = None
        if settings.tls_ca is not None and settings.tls_cert and settings.tls_key:
            sec = security(settings.tls_ca, settings.tls_cert, settings.tls_key)
        scheduler_file = settings.scheduler_file
        client = distributed.Client(
            settings.address, scheduler_file=str(scheduler_file) if scheduler_file else None,
            timeout=settings.connect_timeout, set_as_default=False, security=sec)
        client.subscribe_topic(STARTED_TOPIC, self._started_event)
        client.subscribe_topic(LOG_TOPIC, self._log_event)
        return client

    @staticmethod
    def _submit(client: Any, node: Node) -> Any:
        from ixd.build import worker  # (the worker's module: only its function is sent)

        try:
            return client.submit(worker.build, node.to_json(), key=f"ix-build-{node.uid}",
                                 resources={"build": 1}, pure=False)
        except Exception as exc:
            raise ClusterLost(f"cannot submit {node.name} ({node.uid}): "
                              f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _result(future: Any) -> dict[str, Any]:
        try:
            result = future.result()
        except (concurrent.futures.CancelledError, OSError, TimeoutError) as exc:
            raise ClusterLost(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            if type(exc).__name__ in _LOST:  # the scheduler or the worker went away
                raise ClusterLost(f"{type(exc).__name__}: {exc}") from exc
            # the task itself broke on the worker (no ix there, a bug): not the build's fault
            raise ClusterRefused(f"the worker's task raised {type(exc).__name__}: "
                                 f"{str(exc)[:500]}") from exc
        if not isinstance(result, dict):
            raise ClusterRefused(f"the worker answered {type(result).__name__}, not an "
                                 f"index")
        return result

    def _started_event(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        self.on_started(str(message.get("uid")), str(message.get("worker")))

    def _log_event(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        lines = message.get("lines")
        if isinstance(lines, (list, tuple)):  # (Dask may send a list as a tuple)
            self.on_log(str(message.get("uid")), [str(line) for line in lines])


def _close(client: Any) -> None:
    try:
        client.close(timeout=2)
    except Exception:  # already broken: nothing to close
        log.debug("closing a Dask client", exc_info=True)
