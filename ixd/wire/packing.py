"""msgpack, as much of it as a frame holds, in plain Python: what `ixc` packs and unpacks its
frames with, so that a cheap command does not import msgpack.

Importing msgpack costs `ixc` about 5 ms (its package imports `datetime` and `collections`
for its extension types), a quarter of `ixc status` as a whole process. A frame holds only
maps with string keys, lists, strings, binaries, integers of at most 64 bits, floats, booleans
and nil (`ixd.wire.frames`), and a cheap command's frames are small, so `ixc` packs and
unpacks them here; `ixd.wire.frames` hands a large reply (a plan, a page of history) to
msgpack, where C speed pays for the import. What this module writes is byte for byte what
`msgpack.packb(value, use_bin_type=True)` writes, and it reads what
`msgpack.unpackb(body, raw=False, strict_map_key=True)` reads
(tests/test_wire_packing.py holds both to that on random values and random bytes).

Bounds are not checked here: `ixd.wire.frames.check_limits` has scanned the body (sizes,
counts, nesting) before it is unpacked. Imports nothing at run time but `ixd.wire.errors`:
`struct` only when a float is met.
"""

from __future__ import annotations

from ixd.wire.errors import LocalProtocolError, RemoteProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final


# --- packing --------------------------------------------------------------------------------


def packb(value: object) -> bytes:
    """`value` in msgpack, as `msgpack.packb(value, use_bin_type=True)` writes it."""
    out = bytearray()
    _pack(value, out)
    return bytes(out)


def _pack(value: object, out: bytearray) -> None:
    if value is None:
        out.append(0xC0)
    elif value is False:
        out.append(0xC2)
    elif value is True:
        out.append(0xC3)
    elif isinstance(value, int):
        _pack_int(value, out)
    elif isinstance(value, str):
        data = value.encode()
        _pack_length(len(data), out, 0xA0, 32, 0xD9, 0xDA, 0xDB)
        out += data
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        _pack_length(len(data), out, None, 0, 0xC4, 0xC5, 0xC6)
        out += data
    elif isinstance(value, dict):
        _pack_length(len(value), out, 0x80, 16, None, 0xDE, 0xDF)
        for key, item in value.items():
            _pack(key, out)
            _pack(item, out)
    elif isinstance(value, list | tuple):
        _pack_length(len(value), out, 0x90, 16, None, 0xDC, 0xDD)
        for item in value:
            _pack(item, out)
    elif isinstance(value, float):
        import struct

        out.append(0xCB)
        out += struct.pack(">d", value)
    else:
        raise LocalProtocolError(f"values of type {type(value).__name__} cannot be sent")


def _pack_int(value: int, out: bytearray) -> None:
    if 0 <= value < 0x80 or -32 <= value < 0:  # positive and negative fixint
        out += value.to_bytes(1, "big", signed=value < 0)
        return
    if value > 0:
        for marker, width in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)):
            if value < 1 << (8 * width):
                out.append(marker)
                out += value.to_bytes(width, "big")
                return
    else:
        for marker, width in ((0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
            if value >= -(1 << (8 * width - 1)):
                out.append(marker)
                out += value.to_bytes(width, "big", signed=True)
                return
    raise LocalProtocolError(f"integer {value} does not fit in 64 bits")


def _pack_length(length: int, out: bytearray, fixed: int | None, fixed_below: int,
                 marker8: int | None, marker16: int, marker32: int) -> None:
    """The header of a string, binary, list or map of `length` items or bytes: the fixed
    form below `fixed_below`, else the smallest of the 8-, 16- and 32-bit forms it has."""
    if fixed is not None and length < fixed_below:
        out.append(fixed | length)
    elif marker8 is not None and length < 0x100:
        out += bytes((marker8, length))
    elif length < 0x10000:
        out.append(marker16)
        out += length.to_bytes(2, "big")
    elif length < 0x100000000:
        out.append(marker32)
        out += length.to_bytes(4, "big")
    else:
        raise LocalProtocolError(f"a value of {length} items or bytes is too long to send")


# --- unpacking ------------------------------------------------------------------------------


def unpackb(body: bytes) -> object:
    """The one value `body` holds, as `msgpack.unpackb(body, raw=False,
    strict_map_key=True)` reads it; `RemoteProtocolError` names what is wrong with it."""
    try:
        value, end = _unpack(body, 0)
    except IndexError:
        raise _not_msgpack("the body ends inside a value") from None
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"string in frame is not valid UTF-8: {exc.reason}") from None
    except RecursionError:
        raise RemoteProtocolError("message nests too deeply") from None
    if end != len(body):
        raise RemoteProtocolError("frame body holds bytes after its msgpack object")
    return value


def _not_msgpack(why: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"frame body is not valid msgpack: {why}")


def _take(body: bytes, start: int, length: int) -> bytes:
    end = start + length
    if end > len(body):
        raise IndexError(end)
    return body[start:end]


def _number(body: bytes, start: int, width: int, signed: bool = False) -> int:
    return int.from_bytes(_take(body, start, width), "big", signed=signed)


def _unpack(body: bytes, pos: int) -> tuple[object, int]:
    """The value that starts at `pos`, and where the next one starts."""
    byte = body[pos]
    pos += 1
    if byte < 0x80:
        return byte, pos
    if byte >= 0xE0:
        return byte - 0x100, pos
    if byte < 0x90:
        return _unpack_map(body, pos, byte & 0x0F)
    if byte < 0xA0:
        return _unpack_list(body, pos, byte & 0x0F)
    if byte < 0xC0:
        length = byte & 0x1F
        return _take(body, pos, length).decode(), pos + length
    reader = _READERS.get(byte)
    if reader is None:
        if 0xC7 <= byte <= 0xC9 or 0xD4 <= byte <= 0xD8:
            raise RemoteProtocolError("values of msgpack's extension types cannot be sent")
        raise _not_msgpack(f"byte 0x{byte:02x} starts no value")
    return reader(body, pos)


def _unpack_map(body: bytes, pos: int, count: int) -> tuple[object, int]:
    result: dict[object, object] = {}
    for _ in range(count):
        key, pos = _unpack(body, pos)
        if type(key) is not str and type(key) is not bytes:
            raise _not_msgpack(f"{type(key).__name__} is not allowed for map key when "
                               "strict_map_key=True")
        result[key], pos = _unpack(body, pos)
    return result, pos


def _unpack_list(body: bytes, pos: int, count: int) -> tuple[object, int]:
    result: list[object] = []
    for _ in range(count):
        item, pos = _unpack(body, pos)
        result.append(item)
    return result, pos


def _sized(width: int, then: Callable[[bytes, int, int], tuple[object, int]]
           ) -> Callable[[bytes, int], tuple[object, int]]:
    """A reader of a value whose size (bytes or items) comes first, in `width` bytes."""
    return lambda body, pos: then(body, pos + width, _number(body, pos, width))


def _string(body: bytes, pos: int, length: int) -> tuple[object, int]:
    return _take(body, pos, length).decode(), pos + length


def _binary(body: bytes, pos: int, length: int) -> tuple[object, int]:
    return _take(body, pos, length), pos + length


def _integer(width: int, signed: bool) -> Callable[[bytes, int], tuple[object, int]]:
    return lambda body, pos: (_number(body, pos, width, signed), pos + width)


def _float(width: int) -> Callable[[bytes, int], tuple[object, int]]:
    def read(body: bytes, pos: int) -> tuple[object, int]:
        import struct

        (value,) = struct.unpack(">f" if width == 4 else ">d", _take(body, pos, width))
        return float(value), pos + width

    return read


#: how each type byte from 0xc0 on is read (the fixed forms below it are read inline)
_READERS: Final[dict[int, Callable[[bytes, int], tuple[object, int]]]] = {
    0xC0: lambda body, pos: (None, pos),
    0xC2: lambda body, pos: (False, pos),
    0xC3: lambda body, pos: (True, pos),
    0xC4: _sized(1, _binary), 0xC5: _sized(2, _binary), 0xC6: _sized(4, _binary),
    0xCA: _float(4), 0xCB: _float(8),
    0xCC: _integer(1, False), 0xCD: _integer(2, False), 0xCE: _integer(4, False),
    0xCF: _integer(8, False),
    0xD0: _integer(1, True), 0xD1: _integer(2, True), 0xD2: _integer(4, True),
    0xD3: _integer(8, True),
    0xD9: _sized(1, _string), 0xDA: _sized(2, _string), 0xDB: _sized(4, _string),
    0xDC: _sized(2, _unpack_list), 0xDD: _sized(4, _unpack_list),
    0xDE: _sized(2, _unpack_map), 0xDF: _sized(4, _unpack_map),
}
