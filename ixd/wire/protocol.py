"""The ixd wire protocol: the light wire core (`ixd.wire`, re-exported here) plus what only
the daemon needs: request size checks.

A frame is a 4-byte big-endian length followed by exactly one msgpack map. Both sides send a
`Hello` first; then the client sends `Request`s and the daemon answers each with any number
of `Event`s and one final `Result` or `Error` (see `ixd.wire`). `ixc` imports `ixd.wire`
only; the daemon and the tests may import this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ixd.wire.errors import BadName, BadRequest, IxError
from ixd.wire.frames import (
    CLOSED,
    MAX_DEPTH,
    MAX_FRAME,
    MESSAGE_TYPES,
    NEED_DATA,
    PROTOCOL_VERSION,
    REPLY_LIMITS,
    REQUEST_LIMITS,
    Connection,
    DecodeLimits,
    Error,
    Event,
    Hello,
    Message,
    Request,
    Result,
    Sentinel,
    check_limits,
    decode_body,
    encode_body,
)

__all__ = [
    "CLOSED",
    "MAX_DEPTH",
    "MAX_FLAGS",
    "MAX_FRAME",
    "MAX_SELECTORS",
    "MAX_SELECTOR_LEN",
    "MAX_SELECTOR_TEXT",
    "MESSAGE_TYPES",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "REPLY_LIMITS",
    "REQUEST_LIMITS",
    "Connection",
    "DecodeLimits",
    "Error",
    "Event",
    "Hello",
    "Message",
    "Request",
    "Result",
    "Sentinel",
    "check_limits",
    "check_request_size",
    "decode_body",
    "encode_body",
    "error_message",
]

if TYPE_CHECKING:
    from ixd.wire.frames import Role as Role

#: at most this many selectors in one request's `packages`, or realm operations in all of
#: its `patches`
MAX_SELECTORS: Final = 4096
#: at most this many flags set in all of one request's `patches`
MAX_FLAGS: Final = 4 * MAX_SELECTORS
#: at most this many words of `ixc mut` in one request's `words` (a realm, a selector or a
#: flag each), below the frames' longest array (frames.REQUEST_LIMITS), so it is said here
MAX_WORDS: Final = MAX_SELECTORS * 3 // 2
#: at most this much text (characters) in one request's selectors, flag names and values
MAX_SELECTOR_TEXT: Final = 1 << 20
#: one selector longer than this is refused as a bad name before anything parses it
MAX_SELECTOR_LEN: Final = 64 * 1024



def error_message(exc: IxError, id: int | None) -> Error:
    """The `Error` reply that reports `exc` for request `id` (None: the connection)."""
    return Error(id=id, code=exc.code, message=exc.message)


def check_request_size(args: dict[str, Any]) -> None:
    """Refuse (`BadRequest`, naming the limit) a request whose package list, words or realm
    patches are larger than any real one: more than MAX_SELECTORS selectors or operations,
    MAX_WORDS words, MAX_FLAGS flags, or MAX_SELECTOR_TEXT characters of selectors, words
    and flags in all.
    A single selector or flag longer than MAX_SELECTOR_LEN is a `BadName`. Malformed shapes
    are left to the op's own validation, which says what is wrong with them. The server
    checks this before it hands a request to the daemon."""
    for key, what, most in (("packages", "selectors", MAX_SELECTORS),
                            ("words", "words", MAX_WORDS)):
        items = args.get(key)
        if isinstance(items, list):
            if len(items) > most:
                raise BadRequest(f"'{key}' holds {len(items)} {what}; a request may hold at "
                                 f"most {most}")
            _RequestText().add_all(items)
    patches = args.get("patches")
    if isinstance(patches, list):
        if len(patches) > MAX_SELECTORS:
            raise BadRequest(f"'patches' holds {len(patches)} realm patches; a request may "
                             f"hold at most {MAX_SELECTORS}")
        text = _RequestText()
        ops = flags = 0
        for patch in patches:
            patch_ops = patch.get("ops") if isinstance(patch, dict) else None
            if not isinstance(patch_ops, list):
                continue
            ops += len(patch_ops)
            if ops > MAX_SELECTORS:
                raise BadRequest(f"'patches' hold more than {MAX_SELECTORS} operations; a "
                                 f"request may hold at most {MAX_SELECTORS}")
            for op in patch_ops:
                if not isinstance(op, dict):
                    continue
                text.add_all([op.get("selector"), op.get("key"), op.get("value")])
                op_flags = op.get("flags")
                if isinstance(op_flags, dict):
                    flags += len(op_flags)
                    text.add_all([*op_flags.keys(), *op_flags.values()])
                flags += "key" in op
                if flags > MAX_FLAGS:
                    raise BadRequest(f"'patches' set more than {MAX_FLAGS} flags; a "
                                     f"request may set at most {MAX_FLAGS}")


class _RequestText:
    """Counts the selector and flag text of one request against MAX_SELECTOR_TEXT."""

    def __init__(self) -> None:
        self.total = 0

    def add_all(self, items: list[Any]) -> None:
        for item in items:
            if not isinstance(item, str):
                continue
            if len(item) > MAX_SELECTOR_LEN:
                raise BadName(f"selector or flag {item[:40]!r}... is {len(item)} characters "
                              f"long; the limit is {MAX_SELECTOR_LEN}")
            self.total += len(item)
            if self.total > MAX_SELECTOR_TEXT:
                raise BadRequest(f"the request's selectors and flags hold more than "
                                 f"{MAX_SELECTOR_TEXT} characters; the limit is "
                                 f"{MAX_SELECTOR_TEXT}")
