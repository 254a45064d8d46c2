"""What ixd keeps in memory: the modules a daemon without a cache loads, malloc's arenas and
its free heap.

Each check runs in a fresh interpreter (a module once imported stays; so do malloc's arenas).
`bench/memory.py` measures what these save (issue 29, item 3).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from ixd.daemon.heap import keep_heap_trimmed
from ixd.store.db import CACHE_KIB

PROJECT = Path(__file__).resolve().parent.parent

#: what only a cache, a cluster or a subcommand needs (with the standard modules only they
#: import): a daemon started without those options never loads them; nor pyinotify (with
#: asyncore 0.6 MiB: the recipe watcher reads inotify itself, `ixd.daemon.inotify`)
NOT_FOR_A_PLAIN_DAEMON = ("ixd.cache.substitute", "ixd.cache.format", "ixd.cache.archive",
                          "ixd.cache.stores", "ixd.cache.binarycache", "ixd.build.cluster_node",
                          "ixd.daemon.admin_commands", "ixd.store.verify", "ixd.build.certs",
                          "tarfile", "configparser", "pyinotify", "asyncore")


def python(code: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", "ignore", "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, cwd=PROJECT, check=check,
                          env={**{k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"},
                               "PYTHONPATH": str(PROJECT)})


def loaded_after(code: str) -> set[str]:
    done = python(f"""
        import sys
        {textwrap.indent(textwrap.dedent(code), "        ").strip()}
        print(" ".join(sorted(sys.modules)))
    """)
    return set(done.stdout.split())


def test_importing_the_daemon_loads_no_cache_cluster_or_subcommand_module() -> None:
    loaded = loaded_after("import ixd.daemon.main")
    assert "ixd.daemon.core" in loaded  # the import did happen
    assert not loaded & set(NOT_FOR_A_PLAIN_DAEMON), sorted(loaded & set(NOT_FOR_A_PLAIN_DAEMON))


@pytest.mark.skipif(os.geteuid() != 0, reason="a daemon's root is made as root")
def test_a_daemon_without_cache_options_loads_no_cache_module(tmp_path: Path) -> None:
    loaded = loaded_after(f"""
        from ixd.daemon.main import build_parser, config_from_args
        from ixd.daemon.core import Daemon
        args = build_parser().parse_args(["--root", {str(tmp_path / "root")!r}, "--no-confine"])
        daemon = Daemon(config_from_args(args))
        assert daemon.engine.substituter is None and daemon.engine.pusher is None
    """)
    assert "ixd.daemon.core" in loaded
    assert not loaded & set(NOT_FOR_A_PLAIN_DAEMON), sorted(loaded & set(NOT_FOR_A_PLAIN_DAEMON))


@pytest.mark.skipif(os.geteuid() != 0, reason="a daemon's root is made as root")
def test_a_bad_cache_option_alone_is_still_refused_at_start(tmp_path: Path) -> None:
    """The cache's modules load for any cache option, so `--trusted-key` without `--cache`
    is checked as it was when they always loaded."""
    done = python(f"""
        from ixd.daemon.main import build_parser, config_from_args
        from ixd.daemon.core import Daemon
        from ixd.wire.errors import IxError
        args = build_parser().parse_args(["--root", {str(tmp_path / "root")!r}, "--no-confine",
                                          "--trusted-key", "not-a-key"])
        try:
            Daemon(config_from_args(args))
        except IxError as exc:
            print("refused:", exc.code, exc)
    """)
    assert done.stdout.startswith("refused: E_CACHE_KEY --trusted-key"), done.stdout + done.stderr


ARENAS = """
    import threading
    from pathlib import Path
    {setup}
    def allocate() -> None:
        kept = [bytearray(600) for _ in range(2000)]  # above obmalloc's 512: malloc's
        ready.wait()
    ready = threading.Event()
    threads = [threading.Thread(target=allocate) for _ in range(4)]
    for thread in threads:
        thread.start()
    reserved = 0
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if fields[1] == "---p" and len(fields) == 5:  # anonymous, no access: heap reserves
            low, high = (int(x, 16) for x in fields[0].split("-"))
            reserved += high - low
    ready.set()
    for thread in threads:
        thread.join()
    print(reserved >> 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_one_malloc_arena_keeps_threads_off_arenas_of_their_own() -> None:
    """Without it, threads that allocate get arenas of their own (64 MiB reserved each, most
    of it inaccessible); with it, none."""
    setup = "from ixd.daemon.heap import one_malloc_arena; assert one_malloc_arena()"
    default = int(python(ARENAS.format(setup="")).stdout)
    one = int(python(ARENAS.format(setup=setup)).stdout)
    assert default >= 32, f"threads made no arenas of their own ({default} MiB reserved)"
    assert one < 32, f"{one} MiB reserved for arenas with one_malloc_arena()"


class CountingMalloc:
    """A heap whose free bytes the test sets; counts the trims asked of it."""

    def __init__(self) -> None:
        self.free = 0
        self.trims = 0
        #: set by each trim (in the keeper's worker thread)
        self.trimmed = threading.Event()

    def free_bytes(self) -> int:
        return self.free

    def trim(self) -> None:  # glibc's: the free chunks stay free (their pages go back)
        self.trims += 1
        self.trimmed.set()


async def test_the_heap_is_trimmed_once_enough_of_it_is_free(
        mock_clock: trio.testing.MockClock) -> None:
    heap = CountingMalloc()

    async def after(seconds: float, trims: int) -> None:
        """Move the clock on by `seconds`, a second at a time; a trim is asked in a worker
        thread: wait for it (up to 10 s) where one is due."""
        for _ in range(int(seconds)):
            mock_clock.jump(1)
            await trio.testing.wait_all_tasks_blocked()
        if heap.trims < trims:
            await trio.to_thread.run_sync(heap.trimmed.wait, 10)
            heap.trimmed.clear()
        assert heap.trims == trims

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_heap_trimmed, heap, 1.0, 1000)
        await trio.testing.wait_all_tasks_blocked()
        await after(5, 0)  # nothing free: nothing asked
        heap.free = 999
        await after(2, 0)  # below the floor
        heap.free = 1000
        await after(1, 1)
        await after(3, 1)  # nothing changed since: no trim again
        heap.free = 5000
        await after(1, 2)
        nursery.cancel_scope.cancel()


TRIMMED = """
    from ixd.daemon.heap import glibc_malloc
    def anon() -> int:
        return int([l for l in open("/proc/self/status") if l.startswith("RssAnon")][0].split()[1])
    malloc = glibc_malloc()
    kept, freed = [], []
    for _ in range(20000):  # 40 MiB above obmalloc's 512 bytes, a 30th of it kept
        (kept if len(freed) % 30 == 0 and len(kept) < len(freed) // 30 else freed).append(
            bytearray(2000))
    del freed
    before, free = anon(), malloc.free_bytes()
    malloc.trim()
    print(before, free, anon(), malloc.free_bytes())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_trim_gives_the_free_heap_back_to_the_system() -> None:
    """What the daemon's trimmer reads and calls: glibc's own count of the free heap, and
    malloc_trim, which returns those pages (the resident anonymous memory drops by them)."""
    before, free, after, free_after = map(int, python(TRIMMED).stdout.split())
    assert free > 30 << 20, f"only {free} bytes free in the heap"
    assert before - after > 30 << 10, f"RssAnon {before} -> {after} kB"
    assert free_after <= free


PAGE_CACHE = """
    import ctypes, sqlite3, sys
    from pathlib import Path
    from ixd.store.db import BuildDatabase
    path = Path(sys.argv[1])
    BuildDatabase(path).close()
    fill = sqlite3.connect(path)  # 8 MiB of store rows, written by another connection
    with fill:
        fill.executemany("INSERT INTO store (uid, path, name, kind, registered, hash) "
                         "VALUES (?, ?, ?, 'pkg', 0, ?)",
                         ((f"{n:032x}", "/ix/store/" + "p" * 400 + str(n), "bin/x", "h" * 64)
                          for n in range(16000)))
    fill.close()
    db = BuildDatabase(path)
    assert len(db.store_refs()) == 16000  # every page of the table read once
    used, high = ctypes.c_int64(), ctypes.c_int64()
    ctypes.CDLL("libsqlite3.so.0").sqlite3_status64(0, ctypes.byref(used), ctypes.byref(high), 0)
    print(used.value)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the system's libsqlite3")
def test_the_build_database_keeps_a_small_page_cache(tmp_path: Path) -> None:
    """A scan of a large table leaves at most CACHE_KIB of its pages in SQLite's memory
    (SQLite's default keeps up to 2,000 KiB)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(PAGE_CACHE),
                           str(tmp_path / "db.sqlite")], capture_output=True, text=True,
                          cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)})
    assert done.returncode == 0, done.stderr
    used = int(done.stdout)
    assert used < (CACHE_KIB + 300) << 10, f"SQLite holds {used >> 10} KiB"
