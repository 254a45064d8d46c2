"""`ixd.wire.packing`, the plain-Python msgpack `ixc` uses for its frames, against msgpack
itself: the same bytes out, the same values in, and every body one refuses the other refuses
too (the client's side of the wire must not accept what the daemon's would not, nor the
other way round)."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ixd.wire import frames, packing
from ixd.wire.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

_leaves = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats() | st.text(max_size=300) | st.binary(max_size=300))
_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=20)
                       | st.tuples(inner, inner)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=20),
                       max_leaves=60)

#: every length form of every sized type, and every width of integer, at its edges
EDGES: list[Any] = [
    0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
    "", "x" * 31, "x" * 32, "x" * 255, "x" * 256, "x" * 65535, "x" * 65536, "é" * 200,
    b"", b"x" * 255, b"x" * 256, b"x" * 65535, b"x" * 65536,
    [], [0] * 15, [0] * 16, [0] * 65535, [0] * 65536,
    {}, {str(n): n for n in range(15)}, {str(n): n for n in range(16)},
    {str(n): n for n in range(65536)},
    1.5, -0.0, math.inf, None, True, False,
]


def _reference(value: object) -> bytes:
    body: bytes = msgpack.packb(value, use_bin_type=True)
    return body


@pytest.mark.parametrize("value", EDGES, ids=lambda v: repr(v)[:24])
def test_each_form_packs_to_msgpack_bytes_and_back(value: Any) -> None:
    assert packing.packb(value) == _reference(value)
    assert packing.unpackb(_reference(value)) == value


@given(_values)
@example(float("nan"))
def test_any_frame_value_packs_to_the_bytes_msgpack_writes(value: Any) -> None:
    body = packing.packb(value)
    assert body == _reference(value)
    # read back as msgpack reads it (tuples come back as lists; nan compared by its bytes)
    assert _reference(packing.unpackb(body)) == _reference(
        msgpack.unpackb(body, raw=False, strict_map_key=True))


def _outcome(read: Any, body: bytes) -> Any:
    """What reading `body` as a frame's gives: its value in msgpack's bytes (nan-safe), or
    "refused" (by the reader, or by the frame check that follows it: extension values)."""
    try:
        value = read(body)
        frames._check_plain(value, RemoteProtocolError)
    except (ProtocolError, ValueError, TypeError, msgpack.UnpackException):
        return "refused"
    return _reference(value)


def _by_msgpack(body: bytes) -> object:
    return msgpack.unpackb(body, raw=False, strict_map_key=True)


@given(_values, st.data())
@example({"k": msgpack.ExtType(1, b"ab")}, None)
@example({1: 2}, None)
@example({b"k": "v"}, None)
@example(b"\xff" * 3, None)  # not UTF-8 once its bin marker becomes a str marker
def test_damaged_bodies_are_read_or_refused_as_msgpack_does(value: Any, data: Any) -> None:
    """A body cut short, with a byte changed, or with bytes after it: `packing` reads the
    same value msgpack reads, or refuses it as msgpack does."""
    body = bytearray(msgpack.packb(value, use_bin_type=True))
    if data is not None:
        damage = data.draw(st.sampled_from(["cut", "byte", "extra", "none"]))
        if damage == "cut" and len(body) > 1:
            del body[data.draw(st.integers(1, len(body) - 1)):]
        elif damage == "byte":
            body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
        elif damage == "extra":
            body += bytes(data.draw(st.binary(min_size=1, max_size=4)))
    elif isinstance(value, bytes):
        body[0] = 0xA0 | len(value)  # the binary's bytes read as a fixstr
    assert _outcome(packing.unpackb, bytes(body)) == _outcome(_by_msgpack, bytes(body))


@pytest.mark.parametrize(("body", "message"), [
    (b"\xc1", "byte 0xc1 starts no value"),
    (b"\x92\x01", "ends inside a value"),
    (b"\xdd\xff\xff\xff\xff", "ends inside a value"),  # a count no body could hold
    (b"\x01\x02", "bytes after its msgpack object"),
    (b"\xa2\xff\xfe", "not valid UTF-8"),
    (b"\x81\x01\x02", "int is not allowed for map key"),
    (b"\xd4\x01\x00", "extension types cannot be sent"),
])
def test_a_bad_body_is_refused_with_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        packing.unpackb(body)


def test_what_a_frame_cannot_carry_is_refused_when_packed() -> None:
    with pytest.raises(LocalProtocolError, match="type set cannot be sent"):
        packing.packb({"v": {1}})
    with pytest.raises(LocalProtocolError, match="does not fit in 64 bits"):
        packing.packb(2**64)


def test_a_client_reads_a_large_reply_with_msgpack_and_a_small_one_without() -> None:
    """Both ways give the same message; the large one is past `PLAIN_UNPACK_MAX`."""
    server = frames.Connection("server")
    client = frames.Connection("client")
    client.receive_data(server.send(frames.Hello(version=frames.PROTOCOL_VERSION,
                                                 agent="ixd test")))
    assert isinstance(client.next_event(), frames.Hello)
    for size in (10, frames.PLAIN_UNPACK_MAX * 2):
        value = {"rows": ["r" * 100] * (size // 100), "took": 0.25, "n": -(2**40)}
        client.receive_data(server.send(frames.Result(id=1, value=value)))
        got = client.next_event()
        assert isinstance(got, frames.Result) and got.value == value


def test_a_client_frame_is_the_frame_the_daemon_would_write() -> None:
    request = frames.Request(id=3, op="mut", args={"realm": "r", "ops": [["+", "bin/x", {}]],
                                                    "deadline": 1.5})
    assert frames.encode_body(request, plain=True) == frames.encode_body(request)
