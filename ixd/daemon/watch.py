"""Watch the recipe overlays with inotify and report changed files in batches.

`watch_tree(roots, on_change)` runs inside the trio loop, no thread: it waits for the inotify
descriptor to become readable (`trio.lowlevel.wait_readable`), reads and decodes the events
(`ixd.daemon.inotify`) and handles them itself. After the first event of a batch it
keeps collecting until `coalesce` seconds pass without a change (at most `max_wait` seconds
in all), so the 500 files a `git checkout` touches become one `on_change` call.

Reported paths are absolute and lie under the *resolved* roots, the way `RecipeTree` keys the
files a render read (`overlay.resolve() / name`); a path that is a symlink also brings its
target. A directory that appears (mkdir, moved in, `mkdir -p a/b/c` faster than we can watch)
is watched and reported with every file in it; a directory that disappears (deleted, moved
away) is reported with every file it held, from an index kept of the watched trees. Each
root's parent is watched too, so a root that is created later, removed, or replaced by a
rename is noticed; an inotify queue overflow rescans everything.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ixd.daemon import inotify
from ixd.daemon.inotify import Event, Inotify

log = logging.getLogger("ixd.daemon.watch")

#: the events that can change what a recipe renders
EVENTS: int = (
    inotify.IN_CLOSE_WRITE
    | inotify.IN_MOVED_TO
    | inotify.IN_MOVED_FROM
    | inotify.IN_CREATE
    | inotify.IN_DELETE
    | inotify.IN_ATTRIB
    | inotify.IN_DELETE_SELF
)
#: every watch is a directory watch, never through a symlink; one mask for all watches, so a
#: directory watched for two reasons (a root's parent inside another root) keeps its events
_MASK: int = EVENTS | inotify.IN_ONLYDIR | inotify.IN_DONT_FOLLOW
_APPEARED: int = inotify.IN_CREATE | inotify.IN_MOVED_TO
_GONE: int = inotify.IN_DELETE | inotify.IN_MOVED_FROM
_SELF_GONE: int = inotify.IN_DELETE_SELF | inotify.IN_UNMOUNT


@dataclass(slots=True)
class _Dir:
    """A watched folder of a tree: its watch and the names in it, as last seen, each with
    whether it is a folder (one dict, empty for most folders of a tree: an empty dict is
    small, an empty set is not, and a tree has thousands of folders)."""

    wd: int
    names: dict[str, bool] = field(default_factory=dict)

    def subdirs(self) -> list[str]:
        return [name for name, folder in self.names.items() if folder]

    def files(self) -> list[str]:
        return [name for name, folder in self.names.items() if not folder]


class _Watcher:
    """Watches and the file index of the roots; turns inotify events into changed paths."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = [os.path.normpath(str(Path(r).resolve())) for r in roots]
        self._prefixes = tuple(r.rstrip("/") + "/" for r in self.roots)
        self.inotify = Inotify()
        self.fd: int = self.inotify.fd
        #: each live watch's folder (events of a watch removed meanwhile are dropped)
        self.watched: dict[int, str] = {}
        self.dirs: dict[str, _Dir] = {}
        #: folders watched only to see a root appear or be replaced (a root's ancestors)
        self.anchors: dict[str, int] = {}
        #: (st_dev, st_ino) of each root folder being watched, to notice a replaced root
        self.root_ids: dict[str, tuple[int, int]] = {}
        self.pending: set[str] = set()
        #: events under the roots handled so far
        self.changes = 0
        self._overflow = False
        self._warned_limit = False

    # --- the loop's side -----------------------------------------------------------------

    def start(self) -> None:
        for root in self.roots:
            self._check_root(root)
        self.pending.clear()  # what is there at the start is no change

    def read(self) -> None:
        """Read every event waiting on the descriptor and handle it."""
        for event in self.inotify.read():
            self._on_event(event)
        if self._overflow:
            self._overflow = False
            log.warning("inotify queue overflowed: rescanning %s", ", ".join(self.roots))
            for root in self.roots:
                if root in self.dirs:
                    self._drop_tree(root, unwatch=False)
        for root in self.roots:
            self._check_root(root)

    def take(self) -> set[Path]:
        changed: set[Path] = set()
        for path in self.pending:
            changed.add(Path(path))
            if os.path.islink(path):
                changed.add(Path(path).resolve())
        self.pending = set()
        return changed

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.fd)
        self.inotify.close()  # which drops every watch

    # --- events --------------------------------------------------------------------------

    def _relevant(self, path: str) -> bool:
        return path in self.roots or path.startswith(self._prefixes)

    def _on_event(self, event: Event) -> None:
        mask = event.mask
        if mask & inotify.IN_Q_OVERFLOW:
            self._overflow = True
            self.changes += 1
            return
        folder = self.watched.get(event.wd)
        if folder is None:
            return  # left in the queue for a watch removed since
        if mask & inotify.IN_IGNORED:
            del self.watched[event.wd]  # the kernel dropped the watch
            return
        path = os.path.join(folder, event.name) if event.name else folder
        if mask & _SELF_GONE:
            # a watched folder itself is gone: forget it (the kernel dropped its watch), unless
            # its path is already watched again (replaced by a rename, seen first)
            if self.anchors.get(path) == event.wd:
                del self.anchors[path]
            entry = self.dirs.get(path)
            if entry is not None and entry.wd == event.wd:
                self.changes += 1
                self._drop_tree(path, unwatch=False)
            return
        if not self._relevant(path):
            return  # a sibling of a root, seen through the root's parent
        self.changes += 1
        if mask & inotify.IN_ISDIR:
            if mask & _APPEARED:
                self._add_tree(path)
            elif mask & _GONE:
                self._drop_tree(path, unwatch=bool(mask & inotify.IN_MOVED_FROM))
            else:
                self.pending.add(path)
            return
        self.pending.add(path)
        parent, name = os.path.split(path)
        entry = self.dirs.get(parent)
        if entry is not None:
            if mask & _GONE:
                entry.names.pop(name, None)
            else:
                entry.names[name] = False

    # --- trees ---------------------------------------------------------------------------

    def _watch(self, path: str) -> int:
        wd = self.inotify.add_watch(path, _MASK)
        if wd >= 0:
            self.watched[wd] = path
        elif os.path.isdir(path) and not self._warned_limit:
            self._warned_limit = True
            log.warning("cannot watch %s (is fs.inotify.max_user_watches too low?): recipe "
                        "changes below it go unnoticed until ixd restarts", path)
        return wd

    def _add_tree(self, top: str) -> None:
        """Watch `top` and every folder below it; report it and every file in it.

        Each folder is watched before it is listed, so a file created meanwhile is either
        listed or seen as an event (or both), never missed."""
        if top in self.dirs:
            self._drop_tree(top, unwatch=False)  # what we knew of it is stale
        if top in self.roots:
            try:
                st = os.lstat(top)
            except OSError:
                return
            self.root_ids[top] = (st.st_dev, st.st_ino)
        else:
            parent = self.dirs.get(os.path.dirname(top))
            if parent is not None:
                parent.names[os.path.basename(top)] = True
        self.pending.add(top)
        stack = [top]
        while stack:
            folder = stack.pop()
            wd = self._watch(folder)
            if wd < 0:
                continue  # gone already, or no longer a folder: its own event tells
            entry = self.dirs.get(folder)
            if entry is None:
                entry = self.dirs[folder] = _Dir(wd)
            entry.wd = wd
            try:
                with os.scandir(folder) as listing:
                    for item in listing:
                        child = os.path.join(folder, item.name)
                        folder_item = item.is_dir(follow_symlinks=False)
                        entry.names[item.name] = folder_item
                        if folder_item:
                            stack.append(child)
                        self.pending.add(child)
            except OSError:
                continue

    def _drop_tree(self, top: str, *, unwatch: bool) -> None:
        """Forget `top` and the folders below it; report it and every file it held."""
        self.pending.add(top)
        parent = self.dirs.get(os.path.dirname(top))
        if parent is not None:
            parent.names.pop(os.path.basename(top), None)
        if top in self.roots:
            self.root_ids.pop(top, None)
        stack = [top]
        while stack:
            folder = stack.pop()
            entry = self.dirs.pop(folder, None)
            if entry is None:
                continue
            self.pending.update(os.path.join(folder, name) for name in entry.files())
            for name in entry.subdirs():
                child = os.path.join(folder, name)
                self.pending.add(child)
                stack.append(child)
            if unwatch and self.watched.pop(entry.wd, None) is not None:
                self.inotify.rm_watch(entry.wd)

    def _anchor(self, folder: str) -> None:
        """Watch `folder` (not its tree) to see a root appear in it or be replaced."""
        wd = self.anchors.get(folder)
        if wd is not None and wd in self.watched:
            return
        if folder in self.dirs:
            return  # watched as part of a tree already
        wd = self._watch(folder)
        if wd >= 0:
            self.anchors[folder] = wd

    def _check_root(self, root: str) -> None:
        """Make the watches of `root` match what is on disk: watched (and its parent) if it
        is a folder; otherwise its nearest existing ancestor watched, to see it appear."""
        for _ in range(256):  # each turn goes one folder deeper; a bound against a race storm
            try:
                st: os.stat_result | None = os.lstat(root)
            except OSError:
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                if self.root_ids.get(root) != (st.st_dev, st.st_ino):
                    if root in self.dirs:
                        self._drop_tree(root, unwatch=True)  # replaced by another folder
                    self._add_tree(root)
                parent = os.path.dirname(root)
                if parent != root:
                    self._anchor(parent)
                return
            if root in self.dirs:
                self._drop_tree(root, unwatch=True)
            ancestor = os.path.dirname(root)
            while not os.path.isdir(ancestor) and os.path.dirname(ancestor) != ancestor:
                ancestor = os.path.dirname(ancestor)
            self._anchor(ancestor)
            # the next folder towards the root may have appeared before the watch was in place
            below = root[len(ancestor):].lstrip("/").split("/", 1)[0]
            if not os.path.isdir(os.path.join(ancestor, below)):
                return


async def watch_tree(
    roots: Sequence[Path],
    on_change: Callable[[set[Path]], None],
    *,
    coalesce: float = 0.05,
    max_wait: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Watch the folders `roots` recursively until cancelled; report changes in batches.

    `on_change` gets the set of changed absolute paths (files and folders, under the resolved
    roots) once per batch: a batch starts with the first event and keeps collecting while
    changes keep coming, until `coalesce` seconds pass without one (or `max_wait` seconds
    after the first, so a tree that never rests is still reported). `task_status.started()`
    is called once the watches are in place, so a change made after
    `nursery.start(watch_tree, ...)` returns is reported. A root that does not exist yet is
    watched for from its nearest existing ancestor. An exception from `on_change` ends the
    watch. The inotify descriptor is closed on the way out, whatever the way.
    """
    watcher = _Watcher(roots)
    try:
        watcher.start()
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(watcher.fd)
            watcher.read()
            if not watcher.pending:
                continue  # only events about things outside the roots
            # collect until `coalesce` seconds pass without a change, or `max_wait` after
            # the first one, whichever comes first
            last = trio.current_time()
            with trio.move_on_at(last + max(coalesce, max_wait)):
                while True:
                    with trio.move_on_at(last + coalesce):
                        await trio.lowlevel.wait_readable(watcher.fd)
                    if trio.current_time() >= last + coalesce:
                        break
                    seen = watcher.changes
                    watcher.read()
                    if watcher.changes != seen:
                        last = trio.current_time()
            on_change(watcher.take())
    finally:
        watcher.close()
