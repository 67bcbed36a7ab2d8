"""Parameters of the paper's RSA-type OTP: N = p*q, e coprime to lambda(N), d = e^-1.

This is the paper's scheme with a tiny N (6-digit OTPs: N ~ 2^20). It is predictable
from a few observed OTPs and is for study and batch work, never for logins.
"""
import math
import secrets
from dataclasses import dataclass

import gmpy2

from .errors import InvalidParameter

#: The paper's example modulus 991 * 997.
PAPER_P, PAPER_Q = 991, 997
PAPER_N = PAPER_P * PAPER_Q  # 988027

#: The paper's primitive-root stream: P = 999983 and its smallest primitive root.
DEFAULT_PRIME = 999983
DEFAULT_GENERATOR = 5

#: The core works on moduli below 2^32, so N has at most 9 digits.
MIN_DIGITS, MAX_DIGITS = 2, 9


@dataclass(frozen=True)
class RsaParams:
    """p, q distinct primes; n = p*q; e coprime to lambda(n), 1 < e; d = e^-1 mod lambda(n)."""

    p: int
    q: int
    n: int
    e: int
    d: int

    @property
    def digits(self):
        """Digits of an OTP: those of n - 1 (6 for 988027)."""
        return len(str(self.n - 1))

    @property
    def lam(self):
        """Carmichael's lambda(n) = lcm(p - 1, q - 1)."""
        return math.lcm(self.p - 1, self.q - 1)


def _randrange(lo, hi, randbits):
    """Uniform integer in [lo, hi] from randbits(k) by rejection."""
    span = hi - lo
    if span < 0:
        raise ValueError("empty range")
    k = max(span.bit_length(), 1)
    while True:
        r = randbits(k)
        if r <= span:
            return lo + r


def _random_prime(lo, hi, randbits, exclude=None):
    candidates = [p for p in range(lo, hi + 1) if gmpy2.is_prime(p) and p != exclude] if hi - lo < 4096 else None
    if candidates is not None:
        if not candidates:
            return None
        return candidates[_randrange(0, len(candidates) - 1, randbits)]
    while True:
        p = _randrange(lo, hi, randbits)
        if p != exclude and gmpy2.is_prime(p):
            return p


def _isqrt_ceil(x):
    r = math.isqrt(x)
    return r if r * r == x else r + 1


def generate_params(digits=6, randbits=secrets.randbits):
    """Random RsaParams whose n - 1 has exactly `digits` digits (2..9).

    p is drawn around sqrt(n), q so that n lands in (10^(digits-1), 10^digits);
    e is uniform among the units of Z_lambda other than 1; d = e^-1 mod lambda.
    `randbits(k)` is injectable so a key ceremony can derive parameters from a DRBG."""
    if isinstance(digits, bool) or not isinstance(digits, int) or not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise InvalidParameter("digits", f"must be {MIN_DIGITS}..{MAX_DIGITS}, got {digits!r}")
    lo_n, hi_n = 10 ** (digits - 1) + 1, 10 ** digits - 1       # n - 1 has `digits` digits
    while True:
        p = _random_prime(_isqrt_ceil(lo_n), math.isqrt(hi_n), randbits)
        q = _random_prime(-(-lo_n // p), hi_n // p, randbits, exclude=p)
        if q is None:
            continue
        lam = math.lcm(p - 1, q - 1)
        if lam <= 2:
            continue
        e = random_e(p, q, randbits)
        return RsaParams(p, q, p * q, e, pow(e, -1, lam))


def validate_params(p, q, e):
    """RsaParams from user-given p, q, e; InvalidParameter naming "p", "q" or "e"."""
    for field, value in (("p", p), ("q", q), ("e", e)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidParameter(field, f"must be an integer, got {type(value).__name__}")
    if not gmpy2.is_prime(p):
        raise InvalidParameter("p", f"{p} is not prime")
    if not gmpy2.is_prime(q):
        raise InvalidParameter("q", f"{q} is not prime")
    if p == q:
        raise InvalidParameter("q", "must differ from p")
    lam = math.lcm(p - 1, q - 1)
    if e <= 1:
        raise InvalidParameter("e", "must be greater than 1")
    if math.gcd(e, lam) != 1:
        raise InvalidParameter("e", f"must be coprime to lambda(n) = {lam}")
    if e % lam == 1:
        raise InvalidParameter("e", f"e = 1 mod lambda(n) = {lam} makes every OTP equal its a")
    return RsaParams(p, q, p * q, e, pow(e, -1, lam))


def random_e(p, q, randbits=secrets.randbits):
    """A random e for given primes p, q (uniform among units of Z_lambda other than 1)."""
    lam = math.lcm(p - 1, q - 1)
    if lam <= 2:
        raise InvalidParameter("q", f"lambda(p*q) = {lam} leaves no exponent e > 1")
    while True:
        e = _randrange(2, lam - 1, randbits)
        if math.gcd(e, lam) == 1:
            return e


def is_primitive_root(g, prime):
    """True iff g generates the multiplicative group modulo the prime."""
    if not gmpy2.is_prime(prime) or not 1 <= g < prime:
        return False
    m, factors, f = prime - 1, set(), 2
    while f * f <= m:
        while m % f == 0:
            factors.add(f)
            m //= f
        f += 1
    if m > 1:
        factors.add(m)
    return all(pow(g, (prime - 1) // r, prime) != 1 for r in factors)


def smallest_primitive_root(prime):
    """The smallest primitive root modulo the prime."""
    if not gmpy2.is_prime(prime):
        raise InvalidParameter("prime", f"{prime} is not prime")
    g = 1
    while not is_primitive_root(g, prime):
        g += 1
    return g
