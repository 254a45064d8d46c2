"""Finished builds' scratch folders, moved into the store's private trash when each build
settles (one rename, nobody's wait), deleted later off the builds' way; what is left at a
stop, recovery deletes."""

from __future__ import annotations

import logging
import math
import os
import subprocess
from pathlib import Path

import trio

from ixd.store.fstree import remove_tree

log = logging.getLogger("ixd.build.trash")

#: seconds finished builds' scratch folders gather in the trash before one `rm -rf` deletes
#: them, and how many at most
TRASH_GATHER = 0.5
TRASH_BATCH = 256


class Trash:
    """What to delete (`put`, on the loop) and the task that deletes it (`collect`)."""

    def __init__(self) -> None:
        self._put: trio.MemorySendChannel[Path]
        self._put, self._taken = trio.open_memory_channel[Path](math.inf)

    def put(self, path: Path) -> None:
        """Delete `path` (a trash entry of the daemon's own) soon."""
        self._put.send_nowait(path)

    async def collect(self) -> None:
        """Delete what is put in, for as long as the daemon runs.

        Root deletes what has gathered with one `rm -rf` process per batch: per entry,
        Python's rmtree would hold the interpreter lock the event loop needs, one worker
        thread call per build. A batch gathers for up to TRASH_GATHER seconds (builds end
        one at a time: without the wait, each one's scratch cost a process of its own).
        GNU rm never follows a link, and stays on one file system."""
        async for first in self._taken:
            batch = [first]
            with trio.move_on_after(TRASH_GATHER):
                while len(batch) < TRASH_BATCH:
                    try:
                        batch.append(await self._taken.receive())
                    except trio.EndOfChannel:
                        break
            if os.geteuid() == 0 and await _rm_rf(batch):
                continue
            for path in batch:  # unprivileged, or rm failed: read-only folders and all
                try:
                    await trio.to_thread.run_sync(remove_tree, path)
                except OSError:
                    log.exception("could not delete %s", path)


async def _rm_rf(paths: list[Path]) -> bool:
    """`rm -rf` the daemon's own `paths` in one process; False (logged) if it failed."""
    done = await trio.run_process(
        ["rm", "-rf", "--one-file-system", "--", *map(os.fspath, paths)],
        check=False, stdin=subprocess.DEVNULL, capture_stderr=True)
    if done.returncode != 0:
        log.warning("rm -rf of %d trash entries failed (%s); deleting them one by one",
                    len(paths), done.stderr.decode(errors="replace").strip()[:500])
    return done.returncode == 0
