# Cython core; _core_py.py is the spec (same names, arguments, results and errors).
# The arithmetic kernels live in _core_kernels.h; this module validates with the GIL
# held, then runs them under `with nogil`, split across OpenMP threads where the work splits.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memmove
from cpython cimport array
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cython.parallel cimport prange

import array as _array_mod
import operator
import os as _os

from otpfast.errors import InvalidParameter

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define OTPF_OPENMP 1
    static int otpf_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define OTPF_OPENMP 0
    static int otpf_omp_max_threads(void) { return 1; }
    #endif
    """
    int OTPF_OPENMP
    int otpf_omp_max_threads() nogil

cdef extern from "_core_kernels.h" nogil:
    ctypedef struct otpf_factors:
        int count
        uint64_t prime[64]
        int exp[64]
    ctypedef struct otpf_poly:
        uint64_t low
        uint64_t mask
        int L
    ctypedef struct otpf_fastmod:
        uint64_t M
        uint32_t d
    ctypedef struct otpf_mont:
        uint64_t m
    ctypedef struct otpf_stream:
        int kind
        otpf_poly poly
        uint64_t P
        uint64_t g
        uint64_t g8
        uint64_t barrett
    ctypedef struct otpf_xform:
        int method
        uint32_t n
        int nprimes
        otpf_fastmod primes[16]
        const uint32_t *T1
        const uint32_t *T2
        otpf_fastmod f1
        otpf_fastmod f2
        uint64_t exp
        otpf_mont mont
        int n_odd
        int avx512
        int avx2
    int OTPF_IDENTITY, OTPF_CRT, OTPF_SQM
    uint32_t OTPF_NONUNIT
    uint64_t otpf_gcd(uint64_t a, uint64_t b)
    uint64_t otpf_mulmod(uint64_t a, uint64_t b, uint64_t m)
    uint64_t otpf_powmod(uint64_t base, uint64_t e, uint64_t m)
    void otpf_mont_init(otpf_mont *c, uint64_t m)
    void otpf_fastmod_init(otpf_fastmod *f, uint32_t d)
    int otpf_is_prime(uint64_t n)
    void otpf_factor(otpf_factors *f, uint64_t n)
    void otpf_poly_init(otpf_poly *p, uint64_t low, int L)
    uint64_t otpf_step(const otpf_poly *p, uint64_t s)
    uint64_t otpf_advance(const otpf_poly *p, uint64_t s, uint64_t k)
    void otpf_fill(const otpf_poly *p, uint64_t s, uint64_t *out, size_t n)
    int otpf_is_primitive(const otpf_poly *p, const otpf_factors *f)
    long otpf_primitive_all(int L, uint64_t base_low, const otpf_factors *f, uint64_t *out)
    void otpf_stream_lfsr_init(otpf_stream *st, uint64_t low, int L)
    void otpf_fill_lanes(const otpf_stream *st, uint64_t s, uint64_t *out, size_t n)
    void otpf_stream_primroot_init(otpf_stream *st, uint64_t P, uint64_t g)
    void otpf_xform_narrow(otpf_xform *x, uint32_t n1, uint32_t n2)
    int otpf_cpu_avx512()
    int otpf_cpu_avx2()
    int otpf_simd_allowed
    uint64_t otpf_stream_jump(const otpf_stream *st, uint64_t value, uint64_t k)
    size_t otpf_run(const otpf_stream *st, uint64_t value, uint64_t max_cand, uint64_t limit,
                    const otpf_xform *x, uint32_t *out, uint64_t *used, uint64_t *next)
    size_t otpf_verify_block(const otpf_xform *xd, const uint32_t *otps, const uint32_t *expect,
                             size_t count, uint8_t *mask)
    void otpf_format_fixed(const uint64_t *v, size_t count, int digits, char *dst)
    void otpf_format_fixed32(const uint32_t *v, size_t count, int digits, char *dst)

OPENMP_ENABLED = bool(OTPF_OPENMP)

cdef enum:
    MAX_THREADS = 64
    CHUNKS_PER_THREAD = 4
# Work below this many items per call stays on one thread.
cdef uint64_t PARALLEL_MIN = 1 << 15
# Largest CRT factor for which the per-factor power tables are built.
cdef uint64_t CRT_TABLE_MAX = 1 << 22
# Largest degree for which lfsr_primitive_all enumerates (and lfsr_primitive_at indexes).
LFSR_ALL_MAX_DEGREE = 28
LFSR_INDEX_MAX_DEGREE = 24
# A stream may hold at most this many candidates per element of [1, n) (skip-rate bound).
cdef int STREAM_SPREAD_BITS = 12

_ONE = 1
_P32, _P40, _P63, _P64 = pow(2, 32), pow(2, 40), pow(2, 63), pow(2, 64)

cdef array.array _U32 = _array_mod.array("I")
cdef array.array _U64 = _array_mod.array("Q")

cdef otpf_factors _MERSENNE[65]      # factorisations of 2^L - 1, L = 2..64


cdef void _init_mersenne():
    cdef int L
    cdef uint64_t m
    for L in range(2, 65):
        m = <uint64_t>0xFFFFFFFFFFFFFFFF if L == 64 else ((<uint64_t>1 << L) - 1)
        otpf_factor(&_MERSENNE[L], m)


_init_mersenne()


# ------------------------------------------------------------------ validation

cdef object _integer(object value, str field):
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidParameter(field, f"must be an integer, got {type(value).__name__}") from None


cdef int _degree(object poly) except -1:
    poly = _integer(poly, "poly")
    if poly <= 0:
        raise InvalidParameter("poly", "must be a positive integer")
    cdef int L = poly.bit_length() - 1
    if L < 2 or L > 64:
        raise InvalidParameter("poly", f"degree must be 2..64, got {L}")
    if not poly & 1:
        raise InvalidParameter("poly", "must have bit 0 set (constant term 1)")
    return L


cdef int _poly(object poly, otpf_poly *p) except -1:
    cdef int L = _degree(poly)
    otpf_poly_init(p, <uint64_t>(operator.index(poly) ^ (_ONE << L)), L)
    return L


cdef uint64_t _state(object state, int L) except? 0:
    state = _integer(state, "state")
    if not 1 <= state < (_ONE << L):
        raise InvalidParameter("state", f"must be in [1, 2^{L}) for a degree-{L} polynomial")
    return <uint64_t>state


cdef uint64_t _range(object value, str field, object lo, object hi) except? 0:
    """value in [lo, hi), as uint64."""
    value = _integer(value, field)
    if not lo <= value < hi:
        raise InvalidParameter(field, f"must be in [{lo}, {hi}), got {value}")
    return <uint64_t>value


cdef int _check_degree(object degree, int lo, int hi) except -1:
    degree = _integer(degree, "degree")
    if not lo <= degree <= hi:
        raise InvalidParameter("degree", f"must be {lo}..{hi}, got {degree}")
    return degree


cdef int _CPUS = _os.cpu_count() or 1  # os.cpu_count() reads sysfs on every call


cdef int _threads(object num_threads, uint64_t work) except -1:
    """sklearn's rules: None = OpenMP's default capped by the CPU count; -k = cpus + 1 - k."""
    cdef int cpus = _CPUS
    cdef int t
    if num_threads is None:
        t = min(otpf_omp_max_threads(), cpus)
    else:
        num_threads = _integer(num_threads, "num_threads")
        if num_threads == 0:
            raise InvalidParameter("num_threads", "must not be 0")
        t = min(num_threads, MAX_THREADS) if num_threads > 0 else max(cpus + num_threads + 1, 1)
    if not OTPF_OPENMP or work < PARALLEL_MIN:
        return 1
    return max(1, min(t, MAX_THREADS))


def _set_simd(int level):
    """Test hook: the highest vector level later calls may use (2 = AVX-512F,
    1 = AVX2 + FMA, 0 = portable C). Returns the level the CPU then actually runs."""
    global otpf_simd_allowed
    otpf_simd_allowed = level
    return 2 if otpf_cpu_avx512() else 1 if otpf_cpu_avx2() else 0


def effective_num_threads(num_threads=None):
    """The thread count a kernel would use for a large batch (1 without OpenMP)."""
    return _threads(num_threads, <uint64_t>-1)


cdef object _as_array(object values, str typecode, str field):
    if isinstance(values, _array_mod.array) and values.typecode == typecode:
        return values
    try:
        return _array_mod.array(typecode, values)
    except (OverflowError, TypeError) as exc:
        bits = 32 if typecode == "I" else 64
        raise InvalidParameter(field, f"must be integers in [0, 2^{bits})") from exc


# ------------------------------------------------------------------------ LFSR

def lfsr_step(poly, state):
    """One step: s <<= 1; if s >> L: s ^= poly."""
    cdef otpf_poly p
    cdef int L = _poly(poly, &p)
    return otpf_step(&p, _state(state, L))


def lfsr_fill(poly, state, n):
    """array('Q') of n states starting with `state` (s0, s1, ...)."""
    cdef otpf_poly p
    cdef int L = _poly(poly, &p)
    cdef uint64_t s = _state(state, L)
    cdef uint64_t count = _range(n, "count", 0, _P40)
    cdef array.array out = array.clone(_U64, count, False)
    cdef otpf_stream st
    otpf_stream_lfsr_init(&st, p.low, L)
    with nogil:
        otpf_fill_lanes(&st, s, <uint64_t *>out.data.as_ulonglongs, count)
    return out


def lfsr_advance(poly, state, k):
    """The state after k steps, in O(log k): state * x^k mod poly."""
    cdef otpf_poly p
    cdef int L = _poly(poly, &p)
    cdef uint64_t s = _state(state, L)
    cdef uint64_t kk = _range(k, "k", 0, _P64)
    with nogil:
        s = otpf_advance(&p, s, kk)
    return s


def lfsr_is_primitive(poly):
    """True iff poly is primitive over GF(2) (its LFSR has period 2^L - 1)."""
    cdef otpf_poly p
    cdef int L = _poly(poly, &p)
    return bool(otpf_is_primitive(&p, &_MERSENNE[L]))


def lfsr_count_primitive(degree):
    """Number of primitive polynomials of the degree: phi(2^L - 1) / L."""
    cdef int L = _check_degree(degree, 2, 64)
    cdef otpf_factors *f = &_MERSENNE[L]
    phi = 1
    for i in range(f.count):
        prime = <object>f.prime[i]
        phi *= (prime - 1) * prime ** (<object>f.exp[i] - 1)
    return phi // L


cdef uint64_t _smallest_primitive_low(int L):
    cdef otpf_poly p
    cdef uint64_t low = 1
    while True:
        otpf_poly_init(&p, low, L)
        if otpf_is_primitive(&p, &_MERSENNE[L]):
            return low
        low += 2


def lfsr_primitive_all(degree):
    """array('Q') of every primitive polynomial of the degree (2..28), ascending."""
    cdef int L = _check_degree(degree, 2, LFSR_ALL_MAX_DEGREE)
    cdef uint64_t total = lfsr_count_primitive(L)
    cdef array.array out = array.clone(_U64, total, False)
    cdef uint64_t base = _smallest_primitive_low(L)
    cdef long got
    with nogil:
        got = otpf_primitive_all(L, base, &_MERSENNE[L], <uint64_t *>out.data.as_ulonglongs)
    if got < 0:
        raise MemoryError()
    if <uint64_t>got != total:
        raise RuntimeError(f"enumerated {got} primitive polynomials of degree {L}, expected {total}")
    return out


_PRIMITIVE_CACHE = {}


def lfsr_primitive_at(degree, k):
    """The k-th (from 0) primitive polynomial of the degree in increasing order."""
    cdef int L = _check_degree(degree, 2, 64)
    total = lfsr_count_primitive(L)
    cdef uint64_t index = _range(k, "k", 0, total)
    if L <= LFSR_INDEX_MAX_DEGREE:
        table = _PRIMITIVE_CACHE.get(L)
        if table is None:
            table = _PRIMITIVE_CACHE[L] = lfsr_primitive_all(L)
        return table[index]
    cdef otpf_poly p
    cdef uint64_t low = 1
    cdef uint64_t seen = 0
    with nogil:
        while True:
            otpf_poly_init(&p, low, L)
            if otpf_is_primitive(&p, &_MERSENNE[L]):
                if seen == index:
                    break
                seen += 1
            low += 2
    return (_ONE << L) | low


# ---------------------------------------------------------------------- modexp

def modexp(base, exp, mod):
    """base^exp mod mod for 1 < mod < 2^63, 0 <= exp < 2^64 (Montgomery square-and-multiply)."""
    cdef uint64_t m = _range(mod, "mod", 2, _P63)
    cdef uint64_t e = _range(exp, "exp", 0, _P64)
    base = _integer(base, "base")
    if base < 0:
        raise InvalidParameter("base", "must not be negative")
    cdef uint64_t b = <uint64_t>(base % m)
    with nogil:
        b = otpf_powmod(b, e, m)
    return b


def modexp_batch(bases, exp, mod, num_threads=None):
    """array('Q') of b^exp mod mod for each b in bases (values in [0, 2^64))."""
    cdef uint64_t m = _range(mod, "mod", 2, _P63)
    cdef uint64_t e = _range(exp, "exp", 0, _P64)
    cdef array.array src = _as_array(bases, "Q", "bases")
    cdef Py_ssize_t count = len(src)
    cdef int threads = _threads(num_threads, count)
    cdef array.array out = array.clone(_U64, count, False)
    cdef const uint64_t *a = <const uint64_t *>src.data.as_ulonglongs
    cdef uint64_t *r = <uint64_t *>out.data.as_ulonglongs
    cdef Py_ssize_t i
    with nogil:
        for i in prange(count, num_threads=threads, schedule="dynamic", chunksize=1024):
            r[i] = otpf_powmod(a[i], e, m)
    return out


# ------------------------------------------------------------ RSA-type batches

ctypedef struct _Round:
    const otpf_stream *st
    const otpf_xform *x
    uint32_t *out
    uint64_t start[MAX_THREADS + 1]
    uint64_t value[MAX_THREADS]
    uint64_t got[MAX_THREADS]
    uint64_t used[MAX_THREADS]
    uint64_t nxt[MAX_THREADS]


cdef void _round_chunk(_Round *r, int t) noexcept nogil:
    cdef uint64_t length = r.start[t + 1] - r.start[t]
    r.got[t] = otpf_run(r.st, r.value[t], length, length, r.x, r.out + r.start[t],
                        &r.used[t], &r.nxt[t])


cdef uint64_t _walk(const otpf_stream *st, uint64_t value, uint64_t count, const otpf_xform *x,
                    uint32_t *out, int threads, uint64_t *next_value) noexcept nogil:
    """Fill out[0..count) from the stream starting at candidate `value`; returns the
    number of candidates consumed. Parallel rounds hand each thread an equal slice of
    `remaining` candidates (jumping ahead to its start), then close the gaps in order:
    a slice yields at most one output per candidate, so nothing overshoots and the
    result is the same for any thread count."""
    cdef uint64_t produced = 0, consumed = 0, remaining, used, w
    cdef _Round r
    cdef int t, T
    r.st = st
    r.x = x
    while produced < count:
        remaining = count - produced
        if threads <= 1 or remaining < PARALLEL_MIN:
            produced += otpf_run(st, value, <uint64_t>-1, remaining, x, out + produced, &used, &value)
            consumed += used
            break
        # a few slices per thread, handed out dynamically: a thread that the OS
        # deschedules on a busy machine then holds up only a small slice
        T = min(MAX_THREADS, CHUNKS_PER_THREAD * threads)
        r.out = out + produced
        for t in range(T + 1):
            r.start[t] = remaining * <uint64_t>t // <uint64_t>T
        r.value[0] = value
        for t in range(1, T):
            r.value[t] = otpf_stream_jump(st, value, r.start[t])
        for t in prange(T, num_threads=threads, schedule="dynamic", chunksize=1):
            _round_chunk(&r, t)
        w = produced + r.got[0]
        for t in range(1, T):
            memmove(out + w, out + produced + r.start[t], r.got[t] * sizeof(uint32_t))
            w += r.got[t]
        produced = w
        consumed += remaining
        value = r.nxt[T - 1]
    next_value[0] = value
    return consumed


cdef class _Transform:
    """Holds an otpf_xform and the CRT tables it points to."""
    cdef otpf_xform x
    cdef uint32_t *t1
    cdef uint32_t *t2

    def __dealloc__(self):
        free(self.t1)
        free(self.t2)


cdef list _n_prime_powers(uint64_t n):
    cdef otpf_factors f
    otpf_factor(&f, n)
    return [(f.prime[i], f.exp[i]) for i in range(f.count)]


cdef tuple _crt_split(list powers):
    """n = n1 * n2 with coprime, balanced factors (n2 = 1 for a prime power)."""
    n1 = n2 = 1
    for p, k in sorted(powers, key=lambda pk: pk[0] ** pk[1], reverse=True):
        if n1 <= n2:
            n1 *= p ** k
        else:
            n2 *= p ** k
    return n1, n2


cdef void _fill_table(uint32_t *table, uint64_t size, uint64_t exp, uint64_t other, uint64_t n,
                      int threads) noexcept nogil:
    """table[r] = (r^exp mod size) * M mod n with M = 1 mod size, 0 mod other; non-units marked."""
    cdef uint64_t inv, M, r
    cdef Py_ssize_t i
    if size == 1:
        table[0] = 0
        return
    # other^-1 mod size by the extended Euclid on machine words
    cdef long long a = <long long>(other % size), b = <long long>size, x0 = 1, x1 = 0, q, tmp
    while b:
        q = a // b
        tmp = a - q * b; a = b; b = tmp
        tmp = x0 - q * x1; x0 = x1; x1 = tmp
    inv = <uint64_t>((x0 % <long long>size + <long long>size) % <long long>size)
    M = otpf_mulmod(other % n, inv, n)
    for i in prange(<Py_ssize_t>size, num_threads=threads, schedule="static"):
        if otpf_gcd(<uint64_t>i, size) != 1:
            table[i] = OTPF_NONUNIT
        else:
            table[i] = <uint32_t>otpf_mulmod(otpf_powmod(<uint64_t>i, exp, size), M, n)


cdef _Transform _transform(uint64_t n, uint64_t exp, object method, uint64_t work, int threads,
                           bint identity=False):
    """Build the per-candidate transform: the skip rule for n, and a^exp mod n by
    CRT tables ("crt") or square-and-multiply ("sqm"); "auto" picks CRT when n splits
    into coprime factors below 2^22 and the tables cost less than the batch."""
    if method not in ("auto", "crt", "sqm"):
        raise InvalidParameter("method", f"must be 'auto', 'crt' or 'sqm', got {method!r}")
    cdef _Transform tr = _Transform()
    cdef otpf_xform *x = &tr.x
    cdef Py_ssize_t i
    cdef uint64_t size1, size2
    powers = _n_prime_powers(n)
    x.n = <uint32_t>n
    x.nprimes = len(powers)
    for i, (p, k) in enumerate(powers):
        otpf_fastmod_init(&x.primes[i], <uint32_t>p)
    x.exp = exp
    x.n_odd = n & 1
    x.avx512 = otpf_cpu_avx512()
    x.avx2 = otpf_cpu_avx2()
    if x.n_odd:
        otpf_mont_init(&x.mont, n)
    n1, n2 = _crt_split(powers)
    crt_ok = max(n1, n2) <= CRT_TABLE_MAX
    if method == "crt" and not crt_ok:
        raise InvalidParameter(
            "method", f"'crt' needs n = n1*n2 with coprime factors below 2^22; {n} does not split so")
    if identity:
        x.method = OTPF_IDENTITY
    elif method == "crt" or (method == "auto" and crt_ok and n1 + n2 <= 2 * work):
        x.method = OTPF_CRT
        tr.t1 = <uint32_t *>malloc(n1 * sizeof(uint32_t))
        tr.t2 = <uint32_t *>malloc(n2 * sizeof(uint32_t))
        if tr.t1 == NULL or tr.t2 == NULL:
            raise MemoryError()
        size1 = n1
        size2 = n2
        if size1 + size2 < PARALLEL_MIN:
            threads = 1
        with nogil:
            _fill_table(tr.t1, size1, exp, size2, n, threads)
            _fill_table(tr.t2, size2, exp, size1, n, threads)
        x.T1 = tr.t1
        x.T2 = tr.t2
        otpf_fastmod_init(&x.f1, <uint32_t>n1)
        otpf_fastmod_init(&x.f2, <uint32_t>n2)
        otpf_xform_narrow(x, <uint32_t>n1, <uint32_t>n2)
    else:
        x.method = OTPF_SQM
    return tr


cdef uint64_t _modulus(object n) except 0:
    return _range(n, "n", 2, _P32)


cdef int _lfsr_stream(otpf_stream *st, object poly, object n) except -1:
    cdef int L = _poly(poly, &st.poly)
    otpf_stream_lfsr_init(st, st.poly.low, L)
    if not otpf_is_primitive(&st.poly, &_MERSENNE[L]):
        raise InvalidParameter("poly", "must be a primitive polynomial")
    if L > (<object>n).bit_length() + STREAM_SPREAD_BITS:
        raise InvalidParameter(
            "poly", f"degree {L} is too large for n = {n}: almost every state >= n would be skipped")
    return L


cdef int _primroot_stream(otpf_stream *st, object n, object prime, object generator) except -1:
    cdef uint64_t P = _range(prime, "prime", 3, _P32)
    if not otpf_is_prime(P):
        raise InvalidParameter("prime", f"{P} is not prime")
    if P > (<uint64_t>n) << STREAM_SPREAD_BITS:
        raise InvalidParameter(
            "prime", f"{P} is too large for n = {n}: almost every power >= n would be skipped")
    cdef uint64_t g = _range(generator, "generator", 2, P)
    cdef otpf_factors f
    otpf_factor(&f, P - 1)
    for i in range(f.count):
        if otpf_powmod(g, (P - 1) // f.prime[i], P) == 1:
            raise InvalidParameter("generator", f"{g} is not a primitive root modulo {P}")
    otpf_stream_primroot_init(st, P, g)
    return 0


cdef tuple _generate(otpf_stream *st, uint64_t first, object n, object e, object count,
                     object num_threads, object method):
    cdef uint64_t nn = _modulus(n)
    cdef uint64_t ee = _range(e, "e", 1, _P64)
    cdef uint64_t c = _range(count, "count", 0, _P40)
    cdef int threads = _threads(num_threads, c)
    cdef _Transform tr = _transform(nn, ee, method, c, threads)
    cdef array.array out = array.clone(_U32, c, False)
    cdef uint64_t consumed, nxt
    with nogil:
        consumed = _walk(st, first, c, &tr.x, <uint32_t *>out.data.as_uints, threads, &nxt)
    return out, consumed, nxt


cdef tuple _verify(otpf_stream *st, uint64_t first, object n, object d, object otps,
                   object num_threads, object method):
    cdef uint64_t nn = _modulus(n)
    cdef uint64_t dd = _range(d, "d", 1, _P64)
    cdef array.array given = _as_array(otps, "I", "otps")
    cdef uint64_t c = len(given)
    cdef int threads = _threads(num_threads, c)
    cdef _Transform ident = _transform(nn, 1, "sqm", c, threads, True)
    cdef _Transform tr = _transform(nn, dd, method, c, threads)
    cdef array.array expect = array.clone(_U32, c, False)
    cdef bytes mask = PyBytes_FromStringAndSize(NULL, c)
    cdef uint8_t *m = <uint8_t *>PyBytes_AS_STRING(mask)
    cdef const uint32_t *g = <const uint32_t *>given.data.as_uints
    cdef const uint32_t *a = <const uint32_t *>expect.data.as_uints
    cdef uint64_t nxt, ok = 0, step, lo, hi
    cdef Py_ssize_t b, nblocks
    with nogil:
        _walk(st, first, c, &ident.x, <uint32_t *>expect.data.as_uints, threads, &nxt)
        step = 1 << 14
        nblocks = <Py_ssize_t>((c + step - 1) // step)
        for b in prange(nblocks, num_threads=threads, schedule="dynamic"):
            lo = b * step
            hi = lo + step
            if hi > c:
                hi = c
            ok += otpf_verify_block(&tr.x, g + lo, a + lo, hi - lo, m + lo)
    return ok, mask


def rsa_lfsr_generate(n, e, poly, state, count, num_threads=None, method="auto"):
    """(array('I') of `count` OTPs a^e mod n, next_state) over the LFSR stream from `state`.

    A candidate a is used iff 1 <= a < n and gcd(a, n) == 1. next_state is the state right
    after the candidate of the last OTP, so a call with it continues the stream. method:
    "sqm" (square-and-multiply), "crt" (per-factor power tables; n is factored here, it
    is below 2^32) or "auto" (the faster valid one). Results do not depend on it."""
    cdef otpf_stream st
    cdef int L = _lfsr_stream(&st, poly, _modulus(n))
    cdef uint64_t s = _state(state, L)
    out, consumed, nxt = _generate(&st, s, n, e, count, num_threads, method)
    return out, nxt


def rsa_lfsr_verify_mask(n, d, poly, state, otps, num_threads=None, method="auto"):
    """bytes: 1 where otps[i]^d mod n is the i-th used candidate of the stream, else 0."""
    cdef otpf_stream st
    cdef int L = _lfsr_stream(&st, poly, _modulus(n))
    cdef uint64_t s = _state(state, L)
    return _verify(&st, s, n, d, otps, num_threads, method)[1]


def rsa_lfsr_verify(n, d, poly, state, otps, num_threads=None, method="auto"):
    """How many otps[i] satisfy otps[i]^d mod n == the i-th used candidate of the stream."""
    cdef otpf_stream st
    cdef int L = _lfsr_stream(&st, poly, _modulus(n))
    cdef uint64_t s = _state(state, L)
    return _verify(&st, s, n, d, otps, num_threads, method)[0]


cdef uint64_t _first_power(otpf_stream *st, object start) except? 0:
    start = _integer(start, "start")
    if start < 0:
        raise InvalidParameter("start", "must not be negative")
    return otpf_powmod(st.g, <uint64_t>(start % (st.P - 1)), st.P)


def rsa_primroot_generate(n, e, prime, generator, start, count, num_threads=None, method="auto"):
    """(array('I') of `count` OTPs, next_exponent) over the stream g^start, g^(start+1), ...
    mod prime, with the same skip rule; next_exponent continues the stream."""
    cdef otpf_stream st
    _primroot_stream(&st, _modulus(n), prime, generator)
    cdef uint64_t first = _first_power(&st, start)
    out, consumed, nxt = _generate(&st, first, n, e, count, num_threads, method)
    return out, operator.index(start) + consumed


def rsa_primroot_verify_mask(n, d, prime, generator, start, otps, num_threads=None, method="auto"):
    """bytes: 1 where otps[i]^d mod n is the i-th used power of the stream, else 0."""
    cdef otpf_stream st
    _primroot_stream(&st, _modulus(n), prime, generator)
    cdef uint64_t first = _first_power(&st, start)
    return _verify(&st, first, n, d, otps, num_threads, method)[1]


def rsa_primroot_verify(n, d, prime, generator, start, otps, num_threads=None, method="auto"):
    """How many otps[i] satisfy otps[i]^d mod n == the i-th used power of the stream."""
    cdef otpf_stream st
    _primroot_stream(&st, _modulus(n), prime, generator)
    cdef uint64_t first = _first_power(&st, start)
    return _verify(&st, first, n, d, otps, num_threads, method)[0]


# ------------------------------------------------------------------- text out

def format_decimal(values, digits):
    """bytes: each value zero-padded to `digits` (wider if it needs more), one per line."""
    digits = _integer(digits, "digits")
    if not 1 <= digits <= 20:
        raise InvalidParameter("digits", f"must be 1..20, got {digits}")
    cdef array.array src
    if isinstance(values, _array_mod.array) and values.typecode in ("I", "Q"):
        src = values
    else:
        src = _as_array(values, "Q", "values")
    cdef Py_ssize_t count = len(src)
    cdef int w = digits
    cdef bint narrow = src.typecode == "I"
    cdef const uint32_t *v32 = <const uint32_t *>src.data.as_uints
    cdef const uint64_t *v64 = <const uint64_t *>src.data.as_ulonglongs
    cdef uint64_t largest = 0, limit = 10 ** digits if digits < 20 else <uint64_t>-1
    cdef Py_ssize_t i
    with nogil:
        for i in range(count):
            if narrow:
                largest = v32[i] if v32[i] > largest else largest
            else:
                largest = v64[i] if v64[i] > largest else largest
    if digits < 20 and largest >= limit:
        return b"".join(b"%0*d\n" % (digits, v) for v in src)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, count * (w + 1))
    cdef char *dst = PyBytes_AS_STRING(out)
    cdef Py_ssize_t step = 1 << 16, nblocks = (count + step - 1) // step, b, lo, hi
    cdef int threads = _threads(None, count)
    with nogil:
        for b in prange(nblocks, num_threads=threads, schedule="dynamic"):
            lo = b * step
            hi = lo + step
            if hi > count:
                hi = count
            if narrow:
                otpf_format_fixed32(v32 + lo, hi - lo, w, dst + lo * (w + 1))
            else:
                otpf_format_fixed(v64 + lo, hi - lo, w, dst + lo * (w + 1))
    return out


include "_core_hash.pxi"
include "_core_store.pxi"
