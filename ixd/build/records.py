"""What the runners write: a node's row in the builds table (started, then ended with its
state and error), and its store entry registered valid, through one write queue.

Each row is queued when the work starts (nothing of the work waits for it) and ended when
it does; an entry is valid once its registration is committed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import trio

from ixd.build.valid import ValidSet
from ixd.model.layout import Layout
from ixd.model.nodes import Node
from ixd.store.db import BuildDatabase
from ixd.store.dbwriter import PendingWrite, WriteQueue
from ixd.store.treehash import tree_hash
from ixd.wire.errors import (
    ClusterRefused,
    ClusterUnavailable,
    DaemonFault,
    InternalError,
    IxError,
    NoSpace,
)

log = logging.getLogger("ixd.build.runner")

#: a builds-table row as its work knows it: written, or about to be
Row = PendingWrite[int]


class BuildRecords:
    """The builds table and the valid set, as the runners change them."""

    def __init__(self, layout: Layout, db: BuildDatabase, valid: ValidSet) -> None:
        self.layout = layout
        self.db = db
        self.valid = valid
        #: every write of the runners goes through here: one thread, batched commits
        self.writes = WriteQueue(db)
        #: the latest successful build time of each package, for ETAs
        self.durations: dict[str, float] = db.last_durations()

    def started(self, node: Node, requested_by: int) -> Row:
        """Queue the builds-table row of `node`'s build; its id once written."""
        log_path = str(self.layout.log_path(node.uid))
        flags = node.meta.get("flags", {})
        return self.writes.submit(lambda: self.db.build_started(
            node.uid, node.name, flags, log_path, requested_by))

    @contextlib.asynccontextmanager
    async def recording(self, row: Callable[[], Row], node: Node, what: str
                        ) -> AsyncIterator[None]:
        """The builds-table row `row()` (written when the work started) ends failed (with
        the error), cancelled, or for a remote attempt lost or refused, if the work it wraps
        does; success is the work's own to record."""
        try:
            yield
        except BaseException as exc:  # recorded, then raised on as it is
            state, error = _ending(exc)
            with trio.CancelScope(shield=True):
                await self.ended(row(), state, error)
            # why, in the daemon's log too (a full disk or the daemon's own files are the
            # admin's to fix: an error)
            log.log(logging.ERROR if isinstance(error, (NoSpace, DaemonFault)) else logging.INFO,
                    "%s finished: %s uid=%s result=%s%s", what, node.name, node.uid, state,
                    f" [{error.code}] {error.message.splitlines()[0]}" if error else "")
            raise

    async def ended(self, row: Row, state: str, error: IxError | None) -> None:
        """End `row` in `state` (with `error`'s message)."""
        try:
            build_id = await row.result()
        except IxError as exc:  # the row was never written: there is nothing to end
            log.warning("%s: the build's row could not be written: %s", state, exc)
            return
        message = error.message if error else ""
        await self.writes.write(lambda: self.db.build_ended(build_id, state, message))

    def end_when_written(self, row: Row, state: str, why: str) -> bool:
        """End `row` now if its id is known (False: not yet)."""
        build_id = row.value_if_done()
        if build_id is None:
            return False
        self.writes.submit(functools.partial(self.db.build_ended, build_id, state, why))
        return True

    async def valid_built(self, node: Node, row: Row, content_hash: str, state: str) -> None:
        """Register the node's entry (in place in the store) and end its build's row, in one
        transaction; valid once committed."""
        build_id = await row.result()
        inputs = _store_inputs(node, self.layout)

        def register_and_end() -> None:
            self.db.register_valid(node.uid, node.outputs[0], node.name, node.entry_kind,
                                   content_hash, inputs)
            self.db.build_ended(build_id, state, "")

        await self.writes.write(register_and_end)
        self.valid.add(node.uid)

    async def register(self, node: Node) -> None:
        """Register an entry made without a build (a realm without fix-ups) valid."""
        out = node.outputs[0]
        content = await trio.to_thread.run_sync(tree_hash, Path(out))
        await self.writes.write(
            lambda: self.db.register_valid(node.uid, out, node.name, node.entry_kind, content))
        self.valid.add(node.uid)


def _store_inputs(node: Node, layout: Layout) -> list[str]:
    """The store dirs `node` reads (not its sources): what the collector keeps with it
    under `--keep-build-inputs`."""
    store = str(layout.store)
    return [p for p in node.inputs if os.path.dirname(p) == store]


def _ending(exc: BaseException) -> tuple[str, IxError | None]:
    """The state a build's row ends in when its work raised `exc`, and the error it records."""
    if isinstance(exc, ClusterRefused):
        return "refused", exc
    if isinstance(exc, ClusterUnavailable):  # the cluster, a worker or the scheduler went away
        return "lost", exc
    if isinstance(exc, IxError):
        return "failed", exc
    if isinstance(exc, Exception):  # a bug: the scheduler logs it, says E_INTERNAL
        return "failed", InternalError(f"internal error: {exc!r}")
    return "cancelled", None
