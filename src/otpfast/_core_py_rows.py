"""Pure-Python twin of the row-MAC kernel in _core_rows.pxi: the executable spec.

The store authenticates rows with keyed BLAKE2b-256 (otpfast.store.rows): the MAC input of
a row is its table's tag, a NUL byte, then every value (the covered columns in their fixed
order, the row version last) type-tagged and length-prefixed. Leaf module: stdlib only.
"""
import hashlib
import struct

__all__ = ["ROW_MAC_BYTES", "row_encode", "row_macs"]

ROW_MAC_BYTES = 32
_DOUBLE = struct.Struct(">d").pack


def _float(value: float) -> bytes:
    # numbers by value: an integral REAL reads back as a float from one driver, an int
    # from another
    if value.is_integer() and abs(value) < 2**53:
        return b"i%d;" % int(value)
    return b"f" + _DOUBLE(value)


def _str(value: str) -> bytes:
    raw = value.encode("utf-8")
    return b"s%d:%b" % (len(raw), raw)


def _bytes(value) -> bytes:
    raw = bytes(value)
    return b"b%d:%b" % (len(raw), raw)


# by exact type (a subclass of int or str is encoded as bytes(value), as any other type)
_ENCODERS = {type(None): lambda value: b"N", bool: lambda value: b"i%d;" % value,
             int: lambda value: b"i%d;" % value, float: _float, str: _str, bytes: _bytes}


def row_encode(value) -> bytes:
    """One value as the MAC input holds it: None ``N``; bool and int ``i<decimal>;``; a
    float with an integral value below 2**53 as that int, any other ``f`` + 8 bytes IEEE 754
    big-endian; str ``s<byte length>:<UTF-8>``; bytes and anything else ``b<length>:`` +
    bytes(value)."""
    return _ENCODERS.get(type(value), _bytes)(value)


def row_macs(key, tag, rows):
    """Keyed BLAKE2b-256 (RFC 7693, ``key`` 0..64 bytes) of each row of ``rows`` (sequences
    of values, the row version last) under ``tag`` (ASCII): the MAC of a row is over
    ``tag``, NUL, then row_encode of each value. Returns a list of 32-byte digests."""
    state = hashlib.blake2b(key=bytes(key), digest_size=ROW_MAC_BYTES)
    head = tag.encode("ascii") + b"\0"
    out = []
    for row in rows:
        mac = state.copy()
        mac.update(head + b"".join(map(row_encode, row)))
        out.append(mac.digest())
    return out
