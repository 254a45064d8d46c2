"""`cluster-build`: a build this machine does for the Dask cluster, asked for by its
`ix-worker` (`ixd.build.worker.build`) over this daemon's socket.

ix-worker runs Dask's tasks as an unprivileged account of its own and holds no key: it hands
each build node here. Only that account may ask (`ixd --cluster-worker-account NAME`); the
node is checked (`ixd.build.cluster_node`: a recipe build of this store whose uid its content
makes), its inputs substituted from this daemon's trusted caches and its sources fetched by
this daemon (its mirrors, then the source's URL, sha256-checked), and it is built like any
build here (build users, the sandbox, canonicalisation, limits, the fair queue with the
worker account as its user), then signed with this daemon's key and pushed; the answer is
its index. Whatever keeps this machine from building it is ClusterRefused, logged here with
the node, so that the submitter builds it itself.
"""

from __future__ import annotations

import logging
import os
import pwd
from typing import TYPE_CHECKING, Any

import trio

from ixd.build.runner import StoreRunner
from ixd.build.scheduler import Scheduler
from ixd.daemon.emit import Emit
from ixd.daemon.identity import Caller
from ixd.model.layout import Layout
from ixd.store.buildusers import members_of
from ixd.store.db import BuildDatabase
from ixd.wire.errors import (
    BuildCancelled,
    BuildFailed,
    ClusterRefused,
    DependencyFailed,
    IxError,
    PermissionDenied,
)
from ixd.wire.ops import NodeArgs

if TYPE_CHECKING:  # a daemon without a cache never loads the cache's modules
    from ixd.cache.substitute import Pusher, Substituter

log = logging.getLogger("ixd")


def worker_account_uid(name: str, build_users: str | None) -> int:
    """The uid of the cluster worker account `name`; IxError if it is unfit: missing, root,
    the daemon's own, or one of the build users (whose builds' `kill -9 -1` would reach it,
    and whose uid a build runs as)."""
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        raise IxError(f"--cluster-worker-account {name}: no such account; make one without a "
                      f"login (`sh runit/worker-account.sh {name}`)") from None
    if uid == 0 or uid == os.geteuid():
        raise IxError(f"--cluster-worker-account {name}: uid {uid} is root or the daemon's "
                      f"own: ix-worker must run as an unprivileged account of its own")
    if build_users is not None and uid in {u.uid for u in members_of(build_users)}:
        raise IxError(f"--cluster-worker-account {name}: it is a build user of "
                      f"{build_users}; give ix-worker an account of its own")
    return uid


class ClusterOps:
    def __init__(self, layout: Layout, db: BuildDatabase, scheduler: Scheduler,
                 runner: StoreRunner, substituter: Substituter | None,
                 pusher: Pusher | None, account: str | None, account_uid: int | None
                 ) -> None:
        if account is not None and (substituter is None or pusher is None):
            raise IxError("--cluster-worker-account needs --cache with --trusted-key (inputs "
                          "come from there) and --push with --signing-key (results go there)")
        self.layout = layout
        self.db = db
        self.scheduler = scheduler
        self.runner = runner
        self.substituter = substituter
        self.pusher = pusher
        self.account = account
        self.account_uid = account_uid

    async def op_cluster_build(self, args: NodeArgs, caller: Caller, emit: Emit) -> Any:
        """Build `node` here for the cluster, push it, answer with its index."""
        if self.account_uid is None or self.pusher is None or self.substituter is None:
            raise PermissionDenied("this ixd builds for no cluster (it was started without "
                                   "--cluster-worker-account)")
        if caller.uid != self.account_uid:
            raise PermissionDenied(f"{caller.login} (uid {caller.uid}) may not build for the "
                                   f"cluster: only its worker account {self.account} may")
        # loaded by the first cluster build: a daemon that builds for no cluster never needs it
        from ixd.build.cluster_node import check_cluster_node, inputs_plan

        try:
            node = check_cluster_node(args.node, self.layout)
        except ClusterRefused as exc:
            log.warning("cluster build refused: %s", exc.message)
            raise
        if self.runner.remote_worker(node.uid) is not None:
            # this ixd waits for the cluster to build it: waiting here too would wait forever
            raise self._refused(node.name, node.uid, "this machine's ixd itself waits for the "
                                "cluster to build it; it builds it here instead")
        log.info("cluster build asked: %s uid=%s", node.name, node.uid)
        substituter, pusher = self.substituter, self.pusher
        try:
            plan = await trio.to_thread.run_sync(
                inputs_plan, node, self.layout, self.runner.is_valid_uid,
                # asked afresh: the submitter pushed them just now
                lambda uids: {u: h.entry for u, h in substituter.lookup_fresh(uids).items()})
            with self.runner.building_here(node.uid):
                await self.scheduler.run(plan, emit, caller.uid)
            await trio.to_thread.run_sync(pusher.push, [node.uid])
        except BuildFailed as exc:
            if isinstance(exc, (DependencyFailed, BuildCancelled)):
                raise self._refused(node.name, node.uid, f"{exc.message} [{exc.code}]") from exc
            log.info("cluster build failed: %s uid=%s: %s", node.name, node.uid, exc.message)
            raise  # the build's own failure: it would fail anywhere
        except ClusterRefused as exc:
            log.warning("cluster build refused: %s", exc.message)
            raise
        except IxError as exc:  # an input, a source, the push: not the build's fault
            raise self._refused(node.name, node.uid, f"{exc.message} [{exc.code}]") from exc
        entry = await trio.to_thread.run_sync(self.db.store_entry, node.uid)
        if entry is None:
            raise self._refused(node.name, node.uid, "built, but not registered here")
        log.info("cluster build done: %s uid=%s pushed to %s", node.name, node.uid,
                 pusher.cache.url)
        return {"uid": node.uid, "content_hash": entry["hash"], "path": entry["path"]}

    @staticmethod
    def _refused(name: str, uid: str, why: str) -> ClusterRefused:
        error = ClusterRefused(f"{name} ({uid}): {why}; refused")
        log.warning("cluster build refused: %s", error.message)
        return error
