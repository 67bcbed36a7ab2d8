"""RSA-type OTPs as tokens (the paper's Algorithm 2) over the native core.

OTP = a^e mod N, written in decimal and zero-padded to the digits of N - 1; the server verifies
OTP^d mod N == a. Candidates a are used only if 1 <= a < N and gcd(a, N) = 1 (DESIGN §3).

* ``RsaLfsrToken`` — a from an LFSR stream (the paper). INSECURE: N ~ 2^20 factors instantly
  and consecutive LFSR states share L-1 bits, so a few observed OTPs predict the next.
* ``RsaPrimrootToken`` — a = g^i mod P (the paper). INSECURE for the same reasons.
* ``RsaPrfToken`` — the paper's structure with a_i drawn from HMAC-SHA-256(key, i) and mapped
  into Z_N* by rejection sampling. Sound in the sense that a is unpredictable without the key
  (an attacker still has a 10^-digits guessing chance per try, so limit attempts).

Each token has ``generate(index) -> (otp, next_index)`` and ``verify(otp, index) -> next_index``
(raises InvalidToken). ``index`` is the position in the candidate stream (steps from the initial
LFSR state, or exponent offset from ``start``; for rsa-prf the OTP number); skipped candidates
advance it, so callers store next_index and never accept an index twice.
"""
import hashlib
import hmac
import math

from . import core
from .errors import InvalidParameter, InvalidToken
from .rsaparams import RsaParams

__all__ = ["RsaLfsrToken", "RsaPrimrootToken", "RsaPrfToken", "INSECURE_NOTE", "prf_candidate"]

INSECURE_NOTE = "INSECURE: paper's 20-bit RSA-type OTP, predictable"
_MAX_INDEX = 2**64 - 1
_ASCII_DIGITS = frozenset("0123456789")
_MAX_SKIP = 1 << 24  # far beyond any stream core.rsa_* accepts for its N


def _check_params(params):
    if not isinstance(params, RsaParams):
        raise InvalidParameter("params", "must be an otpfast.rsaparams.RsaParams")
    return params


def _check_index(index):
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= _MAX_INDEX:
        raise InvalidParameter("index", f"must be an integer in [0, 2**64), got {index!r}")
    return index


def _is_used(a, n):
    return 1 <= a < n and math.gcd(a, n) == 1


def _encode(value, params):
    return value.to_bytes((params.n.bit_length() + 7) // 8, "big")


class _RsaToken:
    """Shared generate/verify; subclasses define _next_used(index) -> (a, index of a), the
    first used candidate at or after `index`."""

    __slots__ = ("params",)

    def _format(self, value):
        return f"{value:0{self.params.digits}d}"

    def generate(self, index):
        """(OTP for the first used candidate at or after `index`, the index after it)."""
        a, used = self._next_used(_check_index(index))
        return self._format(core.modexp(a, self.params.e, self.params.n)), used + 1

    def verify(self, otp, index):
        """Check OTP^d mod N == a for the candidate `generate(index)` would use; return the
        next index. Raises InvalidToken (malformed, out of range or wrong)."""
        _check_index(index)
        p = self.params
        if not isinstance(otp, str) or len(otp) != p.digits or not set(otp) <= _ASCII_DIGITS:
            raise InvalidToken()
        value = int(otp)
        if value >= p.n:
            raise InvalidToken()
        a, used = self._next_used(index)
        if not hmac.compare_digest(_encode(core.modexp(value, p.d, p.n), p), _encode(a, p)):
            raise InvalidToken()
        return used + 1


class RsaLfsrToken(_RsaToken):
    """The paper's LFSR-stream RSA-type OTP. INSECURE (see the module docstring)."""

    __slots__ = ("poly", "state0")

    def __init__(self, params, poly, state0):
        self.params = _check_params(params)
        # validates poly (primitive, degree suits N) and state0 through the core
        core.rsa_lfsr_generate(params.n, params.e, poly, state0, 0)
        self.poly = poly
        self.state0 = state0

    def _next_used(self, index):
        state = core.lfsr_advance(self.poly, self.state0, index)
        for offset in range(_MAX_SKIP):
            if _is_used(state, self.params.n):
                return state, index + offset
            state = core.lfsr_step(self.poly, state)
        raise InvalidParameter("index", "no usable candidate near this index")  # pragma: no cover

    def __repr__(self):
        return f"RsaLfsrToken(n={self.params.n}, poly={self.poly:#x}) [{INSECURE_NOTE}]"


class RsaPrimrootToken(_RsaToken):
    """The paper's primitive-root RSA-type OTP, a = g^(start+index) mod P. INSECURE."""

    __slots__ = ("prime", "generator", "start")

    def __init__(self, params, prime, generator, start):
        self.params = _check_params(params)
        core.rsa_primroot_generate(params.n, params.e, prime, generator, start, 0)
        self.prime = prime
        self.generator = generator
        self.start = start

    def _next_used(self, index):
        value = core.modexp(self.generator, self.start + index, self.prime)
        for offset in range(_MAX_SKIP):
            if _is_used(value, self.params.n):
                return value, index + offset
            value = value * self.generator % self.prime
        raise InvalidParameter("index", "no usable candidate near this index")  # pragma: no cover

    def __repr__(self):
        return (f"RsaPrimrootToken(n={self.params.n}, prime={self.prime}, generator={self.generator}) "
                f"[{INSECURE_NOTE}]")


def prf_candidate(key, index, n):
    """a_index in Z_N*: the first HMAC-SHA-256(key, u64be(index) || u32be(ctr)), ctr = 0, 1, ...,
    whose top bitlen(N) bits, read big-endian, give 1 <= a < N with gcd(a, N) = 1."""
    shift = 256 - n.bit_length()
    prefix = index.to_bytes(8, "big")
    for ctr in range(2**32):
        mac = hmac.new(key, prefix + ctr.to_bytes(4, "big"), hashlib.sha256).digest()
        a = int.from_bytes(mac, "big") >> shift
        if _is_used(a, n):
            return a
    raise InvalidParameter("params", "N admits no candidate")  # pragma: no cover


class RsaPrfToken(_RsaToken):
    """RSA-type OTP with a_i = PRF(key, i) in Z_N*: the paper's structure, unpredictable a."""

    __slots__ = ("_key",)

    def __init__(self, key, params):
        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            raise InvalidParameter("secret", "the rsa-prf key needs at least 128 bits")
        self._key = bytes(key)
        self.params = _check_params(params)
        if params.n.bit_length() > 256:
            raise InvalidParameter("params", "N must be at most 256 bits for rsa-prf")

    def _next_used(self, index):
        return prf_candidate(self._key, index, self.params.n), index

    def __repr__(self):
        return f"RsaPrfToken(n={self.params.n}, digits={self.params.digits})"
