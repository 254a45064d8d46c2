"""What ixd (`ixd.build.cluster`) and its Dask workers (`ixd.build.worker`) agree on: the
event topics a worker reports on, and the rule for reaching a cluster without TLS. Apart,
so that neither module imports the other for it (the daemon sends the worker's function by
reference, the worker imports nothing of the daemon's side)."""

from __future__ import annotations

from ixd.wire.errors import IxError

#: Dask event topics the workers send on: a build started on a worker, and its log lines
STARTED_TOPIC = "ix-build-started"
LOG_TOPIC = "ix-build-log"


def check_transport(address: str | None, *, tls: bool, insecure: bool, who: str) -> None:
    """Refuse (IxError, naming the option to give) a cluster reached without TLS unless
    `insecure`, and TLS options beside --insecure-cluster or a `tcp://` address."""
    if tls and insecure:
        raise IxError(f"{who}: --insecure-cluster and --tls-* contradict each other; give "
                      f"one")
    if tls and address is not None and not address.startswith("tls://"):
        raise IxError(f"{who}: with TLS the scheduler's address is tls://HOST:PORT, not "
                      f"{address}")
    if not tls and not insecure:
        raise IxError(
            f"{who}: refusing a Dask cluster without TLS ({address or 'scheduler file'}): "
            f"whoever can reach its scheduler runs code on its workers. Give --tls-ca, "
            f"--tls-cert and --tls-key (`ixd cluster-certs DIR` makes them), or "
            f"--insecure-cluster on a network only trusted hosts reach (docs/security.md)")
