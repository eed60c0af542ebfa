"""The few protobuf wire-format encodings the pprof exporter needs (varints,
length-delimited fields, packed repeated integers), so that writing pprof
needs no protobuf package at run time. Each function returns bytes; a message
is the concatenation of its fields.
"""

_VARINT, _LENGTH_DELIMITED = 0, 2


def varint(value):
    """Base-128 varint; a negative int64 is sent as its 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number, wire_type):
    return varint(number << 3 | wire_type)


def integer(number, value):
    """An int64/uint64/bool field; proto3 leaves a zero out."""
    return _key(number, _VARINT) + varint(value) if value else b""


def delimited(number, payload):
    """A string, bytes or embedded-message field (always written, even empty)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return _key(number, _LENGTH_DELIMITED) + varint(len(payload)) + payload


def packed(number, values):
    """A repeated integer field, packed as proto3 does by default."""
    if not values:
        return b""
    return delimited(number, b"".join(varint(value) for value in values))
