"""The uids of the store's valid entries, as the event loop sees them: a mirror of the build
database's valid set (a check costs no query), and the uids garbage collection is taking
out (a build of one of them waits until its old entry is gone)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import trio


class ValidSet:
    """Valid uids (a set: `in`, iteration, `add`, `discard`, `|=`) and the collection of
    some of them under way (`collecting`)."""

    def __init__(self, uids: Iterable[str] = ()) -> None:
        self._uids = set(uids)
        self._collecting: dict[str, trio.Event] = {}

    def __contains__(self, uid: object) -> bool:
        return uid in self._uids

    def __iter__(self) -> Iterator[str]:
        return iter(self._uids)

    def __len__(self) -> int:
        return len(self._uids)

    def __ior__(self, uids: Iterable[str]) -> ValidSet:
        self._uids.update(uids)
        return self

    def add(self, uid: str) -> None:
        self._uids.add(uid)

    def discard(self, uid: str) -> None:
        self._uids.discard(uid)

    @contextlib.contextmanager
    def collecting(self, uids: Sequence[str]) -> Iterator[None]:
        """Garbage collection of `uids`: they are invalid from the start of the block (no
        new request counts on them), and `collected(uid)` waits until the block has ended
        (their old entries are gone)."""
        for uid in uids:
            self._uids.discard(uid)
            self._collecting[uid] = trio.Event()
        try:
            yield
        finally:
            for uid in uids:
                self._collecting.pop(uid).set()

    async def collected(self, uid: str) -> None:
        """Once no collection of `uid` is under way (at once if none is)."""
        under_way = self._collecting.get(uid)
        if under_way is not None:
            await under_way.wait()
