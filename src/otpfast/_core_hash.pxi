# HMAC/hash batch kernels (included at the end of _core.pyx); _core_py_hash.py is the spec.
#
# Speed: the HMAC inner and outer states (key XOR ipad/opad) are computed once per key; each
# OTP then costs exactly two compression-function calls on pre-padded blocks (OpenSSL's
# SHA*_Transform, which use SHA-NI where the CPU has it). A chain step costs one.
from cpython cimport array as _hash_carray
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cython.parallel cimport prange
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
import array as _hash_array
import hashlib as _hash_hashlib
import os as _hash_os
import struct as _hash_struct

cdef extern from *:
    """
    #define OPENSSL_SUPPRESS_DEPRECATED 1
    #if defined(__GNUC__)
    #pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    #endif
    #include <stdint.h>
    #include <string.h>
    #include <openssl/sha.h>
    #include <openssl/md5.h>
    #include <openssl/crypto.h>

    enum { OTPFH_SHA1 = 1, OTPFH_SHA256 = 2, OTPFH_SHA512 = 3, OTPFH_SHA384 = 4, OTPFH_MD5 = 5 };

    typedef union { SHA_CTX s1; SHA256_CTX s256; SHA512_CTX s512; MD5_CTX m5; } otpfh_state;

    static inline void otpfh_put32be(unsigned char *p, uint32_t v) {
        p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
        p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
    }
    static inline void otpfh_put32le(unsigned char *p, uint32_t v) {
        p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
        p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
    }
    static inline void otpfh_put64be(unsigned char *p, uint64_t v) {
        otpfh_put32be(p, (uint32_t)(v >> 32)); otpfh_put32be(p + 4, (uint32_t)v);
    }
    static inline size_t otpfh_block_size(int alg) {
        return (alg == OTPFH_SHA512 || alg == OTPFH_SHA384) ? 128 : 64;
    }
    static inline size_t otpfh_digest_size(int alg) {
        switch (alg) {
        case OTPFH_SHA1: return 20;
        case OTPFH_SHA256: return 32;
        case OTPFH_SHA384: return 48;
        case OTPFH_SHA512: return 64;
        default: return 16;
        }
    }
    static inline void otpfh_init(int alg, otpfh_state *st) {
        switch (alg) {
        case OTPFH_SHA1: SHA1_Init(&st->s1); break;
        case OTPFH_SHA256: SHA256_Init(&st->s256); break;
        case OTPFH_SHA384: SHA384_Init(&st->s512); break;
        case OTPFH_SHA512: SHA512_Init(&st->s512); break;
        default: MD5_Init(&st->m5); break;
        }
    }
    static inline void otpfh_compress(int alg, otpfh_state *st, const unsigned char *block) {
        switch (alg) {
        case OTPFH_SHA1: SHA1_Transform(&st->s1, block); break;
        case OTPFH_SHA256: SHA256_Transform(&st->s256, block); break;
        case OTPFH_SHA384: case OTPFH_SHA512: SHA512_Transform(&st->s512, block); break;
        default: MD5_Transform(&st->m5, block); break;
        }
    }
    /* The chaining value as the digest bytes (big-endian words; MD5 little-endian). */
    static inline void otpfh_digest(int alg, const otpfh_state *st, unsigned char *out) {
        int i;
        switch (alg) {
        case OTPFH_SHA1:
            otpfh_put32be(out, st->s1.h0); otpfh_put32be(out + 4, st->s1.h1);
            otpfh_put32be(out + 8, st->s1.h2); otpfh_put32be(out + 12, st->s1.h3);
            otpfh_put32be(out + 16, st->s1.h4); break;
        case OTPFH_SHA256:
            for (i = 0; i < 8; i++) otpfh_put32be(out + 4 * i, st->s256.h[i]);
            break;
        case OTPFH_SHA384:
            for (i = 0; i < 6; i++) otpfh_put64be(out + 8 * i, st->s512.h[i]);
            break;
        case OTPFH_SHA512:
            for (i = 0; i < 8; i++) otpfh_put64be(out + 8 * i, st->s512.h[i]);
            break;
        default:
            otpfh_put32le(out, st->m5.A); otpfh_put32le(out + 4, st->m5.B);
            otpfh_put32le(out + 8, st->m5.C); otpfh_put32le(out + 12, st->m5.D);
        }
    }
    /* Pad a message of msg_len bytes (already in block[0..msg_len)) that follows prefix_len
       bytes already compressed, as the last block; the message must fit in one block. */
    static inline void otpfh_pad_last(int alg, unsigned char *block, size_t msg_len,
                                     uint64_t prefix_len) {
        size_t bs = otpfh_block_size(alg);
        uint64_t bits = (prefix_len + msg_len) * 8;
        int i;
        memset(block + msg_len, 0, bs - msg_len);
        block[msg_len] = 0x80;
        if (alg == OTPFH_MD5) {
            for (i = 0; i < 8; i++) block[bs - 8 + i] = (unsigned char)(bits >> (8 * i));
        } else {
            otpfh_put64be(block + bs - 8, bits);
        }
    }

    /* HMAC inner/outer states from a key already no longer than the block size. */
    static void otpfh_hmac_states(int alg, const unsigned char *key, size_t keylen,
                                 otpfh_state *inner, otpfh_state *outer) {
        unsigned char pad[128];
        size_t bs = otpfh_block_size(alg), i;
        for (i = 0; i < bs; i++) pad[i] = (unsigned char)((i < keylen ? key[i] : 0) ^ 0x36);
        otpfh_init(alg, inner); otpfh_compress(alg, inner, pad);
        for (i = 0; i < bs; i++) pad[i] = (unsigned char)((i < keylen ? key[i] : 0) ^ 0x5c);
        otpfh_init(alg, outer); otpfh_compress(alg, outer, pad);
        OPENSSL_cleanse(pad, sizeof pad);
    }

    /* Fill out[k] = RFC 4226 DT(HMAC(K, counter + k)) mod modulus for k in [0, n). */
    static void otpfh_hotp_range(int alg, const otpfh_state *inner, const otpfh_state *outer,
                                uint64_t counter, size_t n, uint32_t modulus, uint32_t *out) {
        unsigned char ib[128], ob[128], dig[64];
        size_t bs = otpfh_block_size(alg), ds = otpfh_digest_size(alg), k;
        otpfh_state st;
        otpfh_pad_last(alg, ib, 8, bs);
        otpfh_pad_last(alg, ob, ds, bs);
        for (k = 0; k < n; k++) {
            unsigned int off;
            uint32_t bin;
            otpfh_put64be(ib, counter + (uint64_t)k);
            st = *inner; otpfh_compress(alg, &st, ib); otpfh_digest(alg, &st, ob);
            st = *outer; otpfh_compress(alg, &st, ob); otpfh_digest(alg, &st, dig);
            off = dig[ds - 1] & 0x0f;
            bin = ((uint32_t)(dig[off] & 0x7f) << 24) | ((uint32_t)dig[off + 1] << 16)
                | ((uint32_t)dig[off + 2] << 8) | (uint32_t)dig[off + 3];
            out[k] = bin % modulus;
        }
    }

    /* Lamport chain: out has n slots of ds bytes and slot n-1 already holds h(1); fill slot
       n-j with h(j) = H(h(j-1)) for j = 2..n (so slot 0 ends up as h(n), the anchor). */
    static void otpfh_chain_down(int alg, size_t n, unsigned char *out) {
        unsigned char block[128];
        size_t ds = otpfh_digest_size(alg), j;
        otpfh_state st;
        memcpy(block, out + (n - 1) * ds, ds);
        otpfh_pad_last(alg, block, ds, 0);
        for (j = 2; j <= n; j++) {
            otpfh_init(alg, &st); otpfh_compress(alg, &st, block);
            otpfh_digest(alg, &st, block);
            memcpy(out + (n - j) * ds, block, ds);
        }
    }

    /* RFC 2289 folding of a digest to 64 bits (SHA-1: words little-endian, Appendix A). */
    static inline void otpfh_fold(int alg, const otpfh_state *st, unsigned char *out8) {
        if (alg == OTPFH_SHA1) {
            otpfh_put32le(out8, st->s1.h0 ^ st->s1.h2 ^ st->s1.h4);
            otpfh_put32le(out8 + 4, st->s1.h1 ^ st->s1.h3);
        } else {
            otpfh_put32le(out8, st->m5.A ^ st->m5.C);
            otpfh_put32le(out8 + 4, st->m5.B ^ st->m5.D);
        }
    }

    /* RFC 2289: from the 64-bit value S(0), apply n steps S <- fold(H(S)); keep the last
       `keep` values, newest first: out = S(n), S(n-1), ..., S(n-keep+1). */
    static void otpfh_rfc2289(int alg, const unsigned char *s0, uint64_t n, size_t keep,
                             unsigned char *out) {
        unsigned char block[128];
        otpfh_state st;
        uint64_t i;
        memcpy(block, s0, 8);
        otpfh_pad_last(alg, block, 8, 0);
        if ((uint64_t)keep == n + 1) memcpy(out + (keep - 1) * 8, s0, 8);
        for (i = 1; i <= n; i++) {
            otpfh_init(alg, &st); otpfh_compress(alg, &st, block);
            otpfh_fold(alg, &st, block);
            if (i + (uint64_t)keep > n) memcpy(out + (size_t)(n - i) * 8, block, 8);
        }
    }
    """
    int OTPFH_SHA1, OTPFH_SHA256, OTPFH_SHA512, OTPFH_SHA384, OTPFH_MD5
    ctypedef struct otpfh_state:
        pass
    void otpfh_hmac_states(int alg, const uint8_t *key, size_t keylen,
                          otpfh_state *inner, otpfh_state *outer) noexcept nogil
    void otpfh_hotp_range(int alg, const otpfh_state *inner, const otpfh_state *outer,
                         uint64_t counter, size_t n, uint32_t modulus,
                         uint32_t *out) noexcept nogil
    void otpfh_chain_down(int alg, size_t n, uint8_t *out) noexcept nogil
    void otpfh_rfc2289(int alg, const uint8_t *s0, uint64_t n, size_t keep,
                      uint8_t *out) noexcept nogil
    void OPENSSL_cleanse(void *ptr, size_t len) noexcept nogil


HOTP_ALGORITHMS = ("sha1", "sha256", "sha512")
CHAIN_ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")
RFC2289_KERNEL_ALGORITHMS = ("md5", "sha1")
_HASH_IDS = {"sha1": OTPFH_SHA1, "sha256": OTPFH_SHA256, "sha384": OTPFH_SHA384,
             "sha512": OTPFH_SHA512, "md5": OTPFH_MD5}
_HASH_BLOCK = {"sha1": 64, "sha256": 64, "sha384": 128, "sha512": 128, "md5": 64}
cdef enum:
    _HOTP_CHUNK = 4096
_HOTP_SERIAL_BELOW = 16384


def _hash_algorithm(algorithm, allowed):
    if algorithm not in allowed:
        raise ValueError(f"algorithm must be one of {', '.join(allowed)}, got {algorithm!r}")
    return _HASH_IDS[algorithm]


def _hash_threads(num_threads, count):
    """sklearn's rules, as the rest of the core: None = all CPUs, -k = cpus + 1 - k; 0 is an
    error. Small batches and builds without OpenMP run on one thread."""
    cpus = max(1, len(_hash_os.sched_getaffinity(0)))
    if num_threads is None:
        threads = cpus
    elif isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads == 0:
        raise ValueError(f"num_threads must be a non-zero integer or None, got {num_threads!r}")
    else:
        threads = num_threads if num_threads > 0 else max(cpus + num_threads + 1, 1)
    if not OPENMP_ENABLED or count < _HOTP_SERIAL_BELOW:
        return 1
    return threads


def hotp_batch(key, counter, count, digits, algorithm="sha1", num_threads=None):
    """HOTP values (RFC 4226) for counters counter .. counter+count-1, as array('I').

    Each value is the dynamic truncation mod 10**digits (zero-pad to `digits` to print).
    """
    cdef int alg = _hash_algorithm(algorithm, HOTP_ALGORITHMS)
    cdef bytes kb = bytes(key)
    cdef const char *kp
    if not 1 <= digits <= 9:
        raise ValueError(f"digits must be in 1..9, got {digits}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if counter < 0 or counter + count > 2 ** 64:
        raise ValueError("counter range must lie in [0, 2**64)")
    if len(kb) > _HASH_BLOCK[algorithm]:
        kb = _hash_hashlib.new(algorithm, kb).digest()
    cdef otpfh_state inner
    cdef otpfh_state outer
    kp = kb
    otpfh_hmac_states(alg, <const uint8_t *>kp, len(kb), &inner, &outer)
    cdef _hash_carray.array result = _hash_carray.clone(
        _hash_array.array("I"), count, zero=False)
    cdef uint32_t *out = <uint32_t *>result.data.as_uints
    cdef uint32_t modulus = 10 ** digits
    cdef uint64_t first = counter
    cdef Py_ssize_t n = count
    cdef Py_ssize_t nchunks = (n + _HOTP_CHUNK - 1) // _HOTP_CHUNK
    cdef Py_ssize_t chunk, lo, hi
    cdef int threads = _hash_threads(num_threads, count)
    with nogil:
        if threads == 1:
            otpfh_hotp_range(alg, &inner, &outer, first, <size_t>n, modulus, out)
        else:
            for chunk in prange(nchunks, num_threads=threads, schedule="static"):
                lo = chunk * _HOTP_CHUNK
                hi = min(lo + _HOTP_CHUNK, n)
                otpfh_hotp_range(alg, &inner, &outer, first + <uint64_t>lo,
                                <size_t>(hi - lo), modulus, out + lo)
        OPENSSL_cleanse(&inner, sizeof(otpfh_state))  # key-derived: do not leave it behind
        OPENSSL_cleanse(&outer, sizeof(otpfh_state))
    return result


def hashchain_batch(seed, length, algorithm="sha256"):
    """Lamport chain h(0) = seed, h(i) = H(h(i-1)): returns h(length), h(length-1), ..., h(1)
    concatenated (length digests). Slice 0 is the anchor, slice i the OTP for use i
    (1 <= i < length); use `length` is h(0), the seed itself."""
    cdef int alg = _hash_algorithm(algorithm, CHAIN_ALGORITHMS)
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    cdef bytes h1 = _hash_hashlib.new(algorithm, bytes(seed)).digest()
    cdef const char *h1p = h1
    cdef Py_ssize_t ds = len(h1)
    cdef size_t n = length
    cdef bytes result = PyBytes_FromStringAndSize(NULL, length * ds)
    cdef uint8_t *out = <uint8_t *>PyBytes_AS_STRING(result)
    memcpy(out + (n - 1) * ds, h1p, ds)
    with nogil:
        otpfh_chain_down(alg, n, out)
    return result


def rfc2289_batch(start, sequence, count, algorithm="md5"):
    """RFC 2289 chain from the folded S(0) = fold(H(seed || passphrase)) (8 bytes):
    returns S(sequence), S(sequence-1), ..., S(sequence-count+1), 8 bytes each."""
    cdef int alg = _hash_algorithm(algorithm, RFC2289_KERNEL_ALGORITHMS)
    cdef bytes s0 = bytes(start)
    cdef const char *s0p = s0
    if len(s0) != 8:
        raise ValueError("start must be 8 bytes")
    if sequence < 0 or sequence >= 2 ** 63:
        raise ValueError(f"sequence must be in [0, 2**63), got {sequence}")
    if not 1 <= count <= sequence + 1:
        raise ValueError(f"count must be in 1..sequence+1, got {count}")
    cdef bytearray result = bytearray(count * 8)
    cdef uint8_t *out = result
    cdef uint64_t n = sequence
    cdef size_t keep = count
    with nogil:
        otpfh_rfc2289(alg, <const uint8_t *>s0p, n, keep, out)
    return bytes(result)


def rfc2289_fold(digest, algorithm):
    """RFC 2289 Appendix A: fold a digest to 64 bits. MD4/MD5: XOR the two halves. SHA-1:
    XOR the five 32-bit words into two (h0^h2^h4, h1^h3), each written little-endian."""
    cdef bytes d = bytes(digest)
    if algorithm == "sha1":
        h = _hash_struct.unpack(">5I", d)
        return _hash_struct.pack("<2I", h[0] ^ h[2] ^ h[4], h[1] ^ h[3])
    return bytes([a ^ b for a, b in zip(d[:8], d[8:16])])
