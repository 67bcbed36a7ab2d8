"""Pure-Python twin of otpfast._core: the executable spec.

Same names, arguments, results and errors as the compiled core (see _core.pyi).
Written to be read, not to be fast; the compiled core must agree with it.
"""
import array
import functools
import math
import operator

from otpfast.errors import InvalidParameter

OPENMP_ENABLED = False

#: Largest degree for which lfsr_primitive_all enumerates.
LFSR_ALL_MAX_DEGREE = 28
#: Up to this degree lfsr_primitive_at indexes the full list (the compiled core uses 24).
LFSR_INDEX_MAX_DEGREE = 22
#: Largest CRT factor for which per-factor power tables may be used.
CRT_TABLE_MAX = 1 << 22
#: A stream may hold at most 2^12 candidates per element of [1, n) (bounds the skip rate).
STREAM_SPREAD_BITS = 12

_U64 = 1 << 64


# ------------------------------------------------------------------ validation

def _integer(value, field):
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidParameter(field, f"must be an integer, got {type(value).__name__}") from None


def _degree(poly):
    poly = _integer(poly, "poly")
    if poly <= 0:
        raise InvalidParameter("poly", "must be a positive integer")
    degree = poly.bit_length() - 1
    if degree < 2 or degree > 64:
        raise InvalidParameter("poly", f"degree must be 2..64, got {degree}")
    if not poly & 1:
        raise InvalidParameter("poly", "must have bit 0 set (constant term 1)")
    return degree


def _state(state, degree):
    state = _integer(state, "state")
    if not 1 <= state < (1 << degree):
        raise InvalidParameter("state", f"must be in [1, 2^{degree}) for a degree-{degree} polynomial")
    return state


def _range(value, field, lo, hi):
    value = _integer(value, field)
    if not lo <= value < hi:
        raise InvalidParameter(field, f"must be in [{lo}, {hi}), got {value}")
    return value


def _check_degree(degree, lo, hi):
    degree = _integer(degree, "degree")
    if not lo <= degree <= hi:
        raise InvalidParameter("degree", f"must be {lo}..{hi}, got {degree}")
    return degree


def _threads(num_threads):
    """Validate num_threads like the compiled core; the Python twin runs on one thread."""
    if num_threads is not None:
        num_threads = _integer(num_threads, "num_threads")
        if num_threads == 0:
            raise InvalidParameter("num_threads", "must not be 0")
    return 1


def effective_num_threads(num_threads=None):
    """The thread count a kernel would use for a large batch (always 1 here)."""
    return _threads(num_threads)


def _as_array(values, typecode, field):
    if isinstance(values, array.array) and values.typecode == typecode:
        return values
    try:
        return array.array(typecode, values)
    except (OverflowError, TypeError) as exc:
        bits = 32 if typecode == "I" else 64
        raise InvalidParameter(field, f"must be integers in [0, 2^{bits})") from exc


# ------------------------------------------------------------- number theory

def _is_prime(n):
    """Deterministic Miller-Rabin for n < 3.3e24."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in bases:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _rho(n):
    """A non-trivial factor of the odd composite n (Pollard-Brent)."""
    c = 1
    while True:
        y, r, q, g = 2, 1, 1, 1
        x = ys = 2
        while g == 1:
            x = y
            for _ in range(r):
                y = (y * y + c) % n
            k = 0
            while k < r and g == 1:
                ys = y
                for _ in range(min(128, r - k)):
                    y = (y * y + c) % n
                    q = q * abs(x - y) % n
                g = math.gcd(q, n)
                k += 128
            r *= 2
        if g == n:
            g = 1
            while g == 1:
                ys = (ys * ys + c) % n
                g = math.gcd(abs(x - ys), n)
        if g != n:
            return g
        c += 1


@functools.lru_cache(maxsize=256)
def _factor(n):
    """((prime, exponent), ...) of n >= 1, primes ascending."""
    counts = {}

    def add(m):
        if m == 1:
            return
        if _is_prime(m):
            counts[m] = counts.get(m, 0) + 1
            return
        d = _rho(m)
        add(d)
        add(m // d)

    p = 2
    while p < 1024 and p * p <= n:
        while n % p == 0:
            counts[p] = counts.get(p, 0) + 1
            n //= p
        p += 1 if p == 2 else 2
    add(n)
    return tuple(sorted(counts.items()))


# ------------------------------------------------------------------------ LFSR

def _step(poly, degree, s):
    s <<= 1
    if s >> degree:
        s ^= poly
    return s


def _gf2_mulmod(poly, degree, a, b):
    """a(x) * b(x) mod poly(x) over GF(2)."""
    r = 0
    for i in reversed(range(degree)):
        r = _step(poly, degree, r)
        if (b >> i) & 1:
            r ^= a
    return r


def _gf2_powx(poly, degree, k):
    """x^k mod poly(x)."""
    r = 1
    for bit in bin(k)[2:] if k else "":
        r = _gf2_mulmod(poly, degree, r, r)
        if bit == "1":
            r = _step(poly, degree, r)
    return r


def _is_primitive(poly, degree):
    order = (1 << degree) - 1
    if _gf2_powx(poly, degree, order) != 1:
        return False
    return all(_gf2_powx(poly, degree, order // p) != 1 for p, _ in _factor(order))


def lfsr_step(poly, state):
    """One step: s <<= 1; if s >> L: s ^= poly."""
    degree = _degree(poly)
    return _step(poly, degree, _state(state, degree))


def lfsr_fill(poly, state, n):
    """array('Q') of n states starting with `state` (s0, s1, ...)."""
    degree = _degree(poly)
    s = _state(state, degree)
    count = _range(n, "count", 0, 1 << 40)
    out = array.array("Q")
    for _ in range(count):
        out.append(s)
        s = _step(poly, degree, s)
    return out


def lfsr_advance(poly, state, k):
    """The state after k steps, in O(log k): state * x^k mod poly."""
    degree = _degree(poly)
    s = _state(state, degree)
    k = _range(k, "k", 0, _U64)
    return _gf2_mulmod(poly, degree, s, _gf2_powx(poly, degree, k))


def lfsr_is_primitive(poly):
    """True iff poly is primitive over GF(2) (its LFSR has period 2^L - 1)."""
    return _is_primitive(poly, _degree(poly))


def lfsr_count_primitive(degree):
    """Number of primitive polynomials of the degree: phi(2^L - 1) / L."""
    degree = _check_degree(degree, 2, 64)
    phi = 1
    for p, k in _factor((1 << degree) - 1):
        phi *= (p - 1) * p ** (k - 1)
    return phi // degree


def _smallest_primitive(degree):
    poly = (1 << degree) | 1
    while not _is_primitive(poly, degree):
        poly += 2
    return poly


def _berlekamp_massey(bits):
    """Connection polynomial C(D) (bit i = c_i) of the shortest LFSR making `bits`."""
    c, b, length, m = 1, 1, 0, 1
    for n, bit in enumerate(bits):
        d = bit
        for i in range(1, length + 1):
            d ^= ((c >> i) & 1) & bits[n - i]
        if not d:
            m += 1
            continue
        t = c
        c ^= b << m
        if 2 * length <= n:
            length, b, m = n + 1 - length, t, 1
        else:
            m += 1
    return c


@functools.lru_cache(maxsize=8)
def _primitive_table(degree):
    """All primitive polynomials of the degree, ascending, as a tuple.

    One m-sequence u (top state bit of x^t mod P0, P0 primitive) is decimated by one
    k per cyclotomic coset {k 2^j mod 2^L-1} with gcd(k, 2^L-1) = 1; Berlekamp-Massey
    on 2L bits of u_{kt} gives the minimal polynomial of alpha^k (reversed, which
    is harmless: the set of primitive polynomials is closed under reversal)."""
    order = (1 << degree) - 1
    base = _smallest_primitive(degree)
    bits = bytearray(order)
    s = 1
    for t in range(order):
        bits[t] = (s >> (degree - 1)) & 1
        s = _step(base, degree, s)
    seen = bytearray(order)
    found = []
    for k in range(1, order):
        if seen[k]:
            continue
        r = k
        for _ in range(degree):
            seen[r] = 1
            r = ((r << 1) | (r >> (degree - 1))) & order
        if math.gcd(k, order) != 1:
            continue
        found.append(_berlekamp_massey([bits[k * t % order] for t in range(2 * degree)]))
    return tuple(sorted(found))


def lfsr_primitive_all(degree):
    """array('Q') of every primitive polynomial of the degree (2..28), ascending."""
    degree = _check_degree(degree, 2, LFSR_ALL_MAX_DEGREE)
    table = _primitive_table(degree)
    total = lfsr_count_primitive(degree)
    if len(table) != total:
        raise RuntimeError(f"enumerated {len(table)} primitive polynomials of degree {degree}, expected {total}")
    return array.array("Q", table)


def lfsr_primitive_at(degree, k):
    """The k-th (from 0) primitive polynomial of the degree in increasing order."""
    degree = _check_degree(degree, 2, 64)
    k = _range(k, "k", 0, lfsr_count_primitive(degree))
    if degree <= LFSR_INDEX_MAX_DEGREE:
        return _primitive_table(degree)[k]
    poly = (1 << degree) | 1
    while True:
        if _is_primitive(poly, degree):
            if k == 0:
                return poly
            k -= 1
        poly += 2


# ---------------------------------------------------------------------- modexp

def modexp(base, exp, mod):
    """base^exp mod mod for 1 < mod < 2^63, 0 <= exp < 2^64 (square-and-multiply)."""
    mod = _range(mod, "mod", 2, 1 << 63)
    exp = _range(exp, "exp", 0, _U64)
    base = _integer(base, "base")
    if base < 0:
        raise InvalidParameter("base", "must not be negative")
    result, x = 1, base % mod
    for bit in bin(exp)[2:] if exp else "":
        result = result * result % mod
        if bit == "1":
            result = result * x % mod
    return result % mod


def modexp_batch(bases, exp, mod, num_threads=None):
    """array('Q') of b^exp mod mod for each b in bases (values in [0, 2^64))."""
    mod = _range(mod, "mod", 2, 1 << 63)
    exp = _range(exp, "exp", 0, _U64)
    src = _as_array(bases, "Q", "bases")
    _threads(num_threads)
    return array.array("Q", (pow(b, exp, mod) for b in src))


# ------------------------------------------------------------ RSA-type batches

def _modulus(n):
    return _range(n, "n", 2, 1 << 32)


def _crt_split(n):
    """n = n1 * n2 with coprime, balanced factors (n2 = 1 for a prime power)."""
    n1 = n2 = 1
    for q in sorted((p ** k for p, k in _factor(n)), reverse=True):
        if n1 <= n2:
            n1 *= q
        else:
            n2 *= q
    return n1, n2


def _power_map(n, exp, method, work):
    """a -> a^exp mod n, by "sqm" (square-and-multiply) or "crt" (CRT over n1 * n2);
    "auto" picks CRT when n splits below 2^22 and the tables cost less than the batch."""
    if method not in ("auto", "crt", "sqm"):
        raise InvalidParameter("method", f"must be 'auto', 'crt' or 'sqm', got {method!r}")
    n1, n2 = _crt_split(n)
    crt_ok = max(n1, n2) <= CRT_TABLE_MAX
    if method == "crt" and not crt_ok:
        raise InvalidParameter(
            "method", f"'crt' needs n = n1*n2 with coprime factors below 2^22; {n} does not split so")
    if method == "crt" or (method == "auto" and crt_ok and n1 + n2 <= 2 * work):
        m1 = n2 * pow(n2, -1, n1) % n if n1 > 1 else 0
        m2 = n1 * pow(n1, -1, n2) % n if n2 > 1 else 0

        def crt(a):
            return (pow(a % n1, exp, n1) * m1 + pow(a % n2, exp, n2) * m2) % n
        return crt
    return lambda a: modexp(a, exp, n)


def _is_used(a, n):
    """The skip rule: a candidate a is used iff 1 <= a < n and gcd(a, n) == 1."""
    return 1 <= a < n and math.gcd(a, n) == 1


def _lfsr_stream(poly, n):
    degree = _degree(poly)
    if not _is_primitive(poly, degree):
        raise InvalidParameter("poly", "must be a primitive polynomial")
    if degree > n.bit_length() + STREAM_SPREAD_BITS:
        raise InvalidParameter(
            "poly", f"degree {degree} is too large for n = {n}: almost every state >= n would be skipped")
    return degree


@functools.lru_cache(maxsize=64)
def _check_primroot(prime, generator, n):
    if not _is_prime(prime):
        raise InvalidParameter("prime", f"{prime} is not prime")
    if prime > n << STREAM_SPREAD_BITS:
        raise InvalidParameter(
            "prime", f"{prime} is too large for n = {n}: almost every power >= n would be skipped")
    generator = _range(generator, "generator", 2, prime)
    for p, _ in _factor(prime - 1):
        if pow(generator, (prime - 1) // p, prime) == 1:
            raise InvalidParameter("generator", f"{generator} is not a primitive root modulo {prime}")


def _primroot_stream(n, prime, generator, start):
    prime = _range(prime, "prime", 3, 1 << 32)
    _check_primroot(prime, _integer(generator, "generator"), n)
    start = _integer(start, "start")
    if start < 0:
        raise InvalidParameter("start", "must not be negative")
    return prime, operator.index(generator), start


def _lfsr_candidates(poly, degree, state):
    """s0, step(s0), ...: yields (candidate, next state)."""
    while True:
        nxt = _step(poly, degree, state)
        yield state, nxt
        state = nxt


def _primroot_candidates(prime, generator, start):
    """g^start, g^(start+1), ... mod prime: yields (candidate, next exponent)."""
    value = pow(generator, start, prime)
    while True:
        start += 1
        yield value, start
        value = value * generator % prime


def _take(candidates, n, count, transform):
    """The first `count` used candidates, transformed; and the position after the last."""
    out = array.array("I")
    position = None
    while len(out) < count:
        a, position = next(candidates)
        if _is_used(a, n):
            out.append(transform(a))
    return out, position


def _verify_mask(candidates, n, d, given, method):
    expected, _ = _take(candidates, n, len(given), lambda a: a)
    power = _power_map(n, d, method, len(given))
    return bytes(int(otp < n and power(otp) == a) for otp, a in zip(given, expected))


def rsa_lfsr_generate(n, e, poly, state, count, num_threads=None, method="auto"):
    """(array('I') of `count` OTPs a^e mod n, next_state) over the LFSR stream from `state`.

    A candidate a is used iff 1 <= a < n and gcd(a, n) == 1. next_state is the state right
    after the candidate of the last OTP, so a call with it continues the stream. method:
    "sqm" (square-and-multiply), "crt" (per-factor power tables; n is factored here, it
    is below 2^32) or "auto" (the faster valid one). Results do not depend on it."""
    n = _modulus(n)
    degree = _lfsr_stream(poly, n)
    state = _state(state, degree)
    e = _range(e, "e", 1, _U64)
    count = _range(count, "count", 0, 1 << 40)
    _threads(num_threads)
    power = _power_map(n, e, method, count)
    out, position = _take(_lfsr_candidates(poly, degree, state), n, count, power)
    return out, state if position is None else position


def rsa_lfsr_verify_mask(n, d, poly, state, otps, num_threads=None, method="auto"):
    """bytes: 1 where otps[i]^d mod n is the i-th used candidate of the stream, else 0."""
    n = _modulus(n)
    degree = _lfsr_stream(poly, n)
    state = _state(state, degree)
    d = _range(d, "d", 1, _U64)
    given = _as_array(otps, "I", "otps")
    _threads(num_threads)
    return _verify_mask(_lfsr_candidates(poly, degree, state), n, d, given, method)


def rsa_lfsr_verify(n, d, poly, state, otps, num_threads=None, method="auto"):
    """How many otps[i] satisfy otps[i]^d mod n == the i-th used candidate of the stream."""
    return sum(rsa_lfsr_verify_mask(n, d, poly, state, otps, num_threads, method))


def rsa_primroot_generate(n, e, prime, generator, start, count, num_threads=None, method="auto"):
    """(array('I') of `count` OTPs, next_exponent) over the stream g^start, g^(start+1), ...
    mod prime, with the same skip rule; next_exponent continues the stream."""
    n = _modulus(n)
    prime, generator, start = _primroot_stream(n, prime, generator, start)
    e = _range(e, "e", 1, _U64)
    count = _range(count, "count", 0, 1 << 40)
    _threads(num_threads)
    power = _power_map(n, e, method, count)
    out, position = _take(_primroot_candidates(prime, generator, start), n, count, power)
    return out, start if position is None else position


def rsa_primroot_verify_mask(n, d, prime, generator, start, otps, num_threads=None, method="auto"):
    """bytes: 1 where otps[i]^d mod n is the i-th used power of the stream, else 0."""
    n = _modulus(n)
    prime, generator, start = _primroot_stream(n, prime, generator, start)
    d = _range(d, "d", 1, _U64)
    given = _as_array(otps, "I", "otps")
    _threads(num_threads)
    return _verify_mask(_primroot_candidates(prime, generator, start), n, d, given, method)


def rsa_primroot_verify(n, d, prime, generator, start, otps, num_threads=None, method="auto"):
    """How many otps[i] satisfy otps[i]^d mod n == the i-th used power of the stream."""
    return sum(rsa_primroot_verify_mask(n, d, prime, generator, start, otps, num_threads, method))


# ------------------------------------------------------------------- text out

def format_decimal(values, digits):
    """bytes: each value zero-padded to `digits` (wider if it needs more), one per line."""
    digits = _integer(digits, "digits")
    if not 1 <= digits <= 20:
        raise InvalidParameter("digits", f"must be 1..20, got {digits}")
    if not (isinstance(values, array.array) and values.typecode in ("I", "Q")):
        values = _as_array(values, "Q", "values")
    return b"".join(b"%0*d\n" % (digits, v) for v in values)


from ._core_py_hash import *  # noqa: E402,F401,F403
from ._core_py_store import *  # noqa: E402,F401,F403
