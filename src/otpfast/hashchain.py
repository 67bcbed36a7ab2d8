"""Lamport hash chain (the RSA-type OTP paper's Algorithm 1).

h(0) = seed, h(i) = H(h(i-1)). The server is initialised with the anchor h(n) and n; the OTP
for use i (1..n) is h(n-i), written in hex. To verify x the server hashes it once and compares
with the last accepted value (constant time); on success x becomes the last accepted value and
the remaining count drops by one. An exhausted chain refuses everything. Attempt counting and
lockout (the paper allows 3 attempts) are the server's policy, not this module's.
"""
import hashlib
import hmac
from dataclasses import dataclass

from . import core
from .errors import InvalidParameter, InvalidToken

__all__ = ["ALGORITHMS", "HashChain", "ChainVerifier", "verify_chain"]

ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")
MIN_SEED_BYTES = 16
MAX_SEED_BYTES = 256
_MAX_OTP_TEXT = 2 * MAX_SEED_BYTES + 64  # hex digits of the longest OTP (the seed) + spaces
MAX_LENGTH = 10**7


def _algorithm(algorithm):
    if algorithm not in ALGORITHMS:
        raise InvalidParameter("algorithm", f"must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    return algorithm


class HashChain:
    """The user's side: the whole chain, computed once with the core kernel."""

    __slots__ = ("algorithm", "length", "_values", "_size", "_seed")

    def __init__(self, seed, length, algorithm="sha256"):
        if (not isinstance(seed, (bytes, bytearray, memoryview))
                or not MIN_SEED_BYTES <= len(seed) <= MAX_SEED_BYTES):
            raise InvalidParameter("seed", f"must be {MIN_SEED_BYTES} to {MAX_SEED_BYTES} bytes")
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_LENGTH:
            raise InvalidParameter("length", f"must be an integer from 1 to {MAX_LENGTH}, got {length!r}")
        self.algorithm = _algorithm(algorithm)
        self.length = length
        self._seed = bytes(seed)
        self._size = hashlib.new(algorithm).digest_size
        # slot k holds h(length - k): slot 0 the anchor, slot i the OTP for use i
        self._values = core.hashchain_batch(self._seed, length, algorithm)

    def __repr__(self):
        return f"HashChain(length={self.length}, algorithm={self.algorithm!r})"

    @property
    def anchor(self):
        """h(n): what the server stores at enrolment."""
        return self._values[: self._size]

    def value(self, i):
        """h(n - i) as bytes, the OTP for use i (1 <= i <= n)."""
        if isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= self.length:
            raise InvalidParameter("use", f"must be from 1 to {self.length}, got {i!r}")
        if i == self.length:
            return self._seed
        return self._values[i * self._size : (i + 1) * self._size]

    def otp(self, i):
        """The OTP for use i, in hex."""
        return self.value(i).hex()

    def otps(self):
        """All OTPs in the order they are used (use 1 first)."""
        return [self.otp(i) for i in range(1, self.length + 1)]


def _parse_otp_hex(otp_hex):
    """A digest or the seed (16 to MAX_SEED_BYTES bytes) in hex, case and surrounding spaces
    ignored; anything else, whatever its length, is InvalidToken before any hashing."""
    if not isinstance(otp_hex, str) or len(otp_hex) > _MAX_OTP_TEXT or not otp_hex.isascii():
        raise InvalidToken()
    text = otp_hex.strip().lower()
    if (len(text) % 2 or not 2 * MIN_SEED_BYTES <= len(text) <= 2 * MAX_SEED_BYTES
            or any(ch not in "0123456789abcdef" for ch in text)):
        raise InvalidToken()
    return bytes.fromhex(text)


def verify_chain(otp_hex, last, remaining, algorithm="sha256"):
    """Pure server step: accept x iff H(x) == last. Returns (new_last, new_remaining) =
    (x, remaining - 1). Raises InvalidToken for a wrong OTP or an exhausted chain."""
    _algorithm(algorithm)
    if remaining < 1:
        raise InvalidToken()
    x = _parse_otp_hex(otp_hex)
    if not hmac.compare_digest(hashlib.new(algorithm, x).digest(), bytes(last)):
        raise InvalidToken()
    return x, remaining - 1


@dataclass(slots=True)
class ChainVerifier:
    """The server's state for one chain: the last accepted value and how many uses remain."""

    last: bytes
    remaining: int
    algorithm: str = "sha256"

    def __post_init__(self):
        _algorithm(self.algorithm)
        if isinstance(self.remaining, bool) or not isinstance(self.remaining, int) or self.remaining < 0:
            raise InvalidParameter("remaining", "must be a non-negative integer")
        if self.remaining and len(self.last) != hashlib.new(self.algorithm).digest_size:
            raise InvalidParameter("anchor", f"must be one {self.algorithm} digest")
        self.last = bytes(self.last)

    def __repr__(self):
        return f"ChainVerifier(remaining={self.remaining}, algorithm={self.algorithm!r})"

    @classmethod
    def enrol(cls, chain: HashChain):
        return cls(chain.anchor, chain.length, chain.algorithm)

    @property
    def exhausted(self):
        return self.remaining == 0

    def verify(self, otp_hex):
        """Verify and advance. Returns how many uses remain afterwards."""
        self.last, self.remaining = verify_chain(otp_hex, self.last, self.remaining, self.algorithm)
        return self.remaining
