"""The ixd wire core, without I/O (in the manner of h11): frames, messages, one connection.

A frame is a 4-byte big-endian length followed by exactly one msgpack map. Both sides send a
`Hello` first; then the client sends `Request`s and the daemon answers each with any number
of `Event`s and one final `Result` or `Error`.

`Connection` turns bytes into messages (`receive_data`, `next_event`) and messages into bytes
(`send`). It owns no socket, so the daemon (trio) and `ixc` (blocking) share it, and tests
drive it with plain bytes. `ixc` imports this module on its way to the socket, so it is kept
import-light on purpose: at run time it imports only `sys`, `ixd.wire.errors`,
`ixd.wire.packing` and `ixd.wire.record` — no msgpack, dataclasses, typing, enum or re
(messages are `Record`s, the one record style of the wire and the model; types are for mypy
only). A client's connection packs its frames and unpacks small ones with `ixd.wire.packing`
(plain Python, the same bytes); msgpack is imported for a large reply and by the daemon.
What only the daemon needs (request size checks) is in `ixd.wire.protocol`, which re-exports
everything here.
One module though long, for that reason: it is the whole of the wire `ixc` loads
(tests/test_client_imports.py fixes the list), codec, messages and `Connection` together.
"""

from __future__ import annotations

import sys

from ixd.wire import packing
from ixd.wire.errors import (
    FrameLimit,
    FrameTooLarge,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    VersionMismatch,
)
from ixd.wire.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, Final, Literal, TypeAlias

    #: the two ends of a connection (for mypy only: no `typing` at run time)
    Role: TypeAlias = Literal["client", "server"]

#: 2: ops' arguments checked by one contract (`ixd.wire.ops`), unknown arguments refused;
#: `log` answers without the log (it comes in `log-text` events); a held `run` never answers
PROTOCOL_VERSION: Final = 2
#: the default limit on a frame's body, in bytes
MAX_FRAME: Final = 16 * 1024 * 1024
#: how deeply maps and lists may nest, the frame's own map counting as level 1
MAX_DEPTH: Final = 32

#: bytes in a frame's length header (big-endian)
HEADER_SIZE: Final = 4
#: the largest body a client unpacks with `ixd.wire.packing`: plain Python reads a reply at
#: ~40 us per KiB, so 64 KiB take about half of msgpack's import (~5 ms); beyond it, msgpack's
#: C reader pays for its import
PLAIN_UNPACK_MAX: Final = 64 * 1024


class DecodeLimits:
    """What one received frame may hold, checked before any of it becomes Python objects.

    The frame limit bounds bytes, not objects: 16 MiB of one-byte empty maps is 16 million
    dicts (1.2 GB, seconds of decoding with every other client waiting). So a frame is first
    scanned (counting, building nothing) and refused with `FrameLimit` when it holds more
    values in all than `max_elements`, or one list, map, string, binary or extension longer
    than its limit; `MAX_DEPTH` bounds nesting in the same pass. msgpack's own `max_*_len`
    limits are then set from the same numbers.
    """

    __slots__ = ("max_array_len", "max_bin_len", "max_elements", "max_ext_len",
                 "max_map_len", "max_str_len")

    def __init__(self, *, max_elements: int, max_array_len: int, max_map_len: int,
                 max_str_len: int, max_bin_len: int, max_ext_len: int) -> None:
        #: values in the whole frame: every map, list, key and scalar counts as one
        self.max_elements = max_elements
        #: items of one list
        self.max_array_len = max_array_len
        #: entries (key-value pairs) of one map
        self.max_map_len = max_map_len
        #: bytes of one string
        self.max_str_len = max_str_len
        #: bytes of one binary
        self.max_bin_len = max_bin_len
        #: bytes of one extension value (ix sends none; msgpack timestamps are at most 12)
        self.max_ext_len = max_ext_len

    def __repr__(self) -> str:
        return f"DecodeLimits({', '.join(f'{n}={getattr(self, n)}' for n in self.__slots__)})"

    def __eq__(self, other: object) -> bool:
        return type(other) is DecodeLimits and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in self.__slots__))


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


class Sentinel:
    """What `next_event()` returns when there is no message: `NEED_DATA` or `CLOSED`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: `next_event()`: feed more bytes with `receive_data()` first
NEED_DATA: Final = Sentinel("NEED_DATA")
#: `next_event()`: the peer ended the stream cleanly, between frames
CLOSED: Final = Sentinel("CLOSED")


# --- messages ------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(key, str) for key in value)


#: what a field's wire kind accepts, and how an error message names it, by the field's
#: annotation
_KINDS: Final[dict[str, tuple[Callable[[object], bool], str]]] = {
    "int": (_is_int, "an integer"),
    "int | None": (lambda value: value is None or _is_int(value), "an integer or nil"),
    "str": (lambda value: isinstance(value, str), "a string"),
    "dict[str, Any]": (_is_str_map, "a map with string keys"),
    "Any": (lambda value: True, "anything"),
}


class _Message(Record):
    """An immutable message (a `Record`, as the model's values are): its fields are its
    annotations, in wire order, each checked against the wire kind its annotation names
    (`_KINDS`) when the message is built."""

    TYPE: ClassVar[str]
    #: each field with its check and how an error names what it must be
    _checks: ClassVar[tuple[tuple[str, Callable[[object], bool], str], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        annotations = _annotations(cls)
        cls._checks = tuple((name, *_KINDS[annotations[name]]) for name in cls._fields)

    def __post_init__(self) -> None:
        for name, accepts, what in self._checks:
            value = getattr(self, name)
            if not accepts(value):
                raise ProtocolError(
                    f"{self.TYPE} message: field {name!r} must be {what},"
                    f" not {type(value).__name__} {value!r:.60}"
                )

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return cls._fields

    def values(self) -> tuple[Any, ...]:
        return type(self)._values(self)


def _annotations(cls: type) -> dict[str, str]:
    """The field annotations of a message class, as written (strings: see the
    `__future__` import)."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        found.update(klass.__dict__.get("__annotations__", {}))  # noqa: RUF063
    return found


class Hello(_Message):
    """The first message each way: which protocol version and program the sender is."""

    TYPE = "hello"
    version: int
    agent: str


class Request(_Message):
    """Client → daemon: run `op` with `args`; the daemon's replies carry the same `id`."""

    TYPE = "req"
    id: int
    op: str
    args: dict[str, Any]


class Event(_Message):
    """Daemon → client: progress or a log line for request `id`, before its final reply."""

    TYPE = "event"
    id: int
    kind: str
    data: dict[str, Any]


class Result(_Message):
    """Daemon → client: the final, successful answer to request `id`."""

    TYPE = "result"
    id: int
    value: Any


class Error(_Message):
    """Daemon → client: request `id` failed; `id` is None when the whole connection did."""

    TYPE = "error"
    id: int | None
    code: str
    message: str


Message = Hello | Request | Event | Result | Error

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.TYPE: cls for cls in (Hello, Request, Event, Result, Error)
}


# --- bodies: one msgpack map <-> one message ------------------------------------------------

_SCALARS: Final = (str, bytes, bool, float, type(None))
#: the exact types of `_SCALARS`: most values of a frame are one of them, told by one set
#: lookup (the check walks every value of every frame both ways)
_LEAF_TYPES: Final = frozenset(_SCALARS)


def _check_plain(value: object, error: type[ProtocolError], depth: int = 1) -> None:
    """Refuse what the other side could not read back: deep nesting, non-string keys, types
    msgpack carries only as extensions, integers msgpack cannot hold. `error`: whose fault
    it is (what we were given to send, or what the peer sent)."""
    kind = type(value)
    if kind in _LEAF_TYPES:
        return
    if kind is int:
        _check_int(value, error)  # type: ignore[arg-type]
    elif isinstance(value, dict):
        if depth > MAX_DEPTH:
            raise error(f"message nests deeper than {MAX_DEPTH} levels")
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise error(f"map key {key!r:.60} is not a string")
            if type(item) not in _LEAF_TYPES:
                _check_plain(item, error, depth + 1)
    elif isinstance(value, list | tuple):
        msgpack = sys.modules.get("msgpack")  # no ExtType can exist before msgpack is imported
        if msgpack is not None and isinstance(value, msgpack.ExtType):
            # a tuple, but not one that packs as an array
            raise error("values of type ExtType cannot be sent")
        if depth > MAX_DEPTH:
            raise error(f"message nests deeper than {MAX_DEPTH} levels")
        for item in value:
            if type(item) not in _LEAF_TYPES:
                _check_plain(item, error, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        _check_int(value, error)
    elif not isinstance(value, _SCALARS):
        raise error(f"values of type {type(value).__name__} cannot be sent")


def _check_int(value: int, error: type[ProtocolError]) -> None:
    if not -(2**63) <= value < 2**64:
        raise error(f"integer {value} does not fit in 64 bits")


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
            raise RemoteProtocolError(f"message nests deeper than {MAX_DEPTH} levels")
        left = count


def _too_long(what: str, length: int, limit: int) -> str:
    article = "an" if what[0] in "aeiou" else "a"
    return f"{article} {what} of {length} bytes exceeds the limit of {limit} bytes"


def _unpack(body: bytes, limits: DecodeLimits | None = None, plain: bool = False) -> object:
    if not body:
        raise RemoteProtocolError("empty frame: a frame must hold one msgpack map")
    if limits is not None:
        check_limits(body, limits)
        if plain and len(body) <= PLAIN_UNPACK_MAX:
            return packing.unpackb(body)  # after the scan: it bounds what this builds
    import msgpack

    try:
        if limits is None:
            return msgpack.unpackb(body, raw=False, strict_map_key=True)
        return msgpack.unpackb(
            body, raw=False, strict_map_key=True, max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len, max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=limits.max_ext_len + 1)  # msgpack counts an ext's type byte too
    except msgpack.ExtraData as exc:
        raise RemoteProtocolError("frame body holds bytes after its msgpack object") from exc
    except msgpack.StackError as exc:
        raise RemoteProtocolError(f"message nests deeper than {MAX_DEPTH} levels") from exc
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"string in frame is not valid UTF-8: {exc.reason}") from exc
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"frame body is not valid msgpack: {exc}") from exc


def decode_body(body: bytes, limits: DecodeLimits | None = None, plain: bool = False
                ) -> Message:
    """The message one frame body holds; `ProtocolError` says what is wrong with it
    (`FrameLimit` if it breaks `limits`; without limits, only the frame size bounds it).
    `plain`: unpack a body within `limits` and `PLAIN_UNPACK_MAX` with `ixd.wire.packing`
    (no msgpack import)."""
    obj = _unpack(body, limits, plain)
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"frame must hold a msgpack map, not {type(obj).__name__}")
    _check_plain(obj, RemoteProtocolError)
    if "t" not in obj:
        raise RemoteProtocolError("message has no type field 't'")
    cls = MESSAGE_TYPES.get(obj["t"]) if isinstance(obj["t"], str) else None
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {obj['t']!r:.60}")
    names = cls.fields()
    for name in names:
        if name not in obj:
            raise RemoteProtocolError(f"{cls.TYPE} message: field {name!r} is missing")
    # A later protocol version may add to its hello; the version check must still be reached.
    unknown = sorted(set(obj) - set(names) - {"t"})
    if unknown and cls is not Hello:
        raise RemoteProtocolError(f"{cls.TYPE} message: unknown field(s) {', '.join(unknown)}")
    return cls(*(obj[name] for name in names))


def encode_body(msg: Message, plain: bool = False) -> bytes:
    """The msgpack body of `msg`; `ProtocolError` if it holds what the peer would refuse.
    `plain`: packed by `ixd.wire.packing` (the same bytes, no msgpack import)."""
    wire = {"t": msg.TYPE, **dict(zip(msg.fields(), msg.values(), strict=True))}
    _check_plain(wire, LocalProtocolError)
    if plain:
        return packing.packb(wire)
    import msgpack

    body: bytes = msgpack.packb(wire, use_bin_type=True)
    return body


# --- the connection: framing and state rules ------------------------------------------------

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
    call; the caller sends `ixd.wire.protocol.error_message(exc, None)` if it can and closes
    the stream.
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
        #: frames packed and small ones unpacked in plain Python: a client's, which would
        #: otherwise pay msgpack's import before its first byte (`ixd.wire.packing`)
        self.plain = role == "client"
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

    def next_event(self) -> Message | Sentinel:
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
            raise LocalProtocolError(f"a {self.role} must send hello first, not {msg.TYPE}")
        if self.hello_sent and isinstance(msg, Hello):
            raise LocalProtocolError("hello may be sent only once")
        if not isinstance(msg, (Hello, *_SENDS[self.role])):
            raise LocalProtocolError(f"a {self.role} cannot send {msg.TYPE} messages")
        body = encode_body(msg, self.plain)
        if len(body) > self.max_frame:
            raise FrameTooLarge(
                f"{msg.TYPE} message of {len(body)} bytes exceeds the limit of"
                f" {self.max_frame} bytes"
            )
        self.hello_sent = True
        return len(body).to_bytes(HEADER_SIZE, "big") + body

    def _next_frame(self) -> Message | Sentinel:
        if len(self._buffer) < HEADER_SIZE:
            return self._short_read()
        length = int.from_bytes(self._buffer[:HEADER_SIZE], "big")
        if length > self.max_frame:
            raise FrameTooLarge(
                f"frame of {length} bytes exceeds the limit of {self.max_frame} bytes"
            )
        end = HEADER_SIZE + length
        if len(self._buffer) < end:
            return self._short_read()
        with memoryview(self._buffer) as view:
            body = bytes(view[HEADER_SIZE:end])  # one copy, not two
        del self._buffer[:end]
        return decode_body(body, self.limits, self.plain)

    def _short_read(self) -> Sentinel:
        if not self._eof:
            return NEED_DATA
        if self._buffer:
            raise RemoteProtocolError(
                f"truncated frame: the stream ended {len(self._buffer)} bytes into a frame"
            )
        return CLOSED

    def _check_received(self, msg: Message) -> None:
        if self.peer_hello is None:
            if not isinstance(msg, Hello):
                raise RemoteProtocolError(f"expected hello as the first message, got {msg.TYPE}")
            if msg.version != PROTOCOL_VERSION:
                raise VersionMismatch(
                    f"protocol version mismatch: the peer ({msg.agent}) speaks version"
                    f" {msg.version}, this side speaks version {PROTOCOL_VERSION};"
                    " upgrade the older of ixc and ixd"
                )
            self.peer_hello = msg
        elif isinstance(msg, Hello):
            raise RemoteProtocolError("hello received twice")
        elif not isinstance(msg, _RECEIVES[self.role]):
            raise RemoteProtocolError(f"a {self.role} does not accept {msg.TYPE} messages")
