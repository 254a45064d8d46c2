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

from ixd.errors import FrameTooLarge, IxError, ProtocolError, VersionMismatch

PROTOCOL_VERSION: Final = 1
#: the default limit on a frame's body, in bytes
MAX_FRAME: Final = 16 * 1024 * 1024
#: how deeply maps and lists may nest, the frame's own map counting as level 1
MAX_DEPTH: Final = 32

_HEADER: Final = struct.Struct(">I")


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


def _unpack(body: bytes) -> object:
    if not body:
        raise ProtocolError("empty frame: a frame must hold one msgpack map")
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True)
    except msgpack.ExtraData as exc:
        raise ProtocolError("frame body holds bytes after its msgpack object") from exc
    except msgpack.StackError as exc:
        raise ProtocolError(f"message nests deeper than {MAX_DEPTH} levels") from exc
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"string in frame is not valid UTF-8: {exc.reason}") from exc
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"frame body is not valid msgpack: {exc}") from exc


def decode_body(body: bytes) -> Message:
    """The message one frame body holds; `ProtocolError` says what is wrong with it."""
    obj = _unpack(body)
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

    def __init__(self, role: Role, max_frame: int = MAX_FRAME) -> None:
        if role not in _RECEIVES:
            raise ValueError(f"role must be 'client' or 'server', not {role!r}")
        self.role: Role = role
        self.max_frame = max_frame
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
        body = bytes(self._buffer[_HEADER.size : end])
        del self._buffer[:end]
        return decode_body(body)

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
