# otpfast._ristretto: ristretto255 through libsodium, an optional extension (setup.py builds it
# only where libsodium-dev is installed); _core_py_ristretto.py is the spec (ctypes twin).
# Arguments are validated with the GIL held; hashing and scalar multiplication run
# under `with nogil`, batches split across OpenMP threads (libsodium is thread-safe).
# expand_message_xmd (RFC 9380 §5.3.1) for 64 output bytes is two SHA-512 calls (libsodium's).
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cython.parallel cimport prange
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

import operator
import os as _os

from otpfast.errors import InvalidElement, InvalidParameter, InvalidScalar

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define OTPR_OPENMP 1
    static int otpr_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define OTPR_OPENMP 0
    static int otpr_omp_max_threads(void) { return 1; }
    #endif
    """
    int OTPR_OPENMP
    int otpr_omp_max_threads() nogil

cdef extern from "sodium.h" nogil:
    int sodium_init()
    int sodium_is_zero(const unsigned char *n, const size_t nlen)
    void sodium_memzero(void *pnt, const size_t length)
    ctypedef struct crypto_hash_sha512_state:
        pass
    int crypto_hash_sha512_init(crypto_hash_sha512_state *state)
    int crypto_hash_sha512_update(crypto_hash_sha512_state *state, const unsigned char *m,
                                  unsigned long long mlen)
    int crypto_hash_sha512_final(crypto_hash_sha512_state *state, unsigned char *out)
    int crypto_core_ristretto255_is_valid_point(const unsigned char *p)
    int crypto_core_ristretto255_add(unsigned char *r, const unsigned char *p, const unsigned char *q)
    int crypto_core_ristretto255_sub(unsigned char *r, const unsigned char *p, const unsigned char *q)
    int crypto_core_ristretto255_from_hash(unsigned char *p, const unsigned char *r)
    int crypto_scalarmult_ristretto255(unsigned char *q, const unsigned char *n, const unsigned char *p)
    int crypto_scalarmult_ristretto255_base(unsigned char *q, const unsigned char *n)
    void crypto_core_ristretto255_scalar_random(unsigned char *r)
    int crypto_core_ristretto255_scalar_invert(unsigned char *recip, const unsigned char *s)
    void crypto_core_ristretto255_scalar_negate(unsigned char *neg, const unsigned char *s)
    void crypto_core_ristretto255_scalar_add(unsigned char *z, const unsigned char *x, const unsigned char *y)
    void crypto_core_ristretto255_scalar_sub(unsigned char *z, const unsigned char *x, const unsigned char *y)
    void crypto_core_ristretto255_scalar_mul(unsigned char *z, const unsigned char *x, const unsigned char *y)
    void crypto_core_ristretto255_scalar_reduce(unsigned char *r, const unsigned char *s)

cdef extern from *:
    """
    #include <sodium.h>
    /* expand_message_xmd(msg, dst, 64) with SHA-512 (one output block, RFC 9380 5.3.1) */
    static void otpr_xmd64(const unsigned char *msg, size_t len, const unsigned char *dst,
                           size_t dlen, unsigned char out[64]) {
        static const unsigned char zpad[128] = {0};
        const unsigned char lib_str[3] = {0, 64, 0};
        const unsigned char one = 1, dl = (unsigned char)dlen;
        unsigned char b0[64];
        crypto_hash_sha512_state st;
        crypto_hash_sha512_init(&st);
        crypto_hash_sha512_update(&st, zpad, sizeof zpad);
        crypto_hash_sha512_update(&st, msg, len);
        crypto_hash_sha512_update(&st, lib_str, sizeof lib_str);
        crypto_hash_sha512_update(&st, dst, dlen);
        crypto_hash_sha512_update(&st, &dl, 1);
        crypto_hash_sha512_final(&st, b0);
        crypto_hash_sha512_init(&st);
        crypto_hash_sha512_update(&st, b0, sizeof b0);
        crypto_hash_sha512_update(&st, &one, 1);
        crypto_hash_sha512_update(&st, dst, dlen);
        crypto_hash_sha512_update(&st, &dl, 1);
        crypto_hash_sha512_final(&st, out);
    }
    /* k * hash_to_ristretto255(msg, dst); 0, or -1 if k is zero (validated before) */
    static int otpr_hash_mul(const unsigned char *k, const unsigned char *msg, size_t len,
                             const unsigned char *dst, size_t dlen, unsigned char out[32]) {
        unsigned char uniform[64], point[32];
        otpr_xmd64(msg, len, dst, dlen, uniform);
        crypto_core_ristretto255_from_hash(point, uniform);
        return crypto_scalarmult_ristretto255(out, k, point);
    }
    /* k * p for a non-identity encoding p: 0, or -1 if p is not a valid element */
    static int otpr_mul(const unsigned char *k, const unsigned char *p, unsigned char out[32]) {
        if (sodium_is_zero(p, 32) || crypto_scalarmult_ristretto255(out, k, p) != 0) {
            sodium_memzero(out, 32);  /* the identity marks the failure for the caller */
            return -1;
        }
        return 0;
    }
    """
    void otpr_xmd64(const unsigned char *msg, size_t len, const unsigned char *dst, size_t dlen,
                    unsigned char *out) nogil
    int otpr_hash_mul(const unsigned char *k, const unsigned char *msg, size_t len,
                      const unsigned char *dst, size_t dlen, unsigned char *out) nogil
    int otpr_mul(const unsigned char *k, const unsigned char *p, unsigned char *out) nogil

if sodium_init() < 0:
    raise ImportError("libsodium failed to initialise")

R255_BYTES = 32
R255_SCALAR_BYTES = 32
R255_HASH_BYTES = 64
R255_ORDER = (1 << 252) + 27742317777372353535851937790883648493
OPENMP_ENABLED = bool(OTPR_OPENMP)
cdef bytes _R255_ZERO = bytes(32)
# a scalar multiplication weighs like this many word operations when deciding on threads
cdef uint64_t _R255_WEIGHT = 1024
# the thread rules of otpfast._core: work below PARALLEL_MIN stays on one thread
cdef enum:
    MAX_THREADS = 64
cdef uint64_t PARALLEL_MIN = 1 << 15
cdef int _CPUS = _os.cpu_count() or 1


cdef int _threads(object num_threads, uint64_t work) except -1:
    """sklearn's rules: None = OpenMP's default capped by the CPU count; -k = cpus + 1 - k."""
    cdef int t
    if num_threads is None:
        t = min(otpr_omp_max_threads(), _CPUS)
    else:
        try:
            num_threads = operator.index(num_threads)
        except TypeError:
            raise InvalidParameter(
                "num_threads", f"must be an integer, got {type(num_threads).__name__}") from None
        if num_threads == 0:
            raise InvalidParameter("num_threads", "must not be 0")
        t = min(num_threads, MAX_THREADS) if num_threads > 0 else max(_CPUS + num_threads + 1, 1)
    if not OTPR_OPENMP or work < PARALLEL_MIN:
        return 1
    return max(1, min(t, MAX_THREADS))


def require():
    """Nothing to check: this module loaded, so libsodium did (the twin's may raise)."""


# ------------------------------------------------------------------ validation

cdef bytes _r255_bytes(object value, Py_ssize_t size, str field, object error):
    try:
        value = bytes(memoryview(value))
    except TypeError:
        raise error(field, f"must be bytes, got {type(value).__name__}") from None
    if len(<bytes>value) != size:
        raise error(field, f"must be {size} bytes, got {len(value)}")
    return <bytes>value


cdef bytes _r255_element(object value, str field):
    cdef bytes b = _r255_bytes(value, 32, field, InvalidElement)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(b)
    if sodium_is_zero(p, 32) or not crypto_core_ristretto255_is_valid_point(p):
        raise InvalidElement(field, "is not a ristretto255 element (or is the identity)")
    return b


cdef bytes _r255_scalar(object value, str field, bint nonzero=False):
    cdef bytes b = _r255_bytes(value, 32, field, InvalidScalar)
    if int.from_bytes(b, "little") >= R255_ORDER:
        raise InvalidScalar(field, "is not a canonical scalar (not below the group order)")
    if nonzero and b == _R255_ZERO:
        raise InvalidScalar(field, "must not be zero")
    return b


cdef bytes _r255_message(object value, str field):
    try:
        return bytes(memoryview(value))
    except TypeError:
        raise InvalidParameter(field, f"must be bytes, got {type(value).__name__}") from None


cdef bytes _r255_dst(object dst):
    cdef bytes b = _r255_message(dst, "dst")
    if not 1 <= len(b) <= 255:
        raise InvalidParameter("dst", f"must be 1..255 bytes, got {len(b)}")
    return b


cdef list _r255_sequence(object values, str field):
    if isinstance(values, (bytes, bytearray, memoryview, str)):
        raise InvalidParameter(field, "must be a sequence of byte strings")
    try:
        return list(values)
    except TypeError:
        raise InvalidParameter(field, "must be a sequence of byte strings") from None


cdef inline const unsigned char *_u(bytes b):
    return <const unsigned char *>PyBytes_AS_STRING(b)


cdef list _r255_split(bytes packed, Py_ssize_t n):
    return [packed[i * 32:(i + 1) * 32] for i in range(n)]


# ----------------------------------------------------------------- hashing

def r255_hash_to_group(msg, dst):
    """hash_to_ristretto255 (RFC 9380 / RFC 9496): from_hash(expand_message_xmd(msg, dst, 64))."""
    cdef bytes m = _r255_message(msg, "msg")
    cdef bytes d = _r255_dst(dst)
    cdef unsigned char uniform[64]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    otpr_xmd64(_u(m), len(m), _u(d), len(d), uniform)
    crypto_core_ristretto255_from_hash(<unsigned char *>PyBytes_AS_STRING(out), uniform)
    return out


def r255_hash_to_scalar(msg, dst):
    """RFC 9497 HashToScalar for ristretto255: expand_message_xmd(msg, dst, 64) reduced mod the order."""
    cdef bytes m = _r255_message(msg, "msg")
    cdef bytes d = _r255_dst(dst)
    cdef unsigned char uniform[64]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    otpr_xmd64(_u(m), len(m), _u(d), len(d), uniform)
    crypto_core_ristretto255_scalar_reduce(<unsigned char *>PyBytes_AS_STRING(out), uniform)
    return out


# ------------------------------------------------------------------- group

def r255_is_valid(element):
    """True for the encoding of a group element other than the identity."""
    try:
        _r255_element(element, "element")
    except InvalidElement:
        return False
    return True


def r255_add(p, q):
    """p + q (may be the identity, 32 zero bytes)."""
    cdef bytes a = _r255_element(p, "p")
    cdef bytes b = _r255_element(q, "q")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    crypto_core_ristretto255_add(<unsigned char *>PyBytes_AS_STRING(out), _u(a), _u(b))
    return out


def r255_sub(p, q):
    """p - q (may be the identity, 32 zero bytes)."""
    cdef bytes a = _r255_element(p, "p")
    cdef bytes b = _r255_element(q, "q")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    crypto_core_ristretto255_sub(<unsigned char *>PyBytes_AS_STRING(out), _u(a), _u(b))
    return out


def r255_mul(k, element):
    """k * element for a non-zero scalar k."""
    cdef bytes s = _r255_scalar(k, "k", True)
    cdef bytes p = _r255_element(element, "element")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    cdef unsigned char *o = <unsigned char *>PyBytes_AS_STRING(out)
    cdef const unsigned char *ks = _u(s)
    cdef const unsigned char *ps = _u(p)
    cdef int rc
    with nogil:
        rc = crypto_scalarmult_ristretto255(o, ks, ps)
    if rc != 0:  # pragma: no cover - validated above
        raise InvalidElement("element", "is not a ristretto255 element")
    return out


def r255_mul_base(k):
    """k * G for a non-zero scalar k (G the ristretto255 generator)."""
    cdef bytes s = _r255_scalar(k, "k", True)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    cdef unsigned char *o = <unsigned char *>PyBytes_AS_STRING(out)
    cdef const unsigned char *ks = _u(s)
    with nogil:
        crypto_scalarmult_ristretto255_base(o, ks)
    return out


def r255_mul_many(k, elements, num_threads=None):
    """[k * e for e in elements]."""
    cdef bytes s = _r255_scalar(k, "k", True)
    cdef list items = _r255_sequence(elements, "elements")
    cdef Py_ssize_t n = len(items), i
    cdef int threads = _threads(num_threads, <uint64_t>n * _R255_WEIGHT)
    cdef bytes packed = b"".join([_r255_bytes(e, 32, "elements", InvalidElement) for e in items])
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n * 32)
    cdef const unsigned char *ks = _u(s)
    cdef const unsigned char *src = _u(packed)
    cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
    cdef bint bad = False
    with nogil:
        if threads == 1:
            for i in range(n):
                otpr_mul(ks, src + 32 * i, dst + 32 * i)
        else:
            for i in prange(n, num_threads=threads, schedule="static"):
                otpr_mul(ks, src + 32 * i, dst + 32 * i)
        for i in range(n):  # a failed product was left as the identity
            if sodium_is_zero(dst + 32 * i, 32):
                bad = True
    if bad:
        raise InvalidElement("elements", "holds a value that is not a ristretto255 element")
    return _r255_split(out, n)


def r255_hash_mul_many(k, msgs, dst, num_threads=None):
    """[k * hash_to_group(m, dst) for m in msgs]: a share server's partial evaluations."""
    cdef bytes s = _r255_scalar(k, "k", True)
    cdef bytes d = _r255_dst(dst)
    cdef list keep = [_r255_message(m, "msgs") for m in _r255_sequence(msgs, "msgs")]
    cdef Py_ssize_t n = len(keep), i
    cdef int threads = _threads(num_threads, <uint64_t>n * _R255_WEIGHT)
    cdef const unsigned char **ptrs = <const unsigned char **>malloc((n + 1) * sizeof(void *))
    cdef size_t *lens = <size_t *>malloc((n + 1) * sizeof(size_t))
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n * 32)
    cdef unsigned char *o = <unsigned char *>PyBytes_AS_STRING(out)
    cdef const unsigned char *ks = _u(s)
    cdef const unsigned char *dp = _u(d)
    cdef size_t dlen = len(d)
    if ptrs == NULL or lens == NULL:
        free(ptrs)
        free(lens)
        raise MemoryError()
    for i in range(n):
        ptrs[i] = _u(<bytes>keep[i])
        lens[i] = len(<bytes>keep[i])
    with nogil:
        if threads == 1:
            for i in range(n):
                otpr_hash_mul(ks, ptrs[i], lens[i], dp, dlen, o + 32 * i)
        else:
            for i in prange(n, num_threads=threads, schedule="static"):
                otpr_hash_mul(ks, ptrs[i], lens[i], dp, dlen, o + 32 * i)
    free(ptrs)
    free(lens)
    return _r255_split(out, n)


def r255_msm(scalars, elements):
    """sum(s_i * e_i): zero scalars add nothing; the result may be the identity."""
    cdef list ss = [_r255_scalar(s, "scalars") for s in _r255_sequence(scalars, "scalars")]
    cdef list es = [_r255_element(e, "elements") for e in _r255_sequence(elements, "elements")]
    if len(ss) != len(es):
        raise InvalidParameter("elements", "must be as many as the scalars")
    cdef Py_ssize_t n = len(ss), i
    cdef bytes sp = b"".join(ss)
    cdef bytes ep = b"".join(es)
    cdef const unsigned char *a = _u(sp)
    cdef const unsigned char *b = _u(ep)
    cdef unsigned char term[32]
    cdef unsigned char acc[32]
    cdef unsigned char nxt[32]
    cdef bint empty = True
    with nogil:
        sodium_memzero(acc, 32)
        for i in range(n):
            if sodium_is_zero(a + 32 * i, 32):
                continue
            if crypto_scalarmult_ristretto255(term, a + 32 * i, b + 32 * i) != 0:
                continue  # cannot happen: every element was validated
            if empty:  # the first term needs no addition (each add decodes and encodes)
                memcpy(acc, term, 32)
                empty = False
            else:
                crypto_core_ristretto255_add(nxt, acc, term)
                memcpy(acc, nxt, 32)
    return PyBytes_FromStringAndSize(<char *>acc, 32)


# ----------------------------------------------------------------- scalars

def r255_scalar_reduce(wide):
    """A 64-byte little-endian integer reduced mod the order."""
    cdef bytes w = _r255_bytes(wide, 64, "wide", InvalidParameter)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    crypto_core_ristretto255_scalar_reduce(<unsigned char *>PyBytes_AS_STRING(out), _u(w))
    return out


def r255_scalar_add(a, b):
    """a + b mod the order."""
    cdef bytes x = _r255_scalar(a, "a")
    cdef bytes y = _r255_scalar(b, "b")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    crypto_core_ristretto255_scalar_add(<unsigned char *>PyBytes_AS_STRING(out), _u(x), _u(y))
    return out


def r255_scalar_sub(a, b):
    """a - b mod the order."""
    cdef bytes x = _r255_scalar(a, "a")
    cdef bytes y = _r255_scalar(b, "b")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    crypto_core_ristretto255_scalar_sub(<unsigned char *>PyBytes_AS_STRING(out), _u(x), _u(y))
    return out


def r255_scalar_mul(a, b):
    """a * b mod the order."""
    cdef bytes x = _r255_scalar(a, "a")
    cdef bytes y = _r255_scalar(b, "b")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    crypto_core_ristretto255_scalar_mul(<unsigned char *>PyBytes_AS_STRING(out), _u(x), _u(y))
    return out


def r255_scalar_negate(a):
    """-a mod the order."""
    cdef bytes x = _r255_scalar(a, "a")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    crypto_core_ristretto255_scalar_negate(<unsigned char *>PyBytes_AS_STRING(out), _u(x))
    return out


def r255_scalar_invert(a):
    """1 / a mod the order, a non-zero."""
    cdef bytes x = _r255_scalar(a, "a", True)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    crypto_core_ristretto255_scalar_invert(<unsigned char *>PyBytes_AS_STRING(out), _u(x))
    return out


def r255_scalar_random():
    """A uniform non-zero scalar from libsodium's CSPRNG."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    crypto_core_ristretto255_scalar_random(<unsigned char *>PyBytes_AS_STRING(out))
    return out
