"""The sans-IO wire protocol: framing, message schemas, and the handshake rules."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ixd.wire.errors import (
    FrameTooLarge,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    UnknownOp,
    VersionMismatch,
    error_from_wire,
)
from ixd.wire.protocol import (
    CLOSED,
    MAX_DEPTH,
    MAX_FRAME,
    NEED_DATA,
    PROTOCOL_VERSION,
    Connection,
    Error,
    Event,
    Hello,
    Message,
    Request,
    Result,
    error_message,
)

if TYPE_CHECKING:
    from ixd.wire.protocol import Role

HELLO = Hello(version=PROTOCOL_VERSION, agent="test 0")
HELLO_WIRE: dict[Any, Any] = {"t": "hello", "version": PROTOCOL_VERSION, "agent": "test 0"}


def framed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def frame(wire: Any) -> bytes:
    return framed(msgpack.packb(wire))


def drain(conn: Connection) -> list[Message]:
    """Every message `conn` can deliver now; stops at NEED_DATA or CLOSED."""
    found: list[Message] = []
    while True:
        msg = conn.next_event()
        if msg is NEED_DATA or msg is CLOSED:
            return found
        found.append(msg)


def greeted(role: Role, **kwargs: Any) -> Connection:
    """A connection of `role` that has received the peer's hello."""
    conn = Connection(role, **kwargs)
    conn.receive_data(frame(HELLO_WIRE))
    assert conn.next_event() == HELLO
    return conn


def receive(role: Role, data: bytes) -> list[Message]:
    conn = greeted(role)
    conn.receive_data(data)
    return drain(conn)


# --- round trips ---------------------------------------------------------------------------

CLIENT_SENDS: list[Message] = [
    Request(id=1, op="mut", args={"realm": "alice", "patch": ["+bin/hello", {"opt": 1}]}),
    Request(id=2, op="ping", args={}),
]
SERVER_SENDS: list[Message] = [
    Event(id=1, kind="progress", data={"done": 3, "total": 7, "ratio": 0.5}),
    Event(id=1, kind="log", data={"line": "gcc -O2 …", "raw": b"\x00\xff"}),
    Result(id=1, value={"generation": 4, "nothing": None, "flag": True}),
    Result(id=2, value=[1, "two", 3.0]),
    Result(id=3, value=None),
    Error(id=2, code="E_UNKNOWN_OP", message="no op 'frob'"),
    Error(id=None, code="E_FRAME_TOO_LARGE", message="too big"),
]


def test_every_message_round_trips() -> None:
    for sender, receiver, messages in [
        ("client", "server", CLIENT_SENDS),
        ("server", "client", SERVER_SENDS),
    ]:
        out = Connection(sender)  # type: ignore[arg-type]
        inbox = Connection(receiver)  # type: ignore[arg-type]
        data = out.send(HELLO) + b"".join(out.send(msg) for msg in messages)
        inbox.receive_data(data)
        assert drain(inbox) == [HELLO, *messages]
        assert inbox.peer_hello == HELLO


def test_wire_format_is_length_then_one_map() -> None:
    conn = Connection("client")
    data = conn.send(Hello(version=1, agent="ixc 0.1"))
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    assert msgpack.unpackb(data[4:]) == {"t": "hello", "version": 1, "agent": "ixc 0.1"}
    data = conn.send(Request(id=7, op="ls", args={"realm": "alice"}))
    assert msgpack.unpackb(data[4:]) == {
        "t": "req",
        "id": 7,
        "op": "ls",
        "args": {"realm": "alice"},
    }


def test_error_message_reports_an_ix_error() -> None:
    msg = error_message(UnknownOp("no op 'frob'"), 5)
    assert msg == Error(id=5, code="E_UNKNOWN_OP", message="no op 'frob'")
    rebuilt = error_from_wire(msg.code, msg.message)
    assert type(rebuilt) is UnknownOp
    assert error_message(FrameTooLarge("big"), None).id is None


# --- feeding -------------------------------------------------------------------------------


def whole(data: bytes) -> Iterator[bytes]:
    yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


def chunks_of_5(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), 5):
        yield data[i : i + 5]


FEEDS = [whole, bytewise, chunks_of_5]
Feed = Callable[[bytes], Iterator[bytes]]


def feed_all(conn: Connection, data: bytes, feed: Feed) -> list[Message]:
    """Feed `data` piece by piece, collecting messages after each piece, then EOF."""
    found: list[Message] = []
    for piece in feed(data):
        conn.receive_data(piece)
        found.extend(drain(conn))
    conn.receive_data(b"")
    found.extend(drain(conn))
    return found


@pytest.mark.parametrize("feed", FEEDS)
def test_a_stream_decodes_however_it_is_split(feed: Feed) -> None:
    server = Connection("server")
    data = server.send(HELLO) + b"".join(server.send(msg) for msg in SERVER_SENDS)
    client = Connection("client")
    assert feed_all(client, data, feed) == [HELLO, *SERVER_SENDS]
    assert client.next_event() is CLOSED
    assert client.next_event() is CLOSED


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize(
    ("garbage", "match"),
    [
        (framed(b"\xc1"), "not valid msgpack"),
        (b"\xff\xff\xff\xff", "exceeds the limit"),
        (b"\x00\x00\x00\x02\x80\x80", "bytes after its msgpack object"),
        (b"\x00\x00\x00\x09junk", "truncated frame"),
        (b"jun", "truncated frame"),
    ],
)
def test_trailing_garbage_fails_after_the_valid_frame(
    feed: Feed, garbage: bytes, match: str
) -> None:
    conn = Connection("client")
    delivered: list[Message] = []

    def take_all() -> None:
        while (msg := conn.next_event()) is not NEED_DATA and msg is not CLOSED:
            delivered.append(msg)

    with pytest.raises(ProtocolError, match=match):
        for piece in feed(frame(HELLO_WIRE) + garbage):
            conn.receive_data(piece)
            take_all()
        conn.receive_data(b"")
        take_all()
    assert delivered == [HELLO]


def test_a_protocol_error_is_sticky() -> None:
    conn = greeted("server")
    conn.receive_data(frame([1, 2]))
    with pytest.raises(ProtocolError, match="must hold a msgpack map"):
        conn.next_event()
    conn.receive_data(frame({"t": "req", "id": 1, "op": "ls", "args": {}}))
    with pytest.raises(ProtocolError, match="must hold a msgpack map"):
        conn.next_event()
    with pytest.raises(ProtocolError, match="must hold a msgpack map"):
        conn.next_event()


def test_data_after_eof_is_refused() -> None:
    conn = Connection("server")
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED
    with pytest.raises(ProtocolError, match="after the end of the stream"):
        conn.receive_data(frame(HELLO_WIRE))


# --- frame sizes ---------------------------------------------------------------------------


def test_oversized_length_fails_before_the_body_arrives() -> None:
    conn = Connection("server", max_frame=1024)
    conn.receive_data(struct.pack(">I", 1025))
    with pytest.raises(FrameTooLarge, match="1025 bytes exceeds the limit of 1024"):
        conn.next_event()
    with pytest.raises(FrameTooLarge):
        conn.next_event()


def test_default_limit_is_16_mib() -> None:
    assert MAX_FRAME == 16 * 1024 * 1024
    conn = Connection("server")
    conn.receive_data(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(FrameTooLarge):
        conn.next_event()


def test_a_frame_of_exactly_the_limit_is_accepted() -> None:
    body = msgpack.packb(HELLO_WIRE)
    conn = Connection("server", max_frame=len(body))
    conn.receive_data(framed(body))
    assert conn.next_event() == HELLO
    conn = Connection("server", max_frame=len(body) - 1)
    conn.receive_data(framed(body))
    with pytest.raises(FrameTooLarge):
        conn.next_event()


def test_sending_an_oversized_message_fails_and_leaves_the_connection_usable() -> None:
    conn = Connection("server", max_frame=1000)
    conn.send(HELLO)
    with pytest.raises(FrameTooLarge, match="exceeds the limit of 1000"):
        conn.send(Result(id=1, value="x" * 1000))
    reply = error_message(FrameTooLarge("result too large"), 1)
    assert receive("client", conn.send(reply)) == [reply]


# --- truncation and EOF --------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 3, 4, 6])
def test_eof_mid_frame_is_a_truncated_frame(cut: int) -> None:
    conn = Connection("server")
    conn.receive_data(frame(HELLO_WIRE)[:cut])
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(ProtocolError, match="truncated frame"):
        conn.next_event()


def test_eof_between_frames_is_closed() -> None:
    conn = greeted("server")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED


# --- malformed bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "empty frame"),
        (msgpack.packb([1, 2]), "must hold a msgpack map, not list"),
        (msgpack.packb("hello"), "must hold a msgpack map, not str"),
        (msgpack.packb(7), "must hold a msgpack map, not int"),
        (msgpack.packb({"id": 1}), "no type field 't'"),
        (msgpack.packb({"t": "frobnicate"}), "unknown message type 'frobnicate'"),
        (msgpack.packb({"t": 3}), "unknown message type 3"),
        (msgpack.packb({**HELLO_WIRE, 1: 2}), "int is not allowed for map key"),
        (msgpack.packb({**HELLO_WIRE, b"k": 2}, use_bin_type=True), "map key b'k' is not"),
        (msgpack.packb(HELLO_WIRE) + b"\x00", "bytes after its msgpack object"),
        (b"\x81\xa1t\xa2\xff\xfe", "not valid UTF-8"),
        (b"\x81\xa2\xc3\x28\xa5hello", "not valid UTF-8"),
        (b"\x81\xa1t\xc1", "not valid msgpack"),
        (msgpack.packb({**HELLO_WIRE, "x": msgpack.ExtType(5, b"")}), "type ExtType"),
        (msgpack.packb({**HELLO_WIRE, "x": msgpack.Timestamp(0)}), "type Timestamp"),
    ],
)
def test_malformed_bodies_are_protocol_errors(body: bytes, match: str) -> None:
    conn = Connection("server")
    conn.receive_data(framed(body))
    with pytest.raises(ProtocolError, match=match):
        conn.next_event()


def nested(levels: int) -> dict[str, Any]:
    """`levels` maps, one inside the other."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def nested_lists(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_nesting_up_to_the_limit_is_accepted() -> None:
    # The frame's map is level 1 and args level 2, so args may hold MAX_DEPTH - 1 levels.
    for args in [nested(MAX_DEPTH - 1), {"a": nested_lists(MAX_DEPTH - 2)}]:
        wire = {"t": "req", "id": 1, "op": "x", "args": args}
        assert receive("server", frame(wire)) == [Request(id=1, op="x", args=args)]


@pytest.mark.parametrize("args", [nested(MAX_DEPTH), {"a": nested_lists(MAX_DEPTH - 1)}])
def test_nesting_deeper_than_the_limit_is_refused(args: dict[str, Any]) -> None:
    conn = greeted("server")
    conn.receive_data(frame({"t": "req", "id": 1, "op": "x", "args": args}))
    with pytest.raises(ProtocolError, match=f"deeper than {MAX_DEPTH} levels"):
        conn.next_event()


def test_nesting_beyond_msgpacks_own_stack_is_refused() -> None:
    body = b"\x84\xa1t\xa3req\xa2id\x01\xa2op\xa1x\xa4args" + b"\x81\xa1a" * 5000 + b"\x80"
    conn = greeted("server")
    conn.receive_data(framed(body))
    with pytest.raises(ProtocolError, match="deeper than"):
        conn.next_event()


def test_sending_what_the_peer_would_refuse_fails_locally() -> None:
    conn = Connection("client")
    conn.send(HELLO)
    with pytest.raises(ProtocolError, match="deeper than"):
        conn.send(Request(id=1, op="x", args=nested(MAX_DEPTH)))
    with pytest.raises(ProtocolError, match="64 bits"):
        conn.send(Request(id=1, op="x", args={"n": 2**64}))
    with pytest.raises(ProtocolError, match="type set"):
        conn.send(Request(id=1, op="x", args={"s": {1}}))


# --- message schemas -----------------------------------------------------------------------

REQ = {"t": "req", "id": 1, "op": "ls", "args": {}}
EVENT = {"t": "event", "id": 1, "kind": "log", "data": {}}
RESULT = {"t": "result", "id": 1, "value": None}
ERROR = {"t": "error", "id": 1, "code": "E_IX", "message": "no"}


@pytest.mark.parametrize(
    ("role", "wire", "field"),
    [
        ("server", {**REQ, "id": "1"}, "id"),
        ("server", {**REQ, "id": True}, "id"),
        ("server", {**REQ, "id": 1.0}, "id"),
        ("server", {**REQ, "op": 3}, "op"),
        ("server", {**REQ, "op": b"ls"}, "op"),
        ("server", {**REQ, "args": [1]}, "args"),
        ("server", {**REQ, "args": None}, "args"),
        ("client", {**EVENT, "id": None}, "id"),
        ("client", {**EVENT, "kind": None}, "kind"),
        ("client", {**EVENT, "data": "x"}, "data"),
        ("client", {**RESULT, "id": None}, "id"),
        ("client", {**ERROR, "id": "1"}, "id"),
        ("client", {**ERROR, "code": 1}, "code"),
        ("client", {**ERROR, "message": ["no"]}, "message"),
    ],
)
def test_wrong_field_types_name_the_field(role: Role, wire: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError, match=f"{wire['t']} message: field '{field}' must be"):
        receive(role, frame(wire))


@pytest.mark.parametrize(
    ("role", "wire", "field"),
    [
        ("server", REQ, "id"),
        ("server", REQ, "op"),
        ("server", REQ, "args"),
        ("client", EVENT, "data"),
        ("client", RESULT, "value"),
        ("client", ERROR, "id"),
        ("client", ERROR, "code"),
    ],
)
def test_missing_fields_name_the_field(role: Role, wire: dict[str, Any], field: str) -> None:
    wire = {key: value for key, value in wire.items() if key != field}
    with pytest.raises(ProtocolError, match=f"field '{field}' is missing"):
        receive(role, frame(wire))


def test_hello_fields_are_checked() -> None:
    conn = Connection("server")
    conn.receive_data(frame({**HELLO_WIRE, "version": "1"}))
    with pytest.raises(ProtocolError, match="hello message: field 'version' must be an integer"):
        conn.next_event()


def test_unknown_fields_are_refused_except_in_hello() -> None:
    with pytest.raises(ProtocolError, match="unknown field"):
        receive("server", frame({**REQ, "user": "root"}))
    conn = Connection("server")
    conn.receive_data(frame({**HELLO_WIRE, "features": ["zstd"]}))
    assert conn.next_event() == HELLO


def test_messages_are_validated_when_built() -> None:
    with pytest.raises(ProtocolError, match="req message: field 'args'"):
        Request(id=1, op="ls", args=None)  # type: ignore[arg-type]


# --- handshake and roles -------------------------------------------------------------------


def test_a_request_before_hello_is_refused() -> None:
    conn = Connection("server")
    conn.receive_data(frame(REQ))
    with pytest.raises(ProtocolError, match="expected hello as the first message, got req"):
        conn.next_event()


def test_version_mismatch_names_both_versions() -> None:
    conn = Connection("client")
    conn.receive_data(frame({**HELLO_WIRE, "version": PROTOCOL_VERSION + 1}))
    with pytest.raises(VersionMismatch) as caught:
        conn.next_event()
    assert f"version {PROTOCOL_VERSION + 1}" in caught.value.message
    assert f"version {PROTOCOL_VERSION};" in caught.value.message
    with pytest.raises(VersionMismatch):
        conn.next_event()


def test_a_second_hello_is_refused() -> None:
    with pytest.raises(ProtocolError, match="hello received twice"):
        receive("server", frame(HELLO_WIRE))


@pytest.mark.parametrize(
    ("role", "wire"),
    [("client", REQ), ("server", EVENT), ("server", RESULT), ("server", ERROR)],
)
def test_each_role_receives_only_its_messages(role: Role, wire: dict[str, Any]) -> None:
    # the peer's fault (as h11 tells them apart)
    with pytest.raises(RemoteProtocolError, match=f"a {role} does not accept {wire['t']}"):
        receive(role, frame(wire))


def test_send_follows_the_same_rules() -> None:
    # this side's fault: the same wire code, another class
    client = Connection("client")
    with pytest.raises(LocalProtocolError, match="must send hello first"):
        client.send(Request(id=1, op="ls", args={}))
    client.send(HELLO)
    with pytest.raises(LocalProtocolError, match="only once"):
        client.send(HELLO)
    with pytest.raises(LocalProtocolError, match="a client cannot send result"):
        client.send(Result(id=1, value=None))
    with pytest.raises(LocalProtocolError, match="cannot be sent") as info:
        client.send(Request(id=2, op="ls", args={"x": object()}))
    assert info.value.code == "E_PROTOCOL"
    server = Connection("server")
    server.send(HELLO)
    with pytest.raises(ProtocolError, match="a server cannot send req"):
        server.send(Request(id=1, op="ls", args={}))


def test_role_is_checked() -> None:
    with pytest.raises(ValueError, match="role"):
        Connection("daemon")  # type: ignore[arg-type]


# --- arbitrary input -----------------------------------------------------------------------

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
maps = st.fixed_dictionaries(
    {"t": st.sampled_from(["hello", "req", "event", "result", "error", "x"])},
    optional={
        name: plain for name in ["id", "op", "args", "kind", "data", "value", "code", "message"]
    },
)
bodies = st.binary() | plain.map(msgpack.packb) | maps.map(msgpack.packb)
streams = (
    st.binary()
    | st.lists(bodies.map(framed), max_size=4).map(b"".join)
    | st.lists(st.binary() | bodies.map(framed), max_size=4).map(b"".join)
)


@given(role=st.sampled_from(["client", "server"]), hello=st.booleans(), data=streams)
def test_arbitrary_bytes_decode_or_raise_protocol_error(
    role: Role, hello: bool, data: bytes
) -> None:
    conn = Connection(role, max_frame=4096)
    conn.receive_data((frame(HELLO_WIRE) if hello else b"") + data)
    conn.receive_data(b"")
    try:
        while conn.next_event() is not CLOSED:
            pass
    except ProtocolError:
        with pytest.raises(ProtocolError):
            conn.next_event()
