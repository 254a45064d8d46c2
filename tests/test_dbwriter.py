"""The event loop's database writes through `ixd.store.dbwriter`: committed in order, in batches
by one thread, each caller handed its own write's result or error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from ixd.store.db import BuildDatabase
from ixd.store.dbwriter import WriteQueue


@pytest.fixture
def db(tmp_path: Path) -> Iterator[BuildDatabase]:
    database = BuildDatabase(tmp_path / "ixd.sqlite")
    yield database
    database.close()


def test_writes_are_committed_in_order_and_hand_back_their_results(db: BuildDatabase) -> None:
    writes = WriteQueue(db)
    ids: list[int] = []

    async def main() -> None:
        pending = [writes.submit(lambda i=i: db.build_started(f"u{i}", "bin/a", {}, "/log",
                                                              requested_by=i))
                   for i in range(20)]
        ids.extend([await p.result() for p in pending])
        await writes.write(lambda: db.build_ended(ids[0], "valid"))

    trio.run(main)
    assert ids == sorted(ids) and len(set(ids)) == 20
    rows = {r["id"]: r for r in db.builds()}
    assert [rows[i]["uid"] for i in ids] == [f"u{i}" for i in range(20)]
    assert rows[ids[0]]["state"] == "valid"


def test_writes_queued_while_one_batch_commits_go_in_the_next_together(
        db: BuildDatabase) -> None:
    writes = WriteQueue(db)
    first_runs, release = threading.Event(), threading.Event()
    batches: list[int] = []
    write_batch = db.write_batch

    def counting(batch: list) -> list:  # type: ignore[type-arg]
        batches.append(len(batch))
        return write_batch(batch)

    db.write_batch = counting  # type: ignore[method-assign]

    def held() -> str:
        first_runs.set()
        release.wait()
        return "first"

    async def main() -> None:
        first = writes.submit(held)
        await trio.to_thread.run_sync(first_runs.wait)
        rest = [writes.submit(lambda i=i: db.register_valid(f"u{i}", f"/ix/store/u{i}",
                                                             "bin/a", "bin", "h"))
                for i in range(5)]
        release.set()
        assert await first.result() == "first"
        for pending in rest:
            assert await pending.result() is None

    trio.run(main)
    assert batches == [1, 5]
    assert db.valid_uids() == {f"u{i}" for i in range(5)}


def test_a_failing_write_fails_only_its_own_caller(db: BuildDatabase) -> None:
    writes = WriteQueue(db)

    def broken() -> None:
        raise RuntimeError("a bug in this write")

    async def main() -> None:
        bad = writes.submit(broken)
        good = writes.submit(lambda: db.register_valid("u1", "/ix/store/u1", "bin/a", "bin",
                                                       "h"))
        with pytest.raises(RuntimeError, match="a bug in this write"):
            await bad.result()
        await good.result()

    trio.run(main)
    assert db.valid_uids() == {"u1"}


def test_a_cancelled_waiter_still_waits_for_its_write(db: BuildDatabase) -> None:
    writes = WriteQueue(db)
    release = threading.Event()

    def slow() -> None:
        release.wait()
        db.register_valid("u1", "/ix/store/u1", "bin/a", "bin", "h")

    async def main() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            pending = writes.submit(slow)
            trio.lowlevel.current_trio_token().run_sync_soon(release.set)
            await pending.result()  # shielded: returns once written, despite the cancel
        assert db.valid_uids() == {"u1"}

    trio.run(main)
