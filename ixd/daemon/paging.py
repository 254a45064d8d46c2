"""Pages of `status` and `builds` replies: a reply never comes near the frame limit.

`status` sends at most `limit` flights (default STATUS_PAGE) from `offset`, with the total
count; `builds` at most `limit` history rows from `offset`, newest first, and stops early
when the rows reach REPLY_BUDGET bytes (long build errors are shortened to ERROR_CHARS). Both
say where the next page starts. The server checked `limit` and `offset` with the request
(`ixd.wire.ops`, where the page sizes are).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ixd.wire.ops import (
    BUILDS_PAGE,
    MAX_BUILDS_PAGE,
    MAX_BUILDS_REACH,
    MAX_STATUS_PAGE,
    STATUS_PAGE,
)

__all__ = ["BUILDS_PAGE", "ERROR_CHARS", "MAX_BUILDS_PAGE", "MAX_BUILDS_REACH",
           "MAX_STATUS_PAGE", "MAX_WAITING_NAMES", "REPLY_BUDGET", "STATUS_PAGE", "fit"]

#: waiting users named per flight in `status` (the rest are counted)
MAX_WAITING_NAMES: Final = 16
#: bytes of rows one `builds` reply holds at most (the frame limit is 16 MiB)
REPLY_BUDGET: Final = 4 * 1024 * 1024
#: characters of a failed build's error message in `builds` (the log has all of it)
ERROR_CHARS: Final = 2000


def fit(rows: Iterable[dict[str, Any]], budget: int = REPLY_BUDGET
        ) -> tuple[list[dict[str, Any]], bool]:
    """The rows, errors shortened, up to `budget` bytes (at least one row); and whether
    some were left out for the budget."""
    kept: list[dict[str, Any]] = []
    used = 0
    for row in rows:
        error = row.get("error")
        if isinstance(error, str) and len(error) > ERROR_CHARS:
            row = {**row, "error": error[:ERROR_CHARS] + f"... ({len(error)} characters; "
                                                         f"see the build's log)"}
        size = _size(row)
        if kept and used + size > budget:
            return kept, True
        kept.append(row)
        used += size
    return kept, False


def _size(value: Any) -> int:
    """Roughly the bytes `value` takes in msgpack (an upper bound for plain data)."""
    if isinstance(value, str):
        # UTF-8 takes at most 4 bytes a character, ASCII 1 (isascii() costs nothing)
        return 5 + (len(value) if value.isascii() else 4 * len(value))
    if isinstance(value, bytes):
        return 5 + len(value)
    if isinstance(value, dict):
        return 5 + sum(_size(k) + _size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return 5 + sum(_size(v) for v in value)
    return 9

