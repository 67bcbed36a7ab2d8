# The store's MAC kernels, and the RADIUS codec's HMAC-MD5 (included at the end of
# _core.pyx); _core_py_store.py is the spec.
#
# Speed: the store MACs every row it writes and checks every row it reads (keyed
# BLAKE2b-256, otpfast.store.rows), and chains every audit entry (HMAC-SHA256,
# otpfast.store.chain). Here a whole batch is one call: the values are encoded into one C
# buffer (no bytes object per value) and hashed with the keyed state computed once per call
# (BLAKE2b, RFC 7693, written out here; SHA-256 from OpenSSL).
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <math.h>
    #include <stdio.h>
    #include <openssl/crypto.h>
    #ifndef OPENSSL_SUPPRESS_DEPRECATED
    #define OPENSSL_SUPPRESS_DEPRECATED 1
    #endif
    #include <openssl/sha.h>
    #include <openssl/md5.h>

    typedef struct { uint64_t h[8]; uint64_t t; } otpfr_key;   /* t: bytes compressed */

    static const uint64_t otpfr_iv[8] = {
        0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
        0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
        0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};
    static const uint8_t otpfr_sigma[12][16] = {
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
        {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
        {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
        {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
        {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
        {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
        {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
        {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
        {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

    static inline uint64_t otpfr_load64(const uint8_t *p) {
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
    #else
        uint64_t v = 0;
        int i;
        for (i = 7; i >= 0; i--) v = (v << 8) | p[i];
        return v;
    #endif
    }
    #define OTPFR_ROTR(x, n) (((x) >> (n)) | ((x) << (64 - (n))))
    #define OTPFR_G(r, i, a, b, c, d) do {                                         \\
        a = a + b + m[otpfr_sigma[r][2 * i]]; d = OTPFR_ROTR(d ^ a, 32);            \\
        c = c + d;                            b = OTPFR_ROTR(b ^ c, 24);            \\
        a = a + b + m[otpfr_sigma[r][2 * i + 1]]; d = OTPFR_ROTR(d ^ a, 16);        \\
        c = c + d;                            b = OTPFR_ROTR(b ^ c, 63);            \\
    } while (0)
    #define OTPFR_ROUND(r) do {                                                     \\
        OTPFR_G(r, 0, v[0], v[4], v[8], v[12]);                                     \\
        OTPFR_G(r, 1, v[1], v[5], v[9], v[13]);                                     \\
        OTPFR_G(r, 2, v[2], v[6], v[10], v[14]);                                    \\
        OTPFR_G(r, 3, v[3], v[7], v[11], v[15]);                                    \\
        OTPFR_G(r, 4, v[0], v[5], v[10], v[15]);                                    \\
        OTPFR_G(r, 5, v[1], v[6], v[11], v[12]);                                    \\
        OTPFR_G(r, 6, v[2], v[7], v[8], v[13]);                                     \\
        OTPFR_G(r, 7, v[3], v[4], v[9], v[14]);                                     \\
    } while (0)

    /* RFC 7693 F: compress one 128-byte block; t = bytes hashed so far including it
       (below 2^64: the high word of the counter stays 0). The rounds are written out
       so that every message-word index is a constant. */
    static void otpfr_compress(uint64_t h[8], const uint8_t *block, uint64_t t, int last) {
        uint64_t v[16], m[16];
        int i;
        for (i = 0; i < 16; i++) m[i] = otpfr_load64(block + 8 * i);
        for (i = 0; i < 8; i++) { v[i] = h[i]; v[i + 8] = otpfr_iv[i]; }
        v[12] ^= t;
        if (last) v[14] = ~v[14];
        OTPFR_ROUND(0); OTPFR_ROUND(1); OTPFR_ROUND(2); OTPFR_ROUND(3);
        OTPFR_ROUND(4); OTPFR_ROUND(5); OTPFR_ROUND(6); OTPFR_ROUND(7);
        OTPFR_ROUND(8); OTPFR_ROUND(9); OTPFR_ROUND(10); OTPFR_ROUND(11);
        for (i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
    }

    /* The state after the parameter block and the key block (0 < keylen <= 64): every
       message after it is non-empty, so the key block is never the last. */
    static void otpfr_init(otpfr_key *k, const uint8_t *key, size_t keylen, size_t outlen) {
        uint8_t block[128];
        int i;
        for (i = 0; i < 8; i++) k->h[i] = otpfr_iv[i];
        k->h[0] ^= 0x01010000ULL ^ ((uint64_t)keylen << 8) ^ (uint64_t)outlen;
        k->t = 0;
        if (keylen > 0) {
            memset(block, 0, sizeof block);
            memcpy(block, key, keylen);
            k->t = 128;
            otpfr_compress(k->h, block, k->t, 0);
            OPENSSL_cleanse(block, sizeof block);
        }
    }

    /* The first outlen bytes of BLAKE2b(key, msg), msglen > 0. */
    static void otpfr_mac(const otpfr_key *k, const uint8_t *msg, size_t msglen,
                          uint8_t *out, size_t outlen) {
        uint64_t h[8], t = k->t;
        uint8_t block[128];
        size_t i;
        memcpy(h, k->h, sizeof h);
        while (msglen > 128) {
            t += 128;
            otpfr_compress(h, msg, t, 0);
            msg += 128;
            msglen -= 128;
        }
        memset(block, 0, sizeof block);
        memcpy(block, msg, msglen);
        t += msglen;
        otpfr_compress(h, block, t, 1);
        for (i = 0; i < outlen; i++) out[i] = (uint8_t)(h[i / 8] >> (8 * (i % 8)));
    }

    /* "%lld" of v into out (at least 21 bytes); its length. */
    static inline int otpfr_decimal(long long v, char *out) {
        return snprintf(out, 24, "%lld", v);
    }
    /* A double's IEEE 754 bits, big-endian. */
    static inline void otpfr_double_be(double d, uint8_t *out) {
        uint64_t bits;
        int i;
        memcpy(&bits, &d, 8);
        for (i = 0; i < 8; i++) out[i] = (uint8_t)(bits >> (56 - 8 * i));
    }
    static inline int otpfr_integral(double d) {
        return isfinite(d) && d == floor(d) && fabs(d) < 9007199254740992.0;
    }

    /* HMAC-SHA256 (RFC 2104) with the keyed inner and outer states computed once. */
    typedef struct { SHA256_CTX inner, outer; } otpfr_hmac;
    static void otpfr_hmac_init(otpfr_hmac *k, const uint8_t *key, size_t keylen) {
        uint8_t pad[64];
        size_t i;                                   /* keylen <= 64 */
        for (i = 0; i < 64; i++) pad[i] = (uint8_t)((i < keylen ? key[i] : 0) ^ 0x36);
        SHA256_Init(&k->inner); SHA256_Update(&k->inner, pad, 64);
        for (i = 0; i < 64; i++) pad[i] = (uint8_t)((i < keylen ? key[i] : 0) ^ 0x5c);
        SHA256_Init(&k->outer); SHA256_Update(&k->outer, pad, 64);
        OPENSSL_cleanse(pad, sizeof pad);
    }
    static void otpfr_hmac_run(const otpfr_hmac *k, const uint8_t *msg, size_t n,
                               uint8_t out[32]) {
        SHA256_CTX c = k->inner;
        SHA256_Update(&c, msg, n); SHA256_Final(out, &c);
        c = k->outer;
        SHA256_Update(&c, out, 32); SHA256_Final(out, &c);
        OPENSSL_cleanse(&c, sizeof c);
    }

    /* HMAC-MD5, as otpfr_hmac. */
    typedef struct { MD5_CTX inner, outer; } otpfr_hmac_md5;
    static void otpfr_hmac_md5_init(otpfr_hmac_md5 *k, const uint8_t *key, size_t keylen) {
        uint8_t pad[64];
        size_t i;                                   /* keylen <= 64 */
        for (i = 0; i < 64; i++) pad[i] = (uint8_t)((i < keylen ? key[i] : 0) ^ 0x36);
        MD5_Init(&k->inner); MD5_Update(&k->inner, pad, 64);
        for (i = 0; i < 64; i++) pad[i] = (uint8_t)((i < keylen ? key[i] : 0) ^ 0x5c);
        MD5_Init(&k->outer); MD5_Update(&k->outer, pad, 64);
        OPENSSL_cleanse(pad, sizeof pad);
    }
    static void otpfr_hmac_md5_run(const otpfr_hmac_md5 *k, const uint8_t *msg, size_t n,
                                   uint8_t out[16]) {
        MD5_CTX c = k->inner;
        MD5_Update(&c, msg, n); MD5_Final(out, &c);
        c = k->outer;
        MD5_Update(&c, out, 16); MD5_Final(out, &c);
        OPENSSL_cleanse(&c, sizeof c);
    }
    """
    ctypedef struct otpfr_key:
        pass
    void otpfr_init(otpfr_key *k, const uint8_t *key, size_t keylen, size_t outlen) noexcept nogil
    void otpfr_mac(const otpfr_key *k, const uint8_t *msg, size_t msglen, uint8_t *out,
                   size_t outlen) noexcept nogil
    int otpfr_decimal(long long v, char *out) noexcept nogil
    void otpfr_double_be(double d, uint8_t *out) noexcept nogil
    int otpfr_integral(double d) noexcept nogil
    int CRYPTO_memcmp(const void *a, const void *b, size_t n) noexcept nogil
    ctypedef struct otpfr_hmac:
        pass
    void otpfr_hmac_init(otpfr_hmac *k, const uint8_t *key, size_t keylen) noexcept nogil
    void otpfr_hmac_run(const otpfr_hmac *k, const uint8_t *msg, size_t n,
                        uint8_t *out) noexcept nogil
    ctypedef struct otpfr_hmac_md5:
        pass
    void otpfr_hmac_md5_init(otpfr_hmac_md5 *k, const uint8_t *key, size_t keylen) noexcept nogil
    void otpfr_hmac_md5_run(const otpfr_hmac_md5 *k, const uint8_t *msg, size_t n,
                            uint8_t *out) noexcept nogil

cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int *type) except NULL
    void PyMem_Free(void *p)
    int Py_DTSF_ADD_DOT_0
    long long PyLong_AsLongLongAndOverflow(object obj, int *overflow) except? -1
    bint PyLong_CheckExact(object obj)
    bint PyFloat_CheckExact(object obj)
    bint PyUnicode_CheckExact(object obj)
    bint PyBytes_CheckExact(object obj)
    bint PyBool_Check(object obj)

ROW_MAC_BYTES = 32


cdef struct _RowBuffer:
    char *data
    size_t length
    size_t capacity


cdef int _rb_reserve(_RowBuffer *b, size_t extra) except -1:
    cdef size_t want = b.length + extra
    cdef char *grown
    if want <= b.capacity:
        return 0
    want = max(want, 2 * b.capacity, 256)
    grown = <char *>realloc(b.data, want)
    if grown == NULL:
        raise MemoryError()
    b.data, b.capacity = grown, want
    return 0


cdef int _rb_put(_RowBuffer *b, const char *data, size_t n) except -1:
    _rb_reserve(b, n)
    memcpy(b.data + b.length, data, n)
    b.length += n
    return 0


cdef int _rb_int_text(_RowBuffer *b, long long v) except -1:
    cdef char digits[24]
    cdef int n = otpfr_decimal(v, digits)
    _rb_reserve(b, <size_t>n + 2)
    b.data[b.length] = b"i"
    memcpy(b.data + b.length + 1, digits, n)
    b.data[b.length + 1 + n] = b";"
    b.length += <size_t>n + 2
    return 0


cdef int _rb_int(_RowBuffer *b, object value) except -1:
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    cdef bytes text
    if overflow:
        text = b"i%d;" % value
        return _rb_put(b, PyBytes_AS_STRING(text), len(text))
    return _rb_int_text(b, v)


cdef int _rb_blob(_RowBuffer *b, char kind, const char *data, Py_ssize_t n) except -1:
    cdef char head[24]
    cdef int m = otpfr_decimal(n, head)
    _rb_reserve(b, <size_t>(m + 2 + n))
    b.data[b.length] = kind
    memcpy(b.data + b.length + 1, head, m)
    b.data[b.length + 1 + m] = b":"
    memcpy(b.data + b.length + 2 + m, data, n)
    b.length += <size_t>(m + 2 + n)
    return 0


cdef int _rb_value(_RowBuffer *b, object value) except -1:
    cdef double d
    cdef uint8_t raw[9]
    cdef const char *text
    cdef Py_ssize_t n
    cdef bytes data
    if value is None:
        return _rb_put(b, b"N", 1)
    if PyLong_CheckExact(value) or PyBool_Check(value):
        return _rb_int(b, value)
    if PyFloat_CheckExact(value):
        d = PyFloat_AS_DOUBLE(value)
        if otpfr_integral(d):
            return _rb_int_text(b, <long long>d)
        raw[0] = b"f"
        otpfr_double_be(d, raw + 1)
        return _rb_put(b, <const char *>raw, 9)
    if PyUnicode_CheckExact(value):
        text = PyUnicode_AsUTF8AndSize(value, &n)
        return _rb_blob(b, b"s", text, n)
    data = value if PyBytes_CheckExact(value) else bytes(value)
    return _rb_blob(b, b"b", PyBytes_AS_STRING(data), len(data))


def row_encode(value):
    """One value as the MAC input holds it (see _core_py_store.row_encode)."""
    cdef _RowBuffer b
    b.data, b.length, b.capacity = NULL, 0, 0
    try:
        _rb_value(&b, value)
        return PyBytes_FromStringAndSize(b.data, b.length)
    finally:
        free(b.data)


def row_macs(key, tag, rows):
    """Keyed BLAKE2b-256 of each row of ``rows`` under ``tag`` (see _core_py_store.row_macs).
    Returns a list of 32-byte digests."""
    cdef bytes kb = bytes(key)
    cdef bytes head = tag.encode("ascii") + b"\0"
    cdef otpfr_key state
    cdef _RowBuffer b
    cdef uint8_t digest[32]
    cdef list out = []
    cdef object value
    if len(kb) > 64:
        raise ValueError("maximum key length is 64 bytes")
    otpfr_init(&state, <const uint8_t *>PyBytes_AS_STRING(kb), len(kb), 32)
    b.data, b.length, b.capacity = NULL, 0, 0
    try:
        _rb_put(&b, PyBytes_AS_STRING(head), len(head))
        for row in rows:
            b.length = len(head)
            if type(row) is tuple or type(row) is list:
                for value in row:
                    _rb_value(&b, value)
            else:
                for value in tuple(row):
                    _rb_value(&b, value)
            otpfr_mac(&state, <const uint8_t *>b.data, b.length, digest, 32)
            out.append(PyBytes_FromStringAndSize(<char *>digest, 32))
    finally:
        if b.data != NULL:
            OPENSSL_cleanse(b.data, b.capacity)
            free(b.data)
        OPENSSL_cleanse(&state, sizeof(otpfr_key))
    return out


def issued_used_macs(key, rows, now, ver):
    """For issued rows read as unused (see _core_py_store.issued_used_macs): per row the MAC
    it gets once marked used at ``now`` with version ``ver``, or None if its stored MAC is
    not that of the row as read."""
    cdef bytes kb = bytes(key)
    cdef otpfr_key state
    cdef _RowBuffer b
    cdef uint8_t digest[32]
    cdef size_t prefix
    cdef list out = []
    cdef object stored
    if len(kb) > 64:
        raise ValueError("maximum key length is 64 bytes")
    otpfr_init(&state, <const uint8_t *>PyBytes_AS_STRING(kb), len(kb), 32)
    b.data, b.length, b.capacity = NULL, 0, 0
    try:
        for id_, account, otp_digest, expires_at, row_ver, stored in rows:
            b.length = 0
            _rb_put(&b, b"i\0", 2)
            for value in (id_, account, otp_digest, expires_at):
                _rb_value(&b, value)
            prefix = b.length
            if row_ver is None or stored is None:
                out.append(None)
                continue
            if type(stored) is not bytes:
                stored = bytes(stored)
            _rb_put(&b, b"N", 1)
            _rb_value(&b, row_ver)
            otpfr_mac(&state, <const uint8_t *>b.data, b.length, digest, 32)
            if len(<bytes>stored) != 32 or CRYPTO_memcmp(digest, PyBytes_AS_STRING(<bytes>stored), 32) != 0:
                out.append(None)
                continue
            b.length = prefix
            _rb_value(&b, now)
            _rb_value(&b, ver)
            otpfr_mac(&state, <const uint8_t *>b.data, b.length, digest, 32)
            out.append(PyBytes_FromStringAndSize(<char *>digest, 32))
    finally:
        if b.data != NULL:
            OPENSSL_cleanse(b.data, b.capacity)
            free(b.data)
        OPENSSL_cleanse(&state, sizeof(otpfr_key))
    return out


cdef int _rb_field(_RowBuffer *b, const char *data, Py_ssize_t n) except -1:
    """A 4-byte big-endian length, then the bytes (an audit field)."""
    cdef uint8_t head[4]
    if n > 0xFFFFFFFF:
        raise OverflowError("audit field too long")
    head[0], head[1] = (n >> 24) & 0xFF, (n >> 16) & 0xFF
    head[2], head[3] = (n >> 8) & 0xFF, n & 0xFF
    _rb_put(b, <const char *>head, 4)
    return _rb_put(b, data, n)


cdef int _rb_text_field(_RowBuffer *b, object text) except -1:
    cdef const char *data
    cdef Py_ssize_t n
    if not PyUnicode_CheckExact(text):
        raise TypeError(f"audit fields are str, got {type(text).__name__}")
    data = PyUnicode_AsUTF8AndSize(text, &n)
    return _rb_field(b, data, n)


def audit_chain_macs(key, seq, prev, entries, rows=None):
    """The HMAC-SHA256 chain of audit entries numbered seq + 1, ... (see
    _core_py_store.audit_chain_macs). Returns a list of 32-byte MACs."""
    cdef bytes kb = bytes(key)
    cdef bytes pb = bytes(prev)
    cdef otpfr_hmac state
    cdef _RowBuffer b
    cdef uint8_t mac[32]
    cdef char digits[24]
    cdef long long number = seq
    cdef double when
    cdef uint64_t bits, last_bits = 0
    cdef bytes when_text = None
    cdef char *text
    cdef int first = 1, n
    cdef list out = []
    if len(kb) > 64:
        kb = _hash_hashlib.sha256(kb).digest()
    otpfr_hmac_init(&state, <const uint8_t *>PyBytes_AS_STRING(kb), len(kb))
    b.data, b.length, b.capacity = NULL, 0, 0
    try:
        for entry in entries:
            time_, event, account, client, source, outcome = entry
            number += 1
            b.length = 0
            if first:
                _rb_put(&b, PyBytes_AS_STRING(pb), len(pb))
            else:
                _rb_put(&b, <const char *>mac, 32)
            n = otpfr_decimal(number, digits)
            _rb_field(&b, digits, n)
            when = float(time_)
            memcpy(&bits, &when, 8)
            if when_text is None or bits != last_bits:     # a batch shares its time
                text = PyOS_double_to_string(when, b"r", 0, Py_DTSF_ADD_DOT_0, NULL)
                try:
                    when_text = text
                finally:
                    PyMem_Free(text)
                last_bits = bits
            _rb_field(&b, PyBytes_AS_STRING(when_text), len(when_text))
            for value in (event, account, client, source, outcome):
                _rb_text_field(&b, value)
            if first and rows is not None:
                _rb_text_field(&b, rows)
            first = 0
            otpfr_hmac_run(&state, <const uint8_t *>b.data, b.length, mac)
            out.append(PyBytes_FromStringAndSize(<char *>mac, 32))
    finally:
        if b.data != NULL:
            OPENSSL_cleanse(b.data, b.capacity)
            free(b.data)
        OPENSSL_cleanse(&state, sizeof(otpfr_hmac))
    return out


cdef class HmacSha256:
    """HMAC-SHA256 under one fixed key, the keyed states computed once (see
    _core_py_store.HmacSha256)."""
    cdef otpfr_hmac _state
    cdef readonly bytes key

    def __init__(self, key):
        cdef bytes kb = bytes(key)
        if len(kb) > 64:
            kb = _hash_hashlib.sha256(kb).digest()
        self.key = kb
        otpfr_hmac_init(&self._state, <const uint8_t *>PyBytes_AS_STRING(kb), len(kb))

    def __call__(self, message):
        cdef const unsigned char[::1] view
        cdef uint8_t mac[32]
        if PyBytes_CheckExact(message):
            otpfr_hmac_run(&self._state, <const uint8_t *>PyBytes_AS_STRING(message),
                           len(<bytes>message), mac)
        else:
            view = message
            otpfr_hmac_run(&self._state, &view[0] if view.shape[0] else <const uint8_t *>b"",
                           view.shape[0], mac)
        return PyBytes_FromStringAndSize(<char *>mac, 32)

    def __dealloc__(self):
        OPENSSL_cleanse(&self._state, sizeof(otpfr_hmac))


cdef class HmacMd5:
    """HMAC-MD5 under one fixed key, the keyed states computed once (see
    _core_py_store.HmacMd5)."""
    cdef otpfr_hmac_md5 _state
    cdef readonly bytes key

    def __init__(self, key):
        cdef bytes kb = bytes(key)
        if len(kb) > 64:
            kb = _hash_hashlib.md5(kb).digest()
        self.key = kb
        otpfr_hmac_md5_init(&self._state, <const uint8_t *>PyBytes_AS_STRING(kb), len(kb))

    def __call__(self, message):
        cdef const unsigned char[::1] view
        cdef uint8_t mac[16]
        if PyBytes_CheckExact(message):
            otpfr_hmac_md5_run(&self._state, <const uint8_t *>PyBytes_AS_STRING(message),
                               len(<bytes>message), mac)
        else:
            view = message
            otpfr_hmac_md5_run(&self._state,
                               &view[0] if view.shape[0] else <const uint8_t *>b"",
                               view.shape[0], mac)
        return PyBytes_FromStringAndSize(<char *>mac, 16)

    def __dealloc__(self):
        OPENSSL_cleanse(&self._state, sizeof(otpfr_hmac_md5))
