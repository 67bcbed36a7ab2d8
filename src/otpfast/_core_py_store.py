"""Pure-Python twin of the store's MAC kernels in _core_store.pxi: the executable spec.

* Rows (otpfast.store.rows): keyed BLAKE2b-256; the MAC input of a row is its table's tag,
  a NUL byte, then every value (the covered columns in their fixed order, the row version
  last) type-tagged and length-prefixed.
* The audit chain (otpfast.store.chain): HMAC-SHA256 of each entry chained onto the
  previous entry's MAC.

Leaf module: stdlib only.
"""
import hashlib
import hmac
import struct

__all__ = ["ROW_MAC_BYTES", "row_encode", "row_macs", "audit_chain_macs", "issued_used_macs", "HmacSha256",
           "HmacMd5"]

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


def issued_used_macs(key, rows, now, ver):
    """For issued rows read as unused, ``rows`` of (id, account, otp_digest, expires_at,
    row version, stored MAC): per row the MAC of (id, account, otp_digest, expires_at, now)
    with version ``ver`` under tag "i" (the row marked used), or None if the stored MAC is
    not row_macs' of (id, account, otp_digest, expires_at, None) with the row's version."""
    out = []
    for id_, account, otp_digest, expires_at, row_ver, stored in rows:
        if row_ver is None or stored is None:
            out.append(None)
            continue
        prefix = (id_, account, otp_digest, expires_at)
        check, used = row_macs(key, "i", [(*prefix, None, row_ver), (*prefix, now, ver)])
        out.append(used if hmac.compare_digest(check, bytes(stored)) else None)
    return out


def _field(text) -> bytes:
    if type(text) is not str:
        raise TypeError(f"audit fields are str, got {type(text).__name__}")
    raw = text.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


def audit_chain_macs(key, seq, prev, entries, rows=None):
    """The MACs of audit entries numbered seq + 1, seq + 2, ...: ``entries`` are (time,
    event, account, client, source, outcome) tuples, ``prev`` the MAC the first chains onto.
    Each MAC is HMAC-SHA256 under ``key`` of the previous MAC then each field (str(seq),
    repr(float(time)), event, account, client, source, outcome, and ``rows`` for the first
    entry when it is not None) as a 4-byte big-endian length and its UTF-8 bytes."""
    key, prev, out = bytes(key), bytes(prev), []
    for when, event, account, client, source, outcome in entries:
        seq += 1
        message = prev + b"".join(map(_field, (str(seq), repr(float(when)), event, account,
                                               client, source, outcome)))
        if rows is not None:
            message += _field(rows)
            rows = None
        prev = hmac.digest(key, message, "sha256")
        out.append(prev)
    return out


class _Hmac:
    """HMAC (RFC 2104) under one fixed key, with the keyed inner and outer states computed
    once: each MAC then costs two state copies instead of a key setup (the same bytes as
    ``hmac.digest(key, msg, name)``). ``key``: the key as HMAC uses it (hashed first when
    longer than the block)."""

    __slots__ = ("_inner", "_outer", "key")
    _hash = None

    def __init__(self, key):
        key = bytes(key)
        if len(key) > 64:
            key = self._hash(key).digest()
        self.key = key
        padded = key.ljust(64, b"\0")
        self._inner = self._hash(bytes(b ^ 0x36 for b in padded))
        self._outer = self._hash(bytes(b ^ 0x5C for b in padded))

    def __call__(self, message) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class HmacSha256(_Hmac):
    """HMAC-SHA256 under one fixed key (OTP digests, the audit head, PIN pepper)."""

    __slots__ = ()
    _hash = staticmethod(hashlib.sha256)


class HmacMd5(_Hmac):
    """HMAC-MD5 under one fixed key (RADIUS Message-Authenticator, RFC 3579)."""

    __slots__ = ()
    _hash = staticmethod(hashlib.md5)
