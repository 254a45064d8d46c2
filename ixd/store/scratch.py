"""A build's private folders on disk: made before its command runs, its output settled into
the store after, or everything of it abandoned.

A confined build sees the store as `build/<uid>/store`, a folder only its build user can
reach (`build/` is 0711 and `build/<uid>` 0700, owned by the build user), bound at the
store's path with the build's inputs read-only on top: it writes `$out` there, and may
remove and make it again or write beside it, all of which stays in its scratch. An
unconfined build writes its store path directly.

Every function here blocks: the event loop calls each once, in a worker thread. None of
them raises BuildFailed for what a daemon's own file did: an OSError here is the daemon's
(`ixd.store.builder` tells it as such), except where the build's output is refused.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ixd.model.layout import Layout
from ixd.model.nodes import Node, is_plain_file_name
from ixd.store.buildusers import BuildUser, kill_processes_of
from ixd.store.canonical import OutputRefused, canonicalise
from ixd.store.confine import sandbox_etc
from ixd.store.elf import machine_check
from ixd.store.fstree import remove_tree
from ixd.wire.errors import BuildFailed

log = logging.getLogger(__name__)


class LimitExceeded(Exception):
    """A build broke one of its limits (`settle`: its output is larger than allowed)."""


class ContentMismatch(Exception):
    """An output whose content is not the one expected (`settle(expect_hash=...)`)."""


@dataclass(frozen=True)
class Built:
    """A finished build's output, canonical and in the store."""

    #: what canonicalisation changed beyond owner, mode and time (also in the build's log)
    notes: tuple[str, ...]
    files: int
    size: int
    #: the output's content hash (`ixd.store.treehash`), recorded when it is registered valid
    content_hash: str
    #: the build's scratch, moved into the trash: the caller deletes it when it suits
    trashed: Path


@dataclass(frozen=True)
class Scratch:
    """The folders of one build: its scratch (`tmp`, `src`, for a confined build its own
    `store` view holding `$out`) and the store path its output ends at."""

    root: Path
    store_path: Path
    confined: bool
    #: where `settle` moves the scratch (the daemon deletes it later)
    trash: Path
    #: (target, name) of the links to its sources in `src`
    links: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, node: Node, layout: Layout, *, confined: bool) -> Scratch:
        """The scratch of a build node; BuildFailed if a source's file name would leave
        `src` (checked before anything is made)."""
        return cls(layout.scratch(node.uid), Path(node.outputs[0]), confined, layout.trash,
                   tuple(source_links(node, layout)))

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def store_view(self) -> Path:
        """The store as a confined build sees it (its output inside)."""
        return self.root / "store"

    @property
    def out(self) -> Path:
        """Where the command writes `$out`: in its own store view if confined, else the
        store path itself."""
        return self.store_view / self.store_path.name if self.confined else self.store_path


def source_links(node: Node, layout: Layout) -> list[tuple[str, str]]:
    """(target, name) of the links to the node's sources its scratch's `src` holds."""
    links = []
    for source in node.sources:
        if not is_plain_file_name(source.filename):
            raise BuildFailed(
                f"build of {node.name} ({node.uid}): source {source.url} has the bad file "
                f"name {source.filename!r}; it must be a plain file name")
        links.append((os.fspath(layout.source_path(source.sha256)), source.filename))
    return links


def prepare(scratch: Scratch, user: BuildUser | None,
            seed: Callable[[Path], None] | None = None) -> None:
    """A fresh scratch with its folders and its sources' links, and `seed(out)` run on the
    output folder. Confined (`user` given), made by root and then given to the build user:
    no process of that user runs yet (the pool hands out a user with none), so nothing can
    race these calls; the scratch's parent is root's. Unconfined, the daemon's own, and an
    output never registered valid (the runner checked) is removed first."""
    if user is None:
        remove_tree(scratch.store_path)
        remove_tree(scratch.root)
        os.mkdir(scratch.root, 0o700)
        for folder in (scratch.tmp, scratch.src, scratch.out):
            os.mkdir(folder)
        _link_sources(scratch)
        if seed is not None:
            seed(scratch.out)
        return
    try:
        os.mkdir(scratch.root, 0o700)
    except FileExistsError:  # left by a build cut short
        remove_tree(scratch.root)
        os.mkdir(scratch.root, 0o700)
    folders = (scratch.tmp, scratch.src, scratch.store_view, scratch.out)
    for folder in folders:
        os.mkdir(folder, 0o755)
    _link_sources(scratch)
    for folder in folders:
        os.chown(folder, user.uid, user.gid)
    os.chown(scratch.root, user.uid, user.gid)
    if seed is not None:
        seed(scratch.out)
        _give_tree(scratch.out, user)


def _link_sources(scratch: Scratch) -> None:
    for target, name in scratch.links:
        os.symlink(target, scratch.src / name)


def _give_tree(top: Path, user: BuildUser) -> None:
    """Make what the daemon put in a build's output the build user's (its processes may
    change it; the daemon made it, so nothing in it is a build's yet)."""
    for folder, subdirs, files in os.walk(top):
        for name in (*subdirs, *files):
            os.chown(os.path.join(folder, name), user.uid, user.gid, follow_symlinks=False)
    os.chown(top, user.uid, user.gid)


def sandbox_etc_dir(layout: Layout) -> Path:
    """The sandbox's own /etc/passwd and /etc/group, written once per root (root's, 0644,
    in `build/.etc`, which build users may pass through to but not list)."""
    folder = layout.build / ".etc"
    if folder.is_dir():
        return folder
    staging = layout.build / f".etc.{os.getpid()}.{id(folder)}"
    remove_tree(staging)
    staging.mkdir(mode=0o755)
    for name, text in sandbox_etc().items():
        (staging / name).write_text(text)
        (staging / name).chmod(0o644)
    try:
        os.rename(staging, folder)
    except OSError:  # another build made it first
        remove_tree(staging)
    return folder


#: a build's work of at most this many entries is deleted in the daemon's thread (tens of
#: microseconds; between two builds of one slot); a larger one by one `rm -rf` process
SMALL_WORK = 256


def clear_work(scratch: Scratch, user: BuildUser | None) -> None:
    """Delete a finished build's work (`tmp`, `src`; its output stays): no process of it
    left first (`user`'s are killed, if given). Root deletes a small work here and a larger
    one with one `rm -rf`, which holds no interpreter lock the event loop needs (a process
    costs a millisecond or more, the slot's next build waiting)."""
    if user is not None:
        kill_processes_of(user)
    work = [scratch.tmp, scratch.src]
    if os.geteuid() == 0 and not holds_at_most(work, SMALL_WORK):
        done = subprocess.run(["rm", "-rf", "--one-file-system", "--", *map(os.fspath, work)],
                              check=False, stdin=subprocess.DEVNULL, capture_output=True)
        if done.returncode == 0:
            return
    for folder in work:
        remove_tree(folder)  # shutil.rmtree: through descriptors, never following a link


def holds_at_most(folders: list[Path], entries: int) -> bool:
    """Whether `folders` hold at most `entries` entries in all, at any depth: counted from
    the folders' listings (no link followed, nothing stat'ed), stopping once past it."""
    stack = [os.fspath(folder) for folder in folders]
    left = entries
    while stack:
        try:
            with os.scandir(stack.pop()) as listing:
                for entry in listing:
                    left -= 1
                    if left < 0:
                        return False
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return True


def settle(scratch: Scratch, user: BuildUser | None, *, max_output_size: int,
           expect_hash: str | None = None, finish: Callable[[Path], None] | None = None,
           machine: str = "") -> Built:
    """After the command: no process of the build left (`user`'s are killed, if given), its
    output canonicalised, hashed, every ELF file checked to be for `machine` (MachineMismatch
    otherwise), and moved into the store, the scratch moved into the trash. `finish(out)`
    runs before canonicalisation. OutputRefused, LimitExceeded or ContentMismatch: the
    output may not enter the store."""
    if user is not None:
        # nothing of the build may run on while its output is canonicalised
        kill_processes_of(user)
    out, store_path = scratch.out, scratch.store_path
    try:
        mode = os.lstat(out).st_mode
    except FileNotFoundError:
        raise OutputRefused(f"the build left nothing at $out ({store_path})") from None
    if not stat.S_ISDIR(mode):
        raise OutputRefused(f"the build left $out ({store_path}) as something else than a "
                            "folder (a link or a file)")
    if finish is not None:
        finish(out)
    # of relative paths: the same once moved
    canonical = canonicalise(out, content_hash=True, check=machine_check(machine))
    if canonical.size > max_output_size:
        raise LimitExceeded(f"the output holds {canonical.size} bytes, more than the "
                            f"--max-output-size of {max_output_size}")
    content_hash = canonical.content_hash
    assert content_hash is not None
    if expect_hash is not None and content_hash != expect_hash:
        raise ContentMismatch(f"its content hash is {content_hash}, not the expected "
                              f"{expect_hash}")
    if out != store_path:
        try:
            os.rename(out, store_path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            # a stale output a build cut short left (the runner checked: not valid)
            remove_tree(store_path)
            os.rename(out, store_path)
    # Deleting the scratch (the build's temporary files) is nobody's wait: one rename into
    # the private trash, and the daemon deletes it later (recovery empties what is left).
    trashed = scratch.trash / f"{scratch.root.name}.{secrets.token_hex(4)}"
    os.rename(scratch.root, trashed)
    return Built(tuple(canonical.notes), canonical.files, canonical.size, content_hash,
                 trashed)


def abandon(scratch: Scratch, user: BuildUser | None) -> None:
    """After a failure or cancellation: no process of the build left, nothing of it kept;
    never raises over the real error (what cannot be removed is logged)."""
    try:
        if user is not None:
            kill_processes_of(user)
    finally:
        for path in (scratch.out, scratch.root):
            try:
                remove_tree(path)
            except OSError:
                log.exception("could not remove %s", path)


def tree_bytes(path: Path) -> int:
    """Bytes allocated to the files under `path` (blocks, so sparse files count as written);
    links are not followed and files that vanish meanwhile are skipped."""
    total = 0
    stack = [os.fspath(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total

