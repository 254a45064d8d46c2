"""Builds handed to a Dask cluster (`ixd --dask tcp://HOST:PORT`).

A build node is submitted as `ixd.build.worker.build(node)` under the key `ix-build-<uid>`, with
`resources={"build": 1}` (each worker offers as many build slots as it says). Dask's keys
are global: two ixd asking for one uid at once get one computation. The worker builds,
pushes the entry to the binary cache and returns its index; ixd then substitutes it from
the cache like any other hit (`ixd.build.runner`), so a tree never travels through Dask.

The Dask client lives in its own thread and event loop; every call here from trio goes
through a worker thread. A cluster that cannot be reached (or drops the task) raises
ClusterUnavailable: the runner then builds locally unless `--dask-required`. Workers tell
which of them runs a build and stream its log through Dask's events, which land in
`on_started` / `on_log` (called from the client's thread).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ixd.model.nodes import Node
from ixd.wire.errors import ClusterUnavailable

log = logging.getLogger("ixd.build.cluster")

#: Dask event topics the workers send on: a build started on a worker, and its log lines
STARTED_TOPIC = "ix-build-started"
LOG_TOPIC = "ix-build-log"
#: after a failed connection, how long the cluster is left alone (builds go local)
DOWN_FOR = 30.0
#: a task the cluster lost (scheduler restarted) is submitted again this often
RESUBMITS = 2


@dataclass(frozen=True)
class ClusterSettings:
    address: str | None = None
    scheduler_file: Path | None = None
    required: bool = False
    #: TLS: the CA, and this ixd's client certificate and key (docs/security.md)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: seconds to wait for the scheduler when connecting
    connect_timeout: float = 10.0

    @property
    def enabled(self) -> bool:
        return self.address is not None or self.scheduler_file is not None

    @property
    def where(self) -> str:
        return self.address or f"scheduler file {self.scheduler_file}"


class Cluster:
    """ixd's connection to a Dask scheduler, made on first use and again after a loss."""

    def __init__(self, settings: ClusterSettings,
                 on_started: Callable[[str, str], None] = lambda uid, worker: None,
                 on_log: Callable[[str, list[str]], None] = lambda uid, lines: None) -> None:
        self.settings = settings
        self.on_started = on_started
        self.on_log = on_log
        self._client: Any = None
        self._lock = threading.Lock()
        self._down_until = 0.0
        #: what went wrong last (for `ixc status`), or None while the cluster answers
        self.trouble: str | None = None

    @property
    def required(self) -> bool:
        return self.settings.required

    def state(self) -> dict[str, Any]:
        """For `ixc status`."""
        if self.trouble is None:
            state = "connected" if self._client is not None else "not connected yet"
        else:
            state = (f"unreachable ({self.trouble}): "
                     + ("builds fail (--dask-required)" if self.required
                        else "building locally"))
        return {"address": self.settings.where, "state": state}

    async def build(self, node: Node) -> dict[str, Any]:
        """Submit `node` and wait for the worker's answer (see `ixd.build.worker.build`).
        ClusterUnavailable if the cluster cannot take it. Cancelling releases our interest
        (the build goes on if another ixd waits for it too)."""
        for attempt in range(RESUBMITS + 1):
            client = await trio.to_thread.run_sync(self._connected)
            future = await trio.to_thread.run_sync(self._submit, client, node)
            try:
                return await trio.to_thread.run_sync(self._result, future,
                                                     abandon_on_cancel=True)
            except ClusterUnavailable as exc:
                log.warning("cluster %s lost %s (%s); %s", self.settings.where, node.uid, exc,
                            "submitting it again" if attempt < RESUBMITS else "giving up")
                await trio.to_thread.run_sync(self._drop, client)
            finally:
                future.release()
        raise ClusterUnavailable(f"the cluster {self.settings.where} lost {node.name} "
                                 f"({node.uid}) {RESUBMITS + 1} times")

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- in worker threads (blocking) --------------------------------------------------

    def _connected(self) -> Any:
        with self._lock:
            if self._client is not None:
                return self._client
            if time.monotonic() < self._down_until:
                raise ClusterUnavailable(f"the cluster {self.settings.where} is unreachable "
                                         f"({self.trouble}); trying again in a while")
            try:
                self._client = self._connect()
            except Exception as exc:  # OSError, TimeoutError, distributed's own errors
                self.trouble = f"{type(exc).__name__}: {exc}"
                self._down_until = time.monotonic() + DOWN_FOR
                log.warning("cluster %s unreachable: %s", self.settings.where, self.trouble)
                raise ClusterUnavailable(f"the cluster {self.settings.where} is unreachable: "
                                         f"{self.trouble}") from exc
            self.trouble = None
            log.info("cluster %s connected", self.settings.where)
            return self._client

    def _connect(self) -> Any:
        # here: a daemon without --dask runs without distributed (untyped: Any)
        distributed: Any = importlib.import_module("distributed")
        security = None
        if self.settings.tls_ca is not None:
            tls: Any = importlib.import_module("distributed.security")
            security = tls.Security(tls_ca_file=str(self.settings.tls_ca),
                                    tls_client_cert=str(self.settings.tls_cert),
                                    tls_client_key=str(self.settings.tls_key),
                                    require_encryption=True)
        scheduler_file = self.settings.scheduler_file
        client = distributed.Client(
            self.settings.address, scheduler_file=str(scheduler_file) if scheduler_file else None,
            timeout=self.settings.connect_timeout, set_as_default=False, security=security)
        client.subscribe_topic(STARTED_TOPIC, self._started_event)
        client.subscribe_topic(LOG_TOPIC, self._log_event)
        return client

    def _drop(self, client: Any) -> None:
        with self._lock:
            if self._client is client:
                self._client = None
        try:
            client.close(timeout=2)
        except Exception:  # already broken: nothing to close
            log.debug("closing a broken Dask client", exc_info=True)

    @staticmethod
    def _submit(client: Any, node: Node) -> Any:
        from ixd.build import worker  # (the worker's module builds with a runner, which uses us)

        try:
            return client.submit(worker.build, node.to_json(), key=f"ix-build-{node.uid}",
                                 resources={"build": 1}, pure=False)
        except Exception as exc:
            raise ClusterUnavailable(f"cannot submit {node.uid}: {exc}") from exc

    @staticmethod
    def _result(future: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = future.result()
        except Exception as exc:  # the scheduler went away, the task was lost or cancelled
            raise ClusterUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return result

    def _started_event(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        self.on_started(str(message.get("uid")), str(message.get("worker")))

    def _log_event(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        lines = message.get("lines")
        if isinstance(lines, (list, tuple)):  # (Dask may send a list as a tuple)
            self.on_log(str(message.get("uid")), [str(line) for line in lines])
