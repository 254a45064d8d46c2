"""Pages of `status` and `builds` replies: a reply never comes near the frame limit.

`status` sends at most `limit` flights (default STATUS_PAGE) from `offset`, with the total
count; `builds` at most `limit` history rows from `offset`, newest first, and stops early
when the rows reach REPLY_BUDGET bytes (long build errors are shortened to ERROR_CHARS). Both
say where the next page starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ixd.wire.errors import BadRequest

#: flights in one `status` reply unless the client asks for another number; at most
STATUS_PAGE: Final = 100
MAX_STATUS_PAGE: Final = 1000
#: waiting users named per flight in `status` (the rest are counted)
MAX_WAITING_NAMES: Final = 16
#: history rows in one `builds` reply unless the client asks; at most; and how far back
#: `offset` + `limit` may reach (each page reads the rows before it: the database has no
#: offset of its own for them yet)
BUILDS_PAGE: Final = 50
MAX_BUILDS_PAGE: Final = 10_000
MAX_BUILDS_REACH: Final = 20_000
#: bytes of rows one `builds` reply holds at most (the frame limit is 16 MiB)
REPLY_BUDGET: Final = 4 * 1024 * 1024
#: characters of a failed build's error message in `builds` (the log has all of it)
ERROR_CHARS: Final = 2000


def page_args(args: dict[str, Any], default: int, maximum: int,
              reach: int | None = None) -> tuple[int, int]:
    """`(limit, offset)` from a request's args, checked (BadRequest naming the limits)."""
    limit = args.get("limit", default)
    offset = args.get("offset", 0)
    if not _is_int(limit) or not 1 <= limit <= maximum:
        raise BadRequest(f"'limit' must be a number from 1 to {maximum}, not {limit!r}")
    if not _is_int(offset) or offset < 0:
        raise BadRequest(f"'offset' must be a number from 0 up, not {offset!r}")
    if reach is not None and offset + limit > reach:
        raise BadRequest(f"'offset' + 'limit' may reach at most {reach} entries back, "
                         f"not {offset + limit}")
    return limit, offset


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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
