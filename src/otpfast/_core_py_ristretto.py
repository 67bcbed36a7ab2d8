"""Pure-Python twin of _ristretto.pyx: ristretto255 and its scalars through libsodium.

The group and the scalar arithmetic mod the group order are libsodium's, reached with
ctypes (no home-made arithmetic); expand_message_xmd (RFC 9380 §5.3.1) is written out
with hashlib. Elements are 32-byte encodings, never the identity; scalars are 32 bytes
little-endian below the order. Bad values raise InvalidElement / InvalidScalar naming the
argument; the compiled core agrees on every result and error. Without libsodium's shared
library every function raises ThresholdUnavailable (importing this module never fails).
"""
import ctypes
import ctypes.util
import functools
import hashlib
import operator

from otpfast.errors import InvalidElement, InvalidParameter, InvalidScalar, ThresholdUnavailable

__all__ = [
    "OPENMP_ENABLED", "require", "R255_BYTES", "R255_SCALAR_BYTES", "R255_HASH_BYTES", "R255_ORDER",
    "r255_hash_to_group", "r255_hash_to_scalar", "r255_is_valid", "r255_add", "r255_sub",
    "r255_mul", "r255_mul_base", "r255_mul_many", "r255_hash_mul_many", "r255_msm",
    "r255_scalar_reduce", "r255_scalar_add", "r255_scalar_sub", "r255_scalar_mul",
    "r255_scalar_negate", "r255_scalar_invert", "r255_scalar_random",
]

OPENMP_ENABLED = False
R255_BYTES = 32
R255_SCALAR_BYTES = 32
R255_HASH_BYTES = 64
#: The order of ristretto255 (2^252 + 27742317777372353535851937790883648493).
R255_ORDER = (1 << 252) + 27742317777372353535851937790883648493
_IDENTITY = bytes(R255_BYTES)


@functools.cache
def _lib():
    name = ctypes.util.find_library("sodium")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        lib = None
    if lib is None or lib.sodium_init() < 0:
        raise ThresholdUnavailable()
    return lib


def require():
    """Raise ThresholdUnavailable unless libsodium's shared library loads."""
    _lib()


# ------------------------------------------------------------------ validation

def _bytes(value, size, field, error):
    try:
        value = bytes(memoryview(value))
    except TypeError:
        raise error(field, f"must be bytes, got {type(value).__name__}") from None
    if len(value) != size:
        raise error(field, f"must be {size} bytes, got {len(value)}")
    return value


def _element(value, field):
    value = _bytes(value, R255_BYTES, field, InvalidElement)
    if value == _IDENTITY or not _lib().crypto_core_ristretto255_is_valid_point(value):
        raise InvalidElement(field, "is not a ristretto255 element (or is the identity)")
    return value


def _scalar(value, field, nonzero=False):
    value = _bytes(value, R255_SCALAR_BYTES, field, InvalidScalar)
    n = int.from_bytes(value, "little")
    if n >= R255_ORDER:
        raise InvalidScalar(field, "is not a canonical scalar (not below the group order)")
    if nonzero and n == 0:
        raise InvalidScalar(field, "must not be zero")
    return value


def _message(value, field):
    try:
        return bytes(memoryview(value))
    except TypeError:
        raise InvalidParameter(field, f"must be bytes, got {type(value).__name__}") from None


def _dst(dst):
    dst = _message(dst, "dst")
    if not 1 <= len(dst) <= 255:
        raise InvalidParameter("dst", f"must be 1..255 bytes, got {len(dst)}")
    return dst


def _threads(num_threads):
    if num_threads is not None:
        try:
            num_threads = operator.index(num_threads)
        except TypeError:
            raise InvalidParameter("num_threads", "must be an integer") from None
        if num_threads == 0:
            raise InvalidParameter("num_threads", "must not be 0")


def _sequence(values, field):
    if isinstance(values, (bytes, bytearray, memoryview, str)):
        raise InvalidParameter(field, "must be a sequence of byte strings")
    try:
        return list(values)
    except TypeError:
        raise InvalidParameter(field, "must be a sequence of byte strings") from None


# ----------------------------------------------------------------- hashing

def _expand_xmd(msg, dst, length):
    """expand_message_xmd with SHA-512 (RFC 9380 §5.3.1), length <= 255 * 64."""
    dst_prime = dst + bytes([len(dst)])
    b0 = hashlib.sha512(bytes(128) + msg + length.to_bytes(2, "big") + b"\0" + dst_prime).digest()
    blocks = [hashlib.sha512(b0 + b"\1" + dst_prime).digest()]
    for i in range(2, -(-length // 64) + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, blocks[-1]))
        blocks.append(hashlib.sha512(mixed + bytes([i]) + dst_prime).digest())
    return b"".join(blocks)[:length]


def _from_hash(uniform):
    out = ctypes.create_string_buffer(R255_BYTES)
    _lib().crypto_core_ristretto255_from_hash(out, uniform)
    return out.raw


def r255_hash_to_group(msg, dst):
    """hash_to_ristretto255 (RFC 9380 / RFC 9496): from_hash(expand_message_xmd(msg, dst, 64))."""
    return _from_hash(_expand_xmd(_message(msg, "msg"), _dst(dst), R255_HASH_BYTES))


def r255_hash_to_scalar(msg, dst):
    """RFC 9497 HashToScalar for ristretto255: expand_message_xmd(msg, dst, 64) reduced mod the order."""
    return _reduce(_expand_xmd(_message(msg, "msg"), _dst(dst), R255_HASH_BYTES))


# ------------------------------------------------------------------- group

def r255_is_valid(element):
    """True for the encoding of a group element other than the identity."""
    try:
        _element(element, "element")
    except InvalidElement:
        return False
    return True


def _add(p, q):
    out = ctypes.create_string_buffer(R255_BYTES)
    if _lib().crypto_core_ristretto255_add(out, p, q) != 0:  # pragma: no cover - validated
        raise InvalidElement("element", "is not a ristretto255 element")
    return out.raw


def r255_add(p, q):
    """p + q (may be the identity, 32 zero bytes)."""
    return _add(_element(p, "p"), _element(q, "q"))


def r255_sub(p, q):
    """p - q (may be the identity, 32 zero bytes)."""
    p, q = _element(p, "p"), _element(q, "q")
    out = ctypes.create_string_buffer(R255_BYTES)
    _lib().crypto_core_ristretto255_sub(out, p, q)
    return out.raw


def _mul(k, p):
    out = ctypes.create_string_buffer(R255_BYTES)
    if _lib().crypto_scalarmult_ristretto255(out, k, p) != 0:  # pragma: no cover - validated
        raise InvalidElement("element", "is not a ristretto255 element")
    return out.raw


def r255_mul(k, element):
    """k * element for a non-zero scalar k."""
    return _mul(_scalar(k, "k", nonzero=True), _element(element, "element"))


def r255_mul_base(k):
    """k * G for a non-zero scalar k (G the ristretto255 generator)."""
    k = _scalar(k, "k", nonzero=True)
    out = ctypes.create_string_buffer(R255_BYTES)
    _lib().crypto_scalarmult_ristretto255_base(out, k)
    return out.raw


def r255_mul_many(k, elements, num_threads=None):
    """[k * e for e in elements]."""
    _threads(num_threads)
    k = _scalar(k, "k", nonzero=True)
    elements = [_element(e, "elements") for e in _sequence(elements, "elements")]
    return [_mul(k, e) for e in elements]


def r255_hash_mul_many(k, msgs, dst, num_threads=None):
    """[k * hash_to_group(m, dst) for m in msgs]: a share server's partial evaluations."""
    _threads(num_threads)
    k = _scalar(k, "k", nonzero=True)
    dst = _dst(dst)
    msgs = [_message(m, "msgs") for m in _sequence(msgs, "msgs")]
    return [_mul(k, _from_hash(_expand_xmd(m, dst, R255_HASH_BYTES))) for m in msgs]


def r255_msm(scalars, elements):
    """sum(s_i * e_i): zero scalars add nothing; the result may be the identity."""
    scalars = [_scalar(s, "scalars") for s in _sequence(scalars, "scalars")]
    elements = [_element(e, "elements") for e in _sequence(elements, "elements")]
    if len(scalars) != len(elements):
        raise InvalidParameter("elements", "must be as many as the scalars")
    total = None
    for s, e in zip(scalars, elements):
        if s != bytes(R255_SCALAR_BYTES):
            term = _mul(s, e)
            total = term if total is None else _add(total, term)
    return _IDENTITY if total is None else total


# ----------------------------------------------------------------- scalars

def _reduce(wide):
    out = ctypes.create_string_buffer(R255_SCALAR_BYTES)
    _lib().crypto_core_ristretto255_scalar_reduce(out, wide)
    return out.raw


def r255_scalar_reduce(wide):
    """A 64-byte little-endian integer reduced mod the order."""
    return _reduce(_bytes(wide, R255_HASH_BYTES, "wide", InvalidParameter))


def _scalar_op(name, *args):
    out = ctypes.create_string_buffer(R255_SCALAR_BYTES)
    getattr(_lib(), name)(out, *args)
    return out.raw


def r255_scalar_add(a, b):
    """a + b mod the order."""
    return _scalar_op("crypto_core_ristretto255_scalar_add", _scalar(a, "a"), _scalar(b, "b"))


def r255_scalar_sub(a, b):
    """a - b mod the order."""
    return _scalar_op("crypto_core_ristretto255_scalar_sub", _scalar(a, "a"), _scalar(b, "b"))


def r255_scalar_mul(a, b):
    """a * b mod the order."""
    return _scalar_op("crypto_core_ristretto255_scalar_mul", _scalar(a, "a"), _scalar(b, "b"))


def r255_scalar_negate(a):
    """-a mod the order."""
    return _scalar_op("crypto_core_ristretto255_scalar_negate", _scalar(a, "a"))


def r255_scalar_invert(a):
    """1 / a mod the order, a non-zero."""
    a = _scalar(a, "a", nonzero=True)
    out = ctypes.create_string_buffer(R255_SCALAR_BYTES)
    _lib().crypto_core_ristretto255_scalar_invert(out, a)
    return out.raw


def r255_scalar_random():
    """A uniform non-zero scalar from libsodium's CSPRNG."""
    out = ctypes.create_string_buffer(R255_SCALAR_BYTES)
    _lib().crypto_core_ristretto255_scalar_random(out)
    return out.raw
