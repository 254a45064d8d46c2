"""`ixd.daemon.watch.watch_tree` against real files: batches, new folders, deletes, renames, roots
that come and go, and a real PackageGraph whose cache it invalidates.

No fixed sleeps: every wait is on a trio event under a `trio.fail_after` deadline.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio
import trio.testing

from ixd.daemon.watch import watch_tree
from ixd.model.selector import parse_selector
from ixd.recipes.packages import PackageGraph
from ixd.recipes.tree import RecipeTree

PKGS = Path(__file__).resolve().parent.parent / "pkgs"
DEADLINE = 10.0


class Changes:
    """Records each `on_change` batch; lets a test wait until some paths were reported."""

    def __init__(self, then: Callable[[set[Path]], object] | None = None) -> None:
        self.batches: list[set[Path]] = []
        self._then = then
        self._arrived = trio.Event()

    def __call__(self, paths: set[Path]) -> None:
        self.batches.append(set(paths))
        if self._then is not None:
            self._then(paths)
        arrived, self._arrived = self._arrived, trio.Event()
        arrived.set()

    @property
    def seen(self) -> set[Path]:
        return set().union(*self.batches)

    def mark(self) -> int:
        """A point to wait from: `wait_for(paths, since=mark)` wants them reported again."""
        return len(self.batches)

    async def wait_for(self, paths: Iterable[Path], since: int = 0,
                       deadline: float = DEADLINE) -> None:
        wanted = set(paths)
        with trio.fail_after(deadline):
            while not wanted <= set().union(*self.batches[since:]):
                await self._arrived.wait()


@asynccontextmanager
async def watching(roots: list[Path], changes: Changes,
                   coalesce: float = 0.05) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(watch_tree, roots, changes, coalesce=coalesce))
        yield
        nursery.cancel_scope.cancel()


def inotify_fds() -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify":
                count += 1
        except OSError:
            pass
    return count


def write_many(folder: Path, count: int) -> list[Path]:
    paths = [folder / f"f{i:03}.sh" for i in range(count)]
    for i, path in enumerate(paths):
        path.write_text(f"# {i}\n")
    return paths


async def test_a_write_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_text("old\n")
    changes = Changes()
    async with watching([tmp_path], changes):
        (tmp_path / "a.sh").write_text("new\n")
        await changes.wait_for([tmp_path / "a.sh"])
    assert changes.batches[0] == {tmp_path / "a.sh"}


async def test_a_burst_of_500_writes_is_one_batch(tmp_path: Path) -> None:
    changes = Changes()
    async with watching([tmp_path], changes):
        # written from another thread while the watcher runs, as a checkout would
        paths = await trio.to_thread.run_sync(write_many, tmp_path, 500)
        await changes.wait_for(paths)
    assert len(changes.batches) <= 3, [len(b) for b in changes.batches]
    assert changes.seen == set(paths)


async def test_a_new_folder_and_its_files_are_reported_and_watched(tmp_path: Path) -> None:
    changes = Changes()
    async with watching([tmp_path], changes):
        # created faster than a watch can be added: the new tree is listed when watched
        deep = tmp_path / "bin" / "new" / "sub"
        deep.mkdir(parents=True)
        (deep / "ix.sh").write_text("x\n")
        (tmp_path / "bin" / "new" / "ix.sh").write_text("y\n")
        await changes.wait_for([tmp_path / "bin", tmp_path / "bin" / "new", deep,
                                deep / "ix.sh", tmp_path / "bin" / "new" / "ix.sh"])
        # and the new folders are watched from now on
        (deep / "later.sh").write_text("z\n")
        await changes.wait_for([deep / "later.sh"])


async def test_deletion_is_reported(tmp_path: Path) -> None:
    (tmp_path / "gone.sh").write_text("x\n")
    folder = tmp_path / "lib" / "old"
    folder.mkdir(parents=True)
    (folder / "ix.sh").write_text("x\n")
    changes = Changes()
    async with watching([tmp_path], changes):
        (tmp_path / "gone.sh").unlink()
        shutil.rmtree(tmp_path / "lib")
        await changes.wait_for([tmp_path / "gone.sh", tmp_path / "lib", folder,
                                folder / "ix.sh"])


async def test_renames_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_text("x\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ix.sh").write_text("x\n")
    changes = Changes()
    async with watching([tmp_path], changes):
        (tmp_path / "a.sh").rename(tmp_path / "b.sh")
        # git replaces a file by writing a temporary one and renaming it over the old one
        (tmp_path / ".tmp-ix.sh").write_text("new\n")
        (tmp_path / ".tmp-ix.sh").replace(tmp_path / "d" / "ix.sh")
        await changes.wait_for([tmp_path / "a.sh", tmp_path / "b.sh", tmp_path / "d" / "ix.sh"])
        # a folder renamed: the files it held are reported at both paths, and watched anew
        mark = changes.mark()
        (tmp_path / "d").rename(tmp_path / "e")
        await changes.wait_for([tmp_path / "d" / "ix.sh", tmp_path / "e" / "ix.sh"], since=mark)
        mark = changes.mark()
        (tmp_path / "e" / "ix.sh").write_text("newer\n")
        await changes.wait_for([tmp_path / "e" / "ix.sh"], since=mark)
        # a folder moved out of the watched tree is reported, then no longer watched
        moved = tmp_path.parent / f"{tmp_path.name}-moved-away"
        mark = changes.mark()
        (tmp_path / "e").rename(moved)
        await changes.wait_for([tmp_path / "e", tmp_path / "e" / "ix.sh"], since=mark)
        mark = changes.mark()
        (moved / "ix.sh").write_text("outside\n")
        (tmp_path / "marker").write_text("x\n")  # inotify keeps order: reported after it
        await changes.wait_for([tmp_path / "marker"], since=mark)
        later = set().union(*changes.batches[mark:])
        assert later == {tmp_path / "marker"}
        shutil.rmtree(moved)


async def test_a_folder_replaced_by_a_rename_stays_watched(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    fresh = tmp_path.parent / f"{tmp_path.name}-fresh"
    fresh.mkdir()
    (fresh / "ix.sh").write_text("x\n")
    changes = Changes()
    async with watching([tmp_path], changes):
        fresh.replace(tmp_path / "d")  # over the empty folder: its old inode is deleted
        await changes.wait_for([tmp_path / "d", tmp_path / "d" / "ix.sh"])
        mark = changes.mark()
        (tmp_path / "d" / "ix.sh").write_text("y\n")
        await changes.wait_for([tmp_path / "d" / "ix.sh"], since=mark)


async def test_a_root_created_later_and_replaced_is_watched(tmp_path: Path) -> None:
    root = tmp_path / "checkout" / "pkgs"
    changes = Changes()
    async with watching([root], changes):
        root.mkdir(parents=True)
        (root / "ix.sh").write_text("x\n")
        await changes.wait_for([root, root / "ix.sh"])
        # replaced by a rename: the old tree's files and the new tree's files are reported
        fresh = tmp_path / "checkout" / "pkgs.new"
        (fresh / "bin").mkdir(parents=True)
        (fresh / "bin" / "ix.sh").write_text("y\n")
        mark = changes.mark()
        root.rename(tmp_path / "checkout" / "pkgs.old")
        fresh.rename(root)
        await changes.wait_for([root / "ix.sh", root / "bin" / "ix.sh"], since=mark)
        # the new root is watched
        mark = changes.mark()
        (root / "bin" / "ix.sh").write_text("z\n")
        await changes.wait_for([root / "bin" / "ix.sh"], since=mark)
        # siblings of the root in its parent are not reported
        assert not any(p.name in ("pkgs.new", "pkgs.old") for p in changes.seen)


async def test_resolved_paths_are_reported(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    changes = Changes()
    async with watching([link], changes):
        (real / "x.sh").write_text("x\n")
        await changes.wait_for([real / "x.sh"])
    assert link / "x.sh" not in changes.seen


async def test_cancellation_closes_the_inotify_descriptor(tmp_path: Path) -> None:
    before = inotify_fds()
    changes = Changes()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(watch_tree, [tmp_path], changes))
            assert inotify_fds() == before + 1
            (tmp_path / "a").write_text("x\n")
            await changes.wait_for([tmp_path / "a"])
            nursery.cancel_scope.cancel()
    assert inotify_fds() == before
    # cancelled while a batch is being collected: closes the same way
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(watch_tree, [tmp_path], changes, coalesce=60))
            (tmp_path / "b").write_text("x\n")
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert inotify_fds() == before
    assert tmp_path / "b" not in changes.seen


TINY = """\
{{% extends '//die/{base}' %}}
{{% block version %}}1.0{{% endblock %}}
{{% block install %}}
mkdir -p "$out/bin"
echo {word} > "$out/bin/{name}"
{{% endblock %}}
"""


def make_overlay(root: Path) -> Path:
    overlay = root / "overlay"
    shutil.copytree(PKGS / "die", overlay / "die")
    shutil.copytree(PKGS / "bld", overlay / "bld")
    for name, word in (("one", "uno"), ("two", "dos")):
        (overlay / "bin" / name).mkdir(parents=True)
        (overlay / "bin" / name / "ix.sh").write_text(
            TINY.format(base="sh.sh", word=word, name=name))
    (overlay / "set" / "both").mkdir(parents=True)
    (overlay / "set" / "both" / "ix.sh").write_text(
        "{% extends '//die/hub.sh' %}\n{% block run_deps %}\nbin/one\nbin/two\n{% endblock %}\n")
    return overlay


async def test_watching_invalidates_exactly_the_changed_packages(tmp_path: Path) -> None:
    overlay = make_overlay(tmp_path)
    graph = PackageGraph(RecipeTree([overlay]), tmp_path / "store")
    one, two, both = (graph.load(parse_selector(s)) for s in ("bin/one", "bin/two", "set/both"))
    dropped: list[int] = []
    changes = Changes(then=lambda paths: dropped.append(graph.invalidate_files(paths)))
    recipe = overlay.resolve() / "bin" / "one" / "ix.sh"
    async with watching([overlay], changes):
        recipe.write_text(recipe.read_text().replace("uno", "eins"))
        await changes.wait_for([recipe])
    assert sum(dropped) == 2  # bin/one and set/both, which depends on it
    new_one = graph.load(parse_selector("bin/one"))
    assert new_one.uid != one.uid
    assert "eins" in new_one.descriptor.script_data
    assert graph.load(parse_selector("bin/two")) is two
    assert graph.load(parse_selector("set/both")).uid != both.uid


def test_a_queue_overflow_reports_everything_again(tmp_path: Path) -> None:
    from ixd.daemon.inotify import IN_Q_OVERFLOW, Event
    from ixd.daemon.watch import _Watcher

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.sh").write_text("x\n")
    watcher = _Watcher([tmp_path])
    try:
        watcher.start()
        assert watcher.take() == set()
        watcher._on_event(Event(-1, IN_Q_OVERFLOW, ""))
        watcher.read()
        assert watcher.take() == {tmp_path, tmp_path / "sub", tmp_path / "sub" / "a.sh"}
    finally:
        watcher.inotify.close()


def test_inotify_events_are_decoded_with_their_names() -> None:
    import struct

    from ixd.daemon.inotify import IN_CREATE, IN_DELETE_SELF, IN_ISDIR, Event, decode

    name = "caf\xe9".encode() + b"\xff"  # not UTF-8: kept as the os module's names are
    data = (struct.pack("iIII", 3, IN_CREATE | IN_ISDIR, 0, 16) + name.ljust(16, b"\0")
            + struct.pack("iIII", 4, IN_DELETE_SELF, 0, 0))
    assert decode(data) == [Event(3, IN_CREATE | IN_ISDIR, os.fsdecode(name)),
                            Event(4, IN_DELETE_SELF, "")]
    assert decode(b"") == []


def test_a_folder_gone_leaves_no_watch_behind(tmp_path: Path) -> None:
    """Its watch goes with it (the kernel's IN_IGNORED): the watcher's own table of watches
    does not grow with folders made and removed."""
    from ixd.daemon.watch import _Watcher

    watcher = _Watcher([tmp_path])
    try:
        watcher.start()
        before = dict(watcher.watched)
        for n in range(20):
            (tmp_path / f"d{n}").mkdir()
        watcher.read()
        assert len(watcher.watched) == len(before) + 20
        for n in range(20):
            (tmp_path / f"d{n}").rmdir()
        watcher.read()
        assert watcher.watched == before
        assert {tmp_path / f"d{n}" for n in range(20)} <= watcher.take()
    finally:
        watcher.inotify.close()
