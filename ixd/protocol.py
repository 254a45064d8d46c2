"""The ixd wire protocol, without I/O (in the manner of h11).

A frame is a 4-byte big-endian length followed by exactly one msgpack map. Both sides send a
`Hello` first; then the client sends `Request`s and the daemon answers each with any number
of `Event`s and one final `Result` or `Error`.

`Connection` turns bytes into messages (`receive_data`, `next_event`) and messages into bytes
(`send`). It owns no socket, so the daemon (trio) and `ixc` (blocking) share it, and tests
drive it with plain bytes. This module imports only the standard library, msgpack and
`ixd.errors`: `ixc` imports it on its way to the socket and must stay light.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, Literal, TypeAlias

import msgpack

from ixd.errors import (
    BadName,
    BadRequest,
    FrameLimit,
    FrameTooLarge,
    IxError,
    ProtocolError,
    VersionMismatch,
)

PROTOCOL_VERSION: Final = 1
#: the default limit on a frame's body, in bytes
MAX_FRAME: Final = 16 * 1024 * 1024
#: how deeply maps and lists may nest, the frame's own map counting as level 1
MAX_DEPTH: Final = 32

_HEADER: Final = struct.Struct(">I")


@dataclass(frozen=True)
class DecodeLimits:
    """What one received frame may hold, checked before any of it becomes Python objects.

    The frame limit bounds bytes, not objects: 16 MiB of one-byte empty maps is 16 million
    dicts (1.2 GB, seconds of decoding with every other client waiting). So a frame is first
    scanned (counting, building nothing) and refused with `FrameLimit` when it holds more
    values in all than `max_elements`, or one list, map, string, binary or extension longer
    than its limit; `MAX_DEPTH` bounds nesting in the same pass. msgpack's own `max_*_len`
    limits are then set from the same numbers.
    """

    #: values in the whole frame: every map, list, key and scalar counts as one
    max_elements: int
    #: items of one list
    max_array_len: int
    #: entries (key-value pairs) of one map
    max_map_len: int
    #: bytes of one string
    max_str_len: int
    #: bytes of one binary
    max_bin_len: int
    #: bytes of one extension value (ix sends none; msgpack timestamps are at most 12)
    max_ext_len: int


#: Limits on what the daemon accepts from a client. A real request is small: at most
#: `MAX_SELECTORS` (4,096) selectors or realm operations of a few flags each, about 50,000
#: values at worst; one flags map holds a handful of entries. Strings stay bounded by the
#: frame only (a string costs its length, nothing per object), so an over-long selector
#: still gets its own precise error from the daemon.
REQUEST_LIMITS: Final = DecodeLimits(
    max_elements=1 << 18,  # 262,144
    max_array_len=8192,  # twice MAX_SELECTORS, so that limit gets its own BadRequest
    max_map_len=512,
    max_str_len=MAX_FRAME,
    max_bin_len=1 << 20,
    max_ext_len=16,
)
#: Limits on what `ixc` accepts from the daemon: replies are bigger (plans, pages of build
#: history) but still bounded, so a stray socket cannot make `ixc` allocate without end.
REPLY_LIMITS: Final = DecodeLimits(
    max_elements=1 << 22,  # 4,194,304
    max_array_len=1 << 20,
    max_map_len=1 << 16,
    max_str_len=MAX_FRAME,
    max_bin_len=MAX_FRAME,
    max_ext_len=16,
)
#: the limits a connection applies to what it receives, by its role
_LIMITS: Final[dict[str, DecodeLimits]] = {"server": REQUEST_LIMITS, "client": REPLY_LIMITS}

#: at most this many selectors in one request's `packages`, or realm operations in all of
#: its `patches`
MAX_SELECTORS: Final = 4096
#: at most this many flags set in all of one request's `patches`
MAX_FLAGS: Final = 4 * MAX_SELECTORS
#: at most this much text (characters) in one request's selectors, flag names and values
MAX_SELECTOR_TEXT: Final = 1 << 20
#: one selector longer than this is refused as a bad name before anything parses it
MAX_SELECTOR_LEN: Final = 64 * 1024


class Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"
    CLOSED = "CLOSED"


#: `next_event()`: feed more bytes with `receive_data()` first
NEED_DATA: Final = Sentinel.NEED_DATA
#: `next_event()`: the peer ended the stream cleanly, between frames
CLOSED: Final = Sentinel.CLOSED


# --- messages ------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(key, str) for key in value)


#: what a field's wire kind accepts, and how an error message names it
_KINDS: Final[dict[str, tuple[Callable[[object], bool], str]]] = {
    "int": (_is_int, "an integer"),
    "int?": (lambda value: value is None or _is_int(value), "an integer or nil"),
    "str": (lambda value: isinstance(value, str), "a string"),
    "map": (_is_str_map, "a map with string keys"),
    "any": (lambda value: True, "anything"),
}


class _Message:
    """Validates the fields of every message against its `_SCHEMA` when it is built."""

    TYPE: ClassVar[str]
    _SCHEMA: ClassVar[dict[str, str]]

    def __post_init__(self) -> None:
        for name, kind in self._SCHEMA.items():
            value = getattr(self, name)
            accepts, what = _KINDS[kind]
            if not accepts(value):
                raise ProtocolError(
                    f"{self.TYPE} message: field {name!r} must be {what},"
                    f" not {type(value).__name__} {value!r:.60}"
                )


@dataclass(frozen=True)
class Hello(_Message):
    """The first message each way: which protocol version and program the sender is."""

    version: int
    agent: str
    TYPE: ClassVar[str] = "hello"
    _SCHEMA: ClassVar[dict[str, str]] = {"version": "int", "agent": "str"}


@dataclass(frozen=True)
class Request(_Message):
    """Client → daemon: run `op` with `args`; the daemon's replies carry the same `id`."""

    id: int
    op: str
    args: dict[str, Any]
    TYPE: ClassVar[str] = "req"
    _SCHEMA: ClassVar[dict[str, str]] = {"id": "int", "op": "str", "args": "map"}


@dataclass(frozen=True)
class Event(_Message):
    """Daemon → client: progress or a log line for request `id`, before its final reply."""

    id: int
    kind: str
    data: dict[str, Any]
    TYPE: ClassVar[str] = "event"
    _SCHEMA: ClassVar[dict[str, str]] = {"id": "int", "kind": "str", "data": "map"}


@dataclass(frozen=True)
class Result(_Message):
    """Daemon → client: the final, successful answer to request `id`."""

    id: int
    value: Any
    TYPE: ClassVar[str] = "result"
    _SCHEMA: ClassVar[dict[str, str]] = {"id": "int", "value": "any"}


@dataclass(frozen=True)
class Error(_Message):
    """Daemon → client: request `id` failed; `id` is None when the whole connection did."""

    id: int | None
    code: str
    message: str
    TYPE: ClassVar[str] = "error"
    _SCHEMA: ClassVar[dict[str, str]] = {"id": "int?", "code": "str", "message": "str"}


Message: TypeAlias = Hello | Request | Event | Result | Error

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.TYPE: cls for cls in (Hello, Request, Event, Result, Error)
}


def error_message(exc: IxError, id: int | None) -> Error:
    """The `Error` reply that reports `exc` for request `id` (None: the connection)."""
    return Error(id=id, code=exc.code, message=exc.message)


def check_request_size(args: dict[str, Any]) -> None:
    """Refuse (`BadRequest`, naming the limit) a request whose package list or realm patches
    are larger than any real one: more than MAX_SELECTORS selectors or operations, more than
    MAX_FLAGS flags, or more than MAX_SELECTOR_TEXT characters of selectors and flags in all.
    A single selector or flag longer than MAX_SELECTOR_LEN is a `BadName`. Malformed shapes
    are left to the op's own validation, which says what is wrong with them. The server
    checks this before it hands a request to the daemon."""
    packages = args.get("packages")
    if isinstance(packages, list):
        if len(packages) > MAX_SELECTORS:
            raise BadRequest(f"'packages' holds {len(packages)} selectors; a request may hold "
                             f"at most {MAX_SELECTORS}")
        _RequestText().add_all(packages)
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


# --- bodies: one msgpack map <-> one message ------------------------------------------------

_SCALARS: Final = (str, bytes, bool, float, type(None))


def _check_plain(value: object, depth: int = 1) -> None:
    """Refuse what the other side could not read back: deep nesting, non-string keys, types
    msgpack carries only as extensions, integers msgpack cannot hold."""
    if isinstance(value, msgpack.ExtType):  # a tuple, but not one that packs as an array
        raise ProtocolError("values of type ExtType cannot be sent")
    if isinstance(value, dict | list | tuple):
        if depth > MAX_DEPTH:
            raise ProtocolError(f"message nests deeper than {MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict) and not isinstance(key, str):
                raise ProtocolError(f"map key {key!r:.60} is not a string")
            _check_plain(item, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**64:
            raise ProtocolError(f"integer {value} does not fit in 64 bits")
    elif not isinstance(value, _SCALARS):
        raise ProtocolError(f"values of type {type(value).__name__} cannot be sent")


#: msgpack type bytes 0xc0-0xdf: (what, bytes before the payload, width of the length or
#: count field right after the type byte (0: a fixed size, given as the second number))
_TYPES: Final[dict[int, tuple[str, int, int]]] = {
    0xC0: ("scalar", 1, 0), 0xC2: ("scalar", 1, 0), 0xC3: ("scalar", 1, 0),
    0xC4: ("bin", 2, 1), 0xC5: ("bin", 3, 2), 0xC6: ("bin", 5, 4),
    0xC7: ("ext", 3, 1), 0xC8: ("ext", 4, 2), 0xC9: ("ext", 6, 4),
    0xCA: ("scalar", 5, 0), 0xCB: ("scalar", 9, 0),
    0xCC: ("scalar", 2, 0), 0xCD: ("scalar", 3, 0), 0xCE: ("scalar", 5, 0),
    0xCF: ("scalar", 9, 0),
    0xD0: ("scalar", 2, 0), 0xD1: ("scalar", 3, 0), 0xD2: ("scalar", 5, 0),
    0xD3: ("scalar", 9, 0),
    0xD4: ("fixext", 3, 0), 0xD5: ("fixext", 4, 0), 0xD6: ("fixext", 6, 0),
    0xD7: ("fixext", 10, 0), 0xD8: ("fixext", 18, 0),
    0xD9: ("str", 2, 1), 0xDA: ("str", 3, 2), 0xDB: ("str", 5, 4),
    0xDC: ("array", 3, 2), 0xDD: ("array", 5, 4),
    0xDE: ("map", 3, 2), 0xDF: ("map", 5, 4),
}


def check_limits(body: bytes, limits: DecodeLimits) -> None:
    """Refuse a body that holds more than `limits` allow, or nests deeper than MAX_DEPTH,
    without building any object: a loop over container headers and scalar sizes, which
    stops as soon as a limit is passed. Malformed msgpack is left for the decoder to
    report."""
    end = len(body)
    pos = 0
    values = 1
    left = 1  # values still to come in the innermost open container (first: the frame's)
    enclosing: list[int] = []  # the same for each container around it
    while True:
        while not left:
            if not enclosing:
                return
            left = enclosing.pop()
        if pos >= end:
            return  # truncated: the decoder says so
        left -= 1
        byte = body[pos]
        if byte < 0x80 or byte >= 0xE0:  # fixints
            pos += 1
            continue
        if byte < 0xA0:  # fixmap, fixarray
            kind, count = ("map" if byte < 0x90 else "array"), byte & 0x0F
            pos += 1
        elif byte < 0xC0:  # fixstr
            kind, count = "str", byte & 0x1F
            pos += 1 + count
        else:
            entry = _TYPES.get(byte)
            if entry is None:
                return  # 0xc1: never used; the decoder says so
            kind, head, width = entry
            if not width:
                if kind == "fixext" and head - 2 > limits.max_ext_len:
                    raise FrameLimit(_too_long("extension value", head - 2,
                                               limits.max_ext_len))
                pos += head
                continue
            count = int.from_bytes(body[pos + 1:pos + 1 + width], "big")
            pos += head
            if kind in ("str", "bin", "ext"):
                pos += count
        if kind == "str":
            if count > limits.max_str_len:
                raise FrameLimit(_too_long("string", count, limits.max_str_len))
            continue
        if kind in ("bin", "ext"):
            limit = limits.max_bin_len if kind == "bin" else limits.max_ext_len
            if count > limit:
                raise FrameLimit(_too_long("binary" if kind == "bin" else "extension value",
                                           count, limit))
            continue
        # a map or a list: its items are counted now, before any of them is read
        if kind == "map":
            if count > limits.max_map_len:
                raise FrameLimit(f"a map of {count} entries exceeds the limit of "
                                 f"{limits.max_map_len}")
            count *= 2
        elif count > limits.max_array_len:
            raise FrameLimit(f"a list of {count} items exceeds the limit of "
                             f"{limits.max_array_len}")
        values += count
        if values > limits.max_elements:
            raise FrameLimit(f"frame holds more than {limits.max_elements} values (every map,"
                             f" list, key and scalar counts), the limit for one frame")
        enclosing.append(left)
        if len(enclosing) > MAX_DEPTH:
            raise ProtocolError(f"message nests deeper than {MAX_DEPTH} levels")
        left = count


def _too_long(what: str, length: int, limit: int) -> str:
    article = "an" if what[0] in "aeiou" else "a"
    return f"{article} {what} of {length} bytes exceeds the limit of {limit} bytes"


def _unpack(body: bytes, limits: DecodeLimits | None = None) -> object:
    if not body:
        raise ProtocolError("empty frame: a frame must hold one msgpack map")
    if limits is not None:
        check_limits(body, limits)
    try:
        if limits is None:
            return msgpack.unpackb(body, raw=False, strict_map_key=True)
        return msgpack.unpackb(
            body, raw=False, strict_map_key=True, max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len, max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=limits.max_ext_len + 1)  # msgpack counts an ext's type byte too
    except msgpack.ExtraData as exc:
        raise ProtocolError("frame body holds bytes after its msgpack object") from exc
    except msgpack.StackError as exc:
        raise ProtocolError(f"message nests deeper than {MAX_DEPTH} levels") from exc
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"string in frame is not valid UTF-8: {exc.reason}") from exc
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"frame body is not valid msgpack: {exc}") from exc


def decode_body(body: bytes, limits: DecodeLimits | None = None) -> Message:
    """The message one frame body holds; `ProtocolError` says what is wrong with it
    (`FrameLimit` if it breaks `limits`; without limits, only the frame size bounds it)."""
    obj = _unpack(body, limits)
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame must hold a msgpack map, not {type(obj).__name__}")
    _check_plain(obj)
    if "t" not in obj:
        raise ProtocolError("message has no type field 't'")
    cls = MESSAGE_TYPES.get(obj["t"]) if isinstance(obj["t"], str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {obj['t']!r:.60}")
    names = [field.name for field in fields(cls)]
    for name in names:
        if name not in obj:
            raise ProtocolError(f"{cls.TYPE} message: field {name!r} is missing")
    # A later protocol version may add to its hello; the version check must still be reached.
    unknown = sorted(set(obj) - set(names) - {"t"})
    if unknown and cls is not Hello:
        raise ProtocolError(f"{cls.TYPE} message: unknown field(s) {', '.join(unknown)}")
    return cls(**{name: obj[name] for name in names})


def encode_body(msg: Message) -> bytes:
    """The msgpack body of `msg`; `ProtocolError` if it holds what the peer would refuse."""
    wire = {"t": msg.TYPE, **{field.name: getattr(msg, field.name) for field in fields(msg)}}
    _check_plain(wire)
    body: bytes = msgpack.packb(wire, use_bin_type=True)
    return body


# --- the connection: framing and state rules ------------------------------------------------

Role: TypeAlias = Literal["client", "server"]

#: which messages each role may receive and send once the hellos are exchanged
_RECEIVES: Final[dict[str, tuple[type[Message], ...]]] = {
    "client": (Event, Result, Error),
    "server": (Request,),
}
_SENDS: Final[dict[str, tuple[type[Message], ...]]] = {
    "client": _RECEIVES["server"],
    "server": _RECEIVES["client"],
}


class Connection:
    """One side of one ixd connection: bytes in, messages out; messages in, bytes out.

    Once the peer breaks the protocol, `next_event()` raises the same `ProtocolError` on every
    call; the caller sends `error_message(exc, None)` if it can and closes the stream.
    """

    def __init__(self, role: Role, max_frame: int = MAX_FRAME,
                 limits: DecodeLimits | None = None) -> None:
        if role not in _RECEIVES:
            raise ValueError(f"role must be 'client' or 'server', not {role!r}")
        self.role: Role = role
        self.max_frame = max_frame
        #: what a received frame may hold (by default: requests for a server, replies for
        #: a client)
        self.limits = limits or _LIMITS[role]
        #: the peer's hello, once received
        self.peer_hello: Hello | None = None
        self.hello_sent = False
        self._buffer = bytearray()
        self._eof = False
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into a message (part of a frame)."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; `b""` means the peer ended the stream."""
        if self._eof and data:
            self._error = ProtocolError("bytes received after the end of the stream")
            raise self._error
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self) -> Message | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        """The next complete message, `NEED_DATA`, or `CLOSED` after a clean end of stream."""
        if self._error is not None:
            raise type(self._error)(self._error.message)
        try:
            msg = self._next_frame()
            if isinstance(msg, Sentinel):
                return msg
            self._check_received(msg)
            return msg
        except ProtocolError as exc:
            self._error = exc
            raise

    def send(self, msg: Message) -> bytes:
        """The frame that carries `msg`; refuses what this role may not send now."""
        if not self.hello_sent and not isinstance(msg, Hello):
            raise ProtocolError(f"a {self.role} must send hello first, not {msg.TYPE}")
        if self.hello_sent and isinstance(msg, Hello):
            raise ProtocolError("hello may be sent only once")
        if not isinstance(msg, (Hello, *_SENDS[self.role])):
            raise ProtocolError(f"a {self.role} cannot send {msg.TYPE} messages")
        body = encode_body(msg)
        if len(body) > self.max_frame:
            raise FrameTooLarge(
                f"{msg.TYPE} message of {len(body)} bytes exceeds the limit of"
                f" {self.max_frame} bytes"
            )
        self.hello_sent = True
        return _HEADER.pack(len(body)) + body

    def _next_frame(self) -> Message | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        if len(self._buffer) < _HEADER.size:
            return self._short_read()
        (length,) = _HEADER.unpack_from(self._buffer)
        if length > self.max_frame:
            raise FrameTooLarge(
                f"frame of {length} bytes exceeds the limit of {self.max_frame} bytes"
            )
        end = _HEADER.size + length
        if len(self._buffer) < end:
            return self._short_read()
        with memoryview(self._buffer) as view:
            body = bytes(view[_HEADER.size : end])  # one copy, not two
        del self._buffer[:end]
        return decode_body(body, self.limits)

    def _short_read(self) -> Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        if not self._eof:
            return NEED_DATA
        if self._buffer:
            raise ProtocolError(
                f"truncated frame: the stream ended {len(self._buffer)} bytes into a frame"
            )
        return CLOSED

    def _check_received(self, msg: Message) -> None:
        if self.peer_hello is None:
            if not isinstance(msg, Hello):
                raise ProtocolError(f"expected hello as the first message, got {msg.TYPE}")
            if msg.version != PROTOCOL_VERSION:
                raise VersionMismatch(
                    f"protocol version mismatch: the peer ({msg.agent}) speaks version"
                    f" {msg.version}, this side speaks version {PROTOCOL_VERSION};"
                    " upgrade the older of ixc and ixd"
                )
            self.peer_hello = msg
        elif isinstance(msg, Hello):
            raise ProtocolError("hello received twice")
        elif not isinstance(msg, _RECEIVES[self.role]):
            raise ProtocolError(f"a {self.role} does not accept {msg.TYPE} messages")
