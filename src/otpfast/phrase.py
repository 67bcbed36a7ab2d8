"""Secret phrase generator of the key-generation clients (first source document).

Each trusted authority derives a secret phrase from an integer its operator enters, 32 fresh
random bytes and its authority id, with its own hash: 1 -> SHA-256, 2 -> SHA-512,
3 -> SHA-384, 4 -> SHA-512 (the source's four authorities), and SHA-512 for any other id the
admin creates (5 .. 2**31-1) (configurable). The phrase is returned both as the source's integer
(the digest read big-endian) and as bytes.

Hash input (unambiguous: a fixed tag, then fixed-width or length-prefixed fields):

    b"otpfast secret phrase v1\\0"
    || u32be(len(V)) || V          V = operator integer, big-endian, minimal length (>= 1 byte)
    || R                           R = 32 random bytes (secrets.token_bytes)
    || u32be(authority_id)
"""
import hashlib
import secrets
import struct
from dataclasses import dataclass

from .errors import InvalidParameter

__all__ = ["DEFAULT_HASHES", "OTHER_HASH", "RANDOM_BYTES", "Phrase", "hash_of", "secret_phrase",
           "encode_input"]

DEFAULT_HASHES = {1: "sha256", 2: "sha512", 3: "sha384", 4: "sha512"}
OTHER_HASH = "sha512"       # any authority id DEFAULT_HASHES does not name
RANDOM_BYTES = 32
TAG = b"otpfast secret phrase v1\x00"
_ALLOWED = ("sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512", "blake2b")
_MAX_VALUE_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Phrase:
    """A secret phrase: ``integer`` (the digest as an integer) and ``data`` (the digest)."""

    integer: int
    data: bytes
    algorithm: str

    def __repr__(self):  # never show the secret
        return f"Phrase(algorithm={self.algorithm!r}, bits={len(self.data) * 8})"


def encode_input(authority_id, value, random_bytes):
    """The exact bytes that are hashed (see the module docstring)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidParameter("value", "must be a non-negative integer")
    v = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    if len(v) > _MAX_VALUE_BYTES:
        raise InvalidParameter("value", f"must fit in {_MAX_VALUE_BYTES} bytes")
    if isinstance(authority_id, bool) or not isinstance(authority_id, int) or not 0 < authority_id < 2**32:
        raise InvalidParameter("authority", "must be an integer from 1 to 2**32-1")
    r = bytes(random_bytes)
    if len(r) != RANDOM_BYTES:
        raise InvalidParameter("random_bytes", f"must be exactly {RANDOM_BYTES} bytes")
    return TAG + struct.pack(">I", len(v)) + v + r + struct.pack(">I", authority_id)


def hash_of(authority_id, hashes=DEFAULT_HASHES):
    """The hash authority ``authority_id`` uses: ``hashes``' entry, else OTHER_HASH."""
    if isinstance(authority_id, bool) or not isinstance(authority_id, int) or not 0 < authority_id < 2**31:
        raise InvalidParameter("authority", "must be an integer from 1 to 2**31-1")
    return hashes.get(authority_id, OTHER_HASH)


def secret_phrase(authority_id, value, *, random_bytes=None, hashes=DEFAULT_HASHES):
    """Derive the secret phrase of authority `authority_id` from the operator's integer
    `value`. `random_bytes` (32) defaults to fresh CSPRNG output; pass it only in tests."""
    algorithm = hash_of(authority_id, hashes)
    if algorithm not in _ALLOWED:
        raise InvalidParameter("hashes", f"{algorithm!r} is not allowed; use one of {', '.join(_ALLOWED)}")
    if random_bytes is None:
        random_bytes = secrets.token_bytes(RANDOM_BYTES)
    digest = hashlib.new(algorithm, encode_input(authority_id, value, random_bytes)).digest()
    return Phrase(int.from_bytes(digest, "big"), digest, algorithm)
