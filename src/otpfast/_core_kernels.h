/* Portable C kernels of otpfast._core: word arithmetic, factoring, GF(2) LFSR
 * arithmetic, primitive-polynomial enumeration and the RSA-type batch kernels.
 * Every function is reentrant and GIL-free; _core.pyx validates inputs first.
 * Fast paths are picked at run time (target_clones), the default build stays portable. */
#ifndef OTPFAST_CORE_KERNELS_H
#define OTPFAST_CORE_KERNELS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned __int128 otpf_u128;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define OTPF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OTPF_CLONES
#endif

/* ---------------------------------------------------------------- words */

static inline uint64_t otpf_gcd(uint64_t a, uint64_t b) {
    while (b) { uint64_t t = a % b; a = b; b = t; }
    return a;
}

static inline uint64_t otpf_mulmod(uint64_t a, uint64_t b, uint64_t m) {
    return (uint64_t)(((otpf_u128)a * b) % m);
}

/* Montgomery arithmetic for an odd modulus m < 2^63. */
typedef struct { uint64_t m, minv, r1, r2; } otpf_mont;

static inline void otpf_mont_init(otpf_mont *c, uint64_t m) {
    uint64_t inv = m;                       /* Newton: 5 steps give 64 bits */
    for (int i = 0; i < 5; i++) inv *= 2 - m * inv;
    c->m = m;
    c->minv = (uint64_t)0 - inv;
    c->r1 = ((uint64_t)0 - m) % m;          /* 2^64 mod m */
    c->r2 = otpf_mulmod(c->r1, c->r1, m);
}

static inline uint64_t otpf_redc(const otpf_mont *c, otpf_u128 t) {
    uint64_t q = (uint64_t)t * c->minv;
    uint64_t r = (uint64_t)((t + (otpf_u128)q * c->m) >> 64);
    return r >= c->m ? r - c->m : r;
}

static inline uint64_t otpf_mont_mul(const otpf_mont *c, uint64_t a, uint64_t b) {
    return otpf_redc(c, (otpf_u128)a * b);
}

static inline uint64_t otpf_mont_pow(const otpf_mont *c, uint64_t base, uint64_t e) {
    uint64_t x = otpf_mont_mul(c, base % c->m, c->r2);
    uint64_t r = c->r1 % c->m;
    if (e) {
        int top = 63 - __builtin_clzll(e);
        r = x;
        for (int i = top - 1; i >= 0; i--) {
            r = otpf_mont_mul(c, r, r);
            if ((e >> i) & 1) r = otpf_mont_mul(c, r, x);
        }
    }
    return otpf_redc(c, r);
}

/* base^e mod m by square-and-multiply, 1 <= m < 2^64 (Montgomery when m is odd and < 2^63). */
static inline uint64_t otpf_powmod(uint64_t base, uint64_t e, uint64_t m) {
    if (m == 1) return 0;
    if ((m & 1) && m < ((uint64_t)1 << 63)) {
        otpf_mont c;
        otpf_mont_init(&c, m);
        return otpf_mont_pow(&c, base, e);
    }
    uint64_t x = base % m, r = 1;
    while (e) {
        if (e & 1) r = otpf_mulmod(r, x, m);
        x = otpf_mulmod(x, x, m);
        e >>= 1;
    }
    return r;
}

/* Lemire's fast remainder by a run-time constant; numerator and divisor < 2^32. */
typedef struct { uint64_t M; uint32_t d; } otpf_fastmod;

static inline void otpf_fastmod_init(otpf_fastmod *f, uint32_t d) {
    f->d = d;
    f->M = UINT64_C(0xFFFFFFFFFFFFFFFF) / d + 1;
}

static inline uint32_t otpf_fmod(const otpf_fastmod *f, uint32_t a) {
    uint64_t low = f->M * a;
    return (uint32_t)(((otpf_u128)low * f->d) >> 64);
}

/* ------------------------------------------------------------ factoring */

static int otpf_is_prime(uint64_t n) {
    static const uint64_t small[] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37};
    if (n < 2) return 0;
    for (int i = 0; i < 12; i++) {
        if (n == small[i]) return 1;
        if (n % small[i] == 0) return 0;
    }
    uint64_t d = n - 1;
    int s = 0;
    while (!(d & 1)) { d >>= 1; s++; }
    for (int i = 0; i < 12; i++) {         /* deterministic for n < 3.3e24 */
        uint64_t x = otpf_powmod(small[i], d, n);
        if (x == 1 || x == n - 1) continue;
        int witness = 1;
        for (int r = 1; r < s; r++) {
            x = otpf_mulmod(x, x, n);
            if (x == n - 1) { witness = 0; break; }
        }
        if (witness) return 0;
    }
    return 1;
}

/* Pollard-Brent rho: a non-trivial factor of the odd composite n. */
static uint64_t otpf_rho(uint64_t n) {
    for (uint64_t c = 1;; c++) {
        uint64_t y = 2, x = 2, g = 1, q = 1, ys = 2;
        uint64_t r = 1;
        const uint64_t m = 128;
        do {
            x = y;
            for (uint64_t i = 0; i < r; i++) y = (otpf_mulmod(y, y, n) + c) % n;
            uint64_t k = 0;
            do {
                ys = y;
                for (uint64_t i = 0; i < m && i < r - k; i++) {
                    y = (otpf_mulmod(y, y, n) + c) % n;
                    q = otpf_mulmod(q, x > y ? x - y : y - x, n);
                }
                g = otpf_gcd(q, n);
                k += m;
            } while (k < r && g == 1);
            r <<= 1;
        } while (g == 1);
        if (g == n) {
            do {
                ys = (otpf_mulmod(ys, ys, n) + c) % n;
                g = otpf_gcd(x > ys ? x - ys : ys - x, n);
            } while (g == 1);
        }
        if (g != n) return g;
    }
}

#define OTPF_MAX_FACTORS 64

typedef struct { int count; uint64_t prime[OTPF_MAX_FACTORS]; int exp[OTPF_MAX_FACTORS]; } otpf_factors;

static void otpf_factors_add(otpf_factors *f, uint64_t p) {
    for (int i = 0; i < f->count; i++)
        if (f->prime[i] == p) { f->exp[i]++; return; }
    int i = f->count++;
    while (i > 0 && f->prime[i - 1] > p) {   /* keep primes sorted */
        f->prime[i] = f->prime[i - 1]; f->exp[i] = f->exp[i - 1]; i--;
    }
    f->prime[i] = p; f->exp[i] = 1;
}

static void otpf_factor_rec(otpf_factors *f, uint64_t n) {
    if (n == 1) return;
    if (otpf_is_prime(n)) { otpf_factors_add(f, n); return; }
    uint64_t d = otpf_rho(n);
    otpf_factor_rec(f, d);
    otpf_factor_rec(f, n / d);
}

/* Full factorisation of n >= 1 (small primes by trial division, the rest by rho). */
static void otpf_factor(otpf_factors *f, uint64_t n) {
    f->count = 0;
    for (uint64_t p = 2; p < 1024 && p * p <= n; p += (p == 2 ? 1 : 2)) {
        while (n % p == 0) { otpf_factors_add(f, p); n /= p; }
    }
    otpf_factor_rec(f, n);
}

/* -------------------------------------------------------------- GF(2) LFSR */

/* A connection polynomial P of degree L: low = P without x^L, mask = 2^L - 1. */
typedef struct { uint64_t low, mask; int L; } otpf_poly;

static inline void otpf_poly_init(otpf_poly *p, uint64_t low, int L) {
    p->L = L;
    p->mask = L == 64 ? ~(uint64_t)0 : (((uint64_t)1 << L) - 1);
    p->low = low & p->mask;
}

/* One step: s <<= 1; if s >> L: s ^= P (multiplication by x modulo P). */
static inline uint64_t otpf_step(const otpf_poly *p, uint64_t s) {
    uint64_t top = (s >> (p->L - 1)) & 1;
    return ((s << 1) & p->mask) ^ (p->low & ((uint64_t)0 - top));
}

static inline uint64_t otpf_gf2_mulmod(const otpf_poly *p, uint64_t a, uint64_t b) {
    uint64_t r = 0;
    for (int i = p->L - 1; i >= 0; i--) {
        r = otpf_step(p, r);
        r ^= a & ((uint64_t)0 - ((b >> i) & 1));
    }
    return r;
}

/* x^k mod P */
static inline uint64_t otpf_gf2_powx(const otpf_poly *p, uint64_t k) {
    uint64_t r = 1;
    if (!k) return r;
    for (int i = 63 - __builtin_clzll(k); i >= 0; i--) {
        r = otpf_gf2_mulmod(p, r, r);
        if ((k >> i) & 1) r = otpf_step(p, r);
    }
    return r;
}

static inline uint64_t otpf_advance(const otpf_poly *p, uint64_t s, uint64_t k) {
    return otpf_gf2_mulmod(p, s, otpf_gf2_powx(p, k));
}

static void otpf_fill(const otpf_poly *p, uint64_t s, uint64_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) { out[i] = s; s = otpf_step(p, s); }
}

/* Primitive iff x has order 2^L - 1 modulo P (this also implies P irreducible).
 * f holds the factorisation of 2^L - 1. */
static int otpf_is_primitive(const otpf_poly *p, const otpf_factors *f) {
    uint64_t order = p->mask;
    if (!(p->low & 1)) return 0;
    if (otpf_gf2_powx(p, order) != 1) return 0;
    for (int i = 0; i < f->count; i++)
        if (otpf_gf2_powx(p, order / f->prime[i]) == 1) return 0;
    return 1;
}

/* Berlekamp-Massey over GF(2) on nbits <= 64 bits (bit t of seq = s_t).
 * Returns the connection polynomial C(D) with bit i = c_i. */
static inline uint64_t otpf_berlekamp_massey(uint64_t seq, int nbits) {
    uint64_t C = 1, B = 1, window = 0;
    int L = 0, m = 1;
    for (int n = 0; n < nbits; n++) {             /* branch-free: d is a coin flip */
        window = (window << 1) | ((seq >> n) & 1);   /* bit i = s_{n-i} */
        uint64_t d = (uint64_t)__builtin_parityll(C & window);
        uint64_t T = C;
        C ^= (B << m) & ((uint64_t)0 - d);
        int grow = (int)d & (2 * L <= n);
        uint64_t gm = (uint64_t)0 - (uint64_t)grow;
        L = grow ? n + 1 - L : L;
        B = (T & gm) | (B & ~gm);
        m = grow ? 1 : m + 1;
    }
    return C;
}

/* Four independent Berlekamp-Massey runs interleaved (their dependency chains overlap). */
static inline void otpf_berlekamp_massey4(const uint64_t seq[4], int nbits, uint64_t out[4]) {
    uint64_t C[4] = {1, 1, 1, 1}, B[4] = {1, 1, 1, 1}, window[4] = {0, 0, 0, 0};
    int L[4] = {0, 0, 0, 0}, m[4] = {1, 1, 1, 1};
    for (int n = 0; n < nbits; n++) {
        for (int j = 0; j < 4; j++) {
            window[j] = (window[j] << 1) | ((seq[j] >> n) & 1);
            uint64_t d = (uint64_t)__builtin_parityll(C[j] & window[j]);
            uint64_t T = C[j];
            C[j] ^= (B[j] << m[j]) & ((uint64_t)0 - d);
            int grow = (int)d & (2 * L[j] <= n);
            uint64_t gm = (uint64_t)0 - (uint64_t)grow;
            L[j] = grow ? n + 1 - L[j] : L[j];
            B[j] = (T & gm) | (B[j] & ~gm);
            m[j] = grow ? 1 : m[j] + 1;
        }
    }
    for (int j = 0; j < 4; j++) out[j] = C[j];
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define OTPF_POPCNT_CLONES __attribute__((target_clones("popcnt", "default")))
#else
#define OTPF_POPCNT_CLONES
#endif

static const uint8_t otpf_rev8[256] = {
#define R2(n) n, n + 2 * 64, n + 1 * 64, n + 3 * 64
#define R4(n) R2(n), R2(n + 2 * 16), R2(n + 1 * 16), R2(n + 3 * 16)
#define R6(n) R4(n), R4(n + 2 * 4), R4(n + 1 * 4), R4(n + 3 * 4)
    R6(0), R6(2), R6(1), R6(3)
#undef R2
#undef R4
#undef R6
};

/* All primitive polynomials of degree L (2 <= L <= 28) in increasing order.
 * base_low: the low part of one primitive polynomial of degree L; f: factors of 2^L - 1.
 * out must hold phi(2^L - 1) / L entries. Returns the number written, or -1 (no memory). */
OTPF_POPCNT_CLONES
static long otpf_primitive_all(int L, uint64_t base_low, const otpf_factors *f, uint64_t *out) {
    otpf_poly p;
    otpf_poly_init(&p, base_low, L);
    const uint64_t M = p.mask;                      /* 2^L - 1 */
    const size_t words = (size_t)(M / 64 + 2);
    uint64_t *bits = (uint64_t *)calloc(words, 8);
    uint64_t *seen = (uint64_t *)calloc(words, 8);   /* coset members */
    uint64_t *found = (uint64_t *)calloc((size_t)(((uint64_t)1 << (L - 1)) / 64 + 1), 8);
    if (!bits || !seen || !found) { free(bits); free(seen); free(found); return -1; }
    /* the m-sequence: bit t = top bit of x^t mod P */
    uint64_t s = 1, t = 0;
    if (L >= 12 && base_low < ((uint64_t)1 << (L - 8))) {
        /* feedback stays below bit L-8 for 8 steps: the next 8 output bits are the
         * top byte of the state (reversed), and the state jumps by x^8 via a table */
        uint64_t T8[256];
        for (uint64_t h = 0; h < 256; h++) {
            uint64_t v = h << (L - 8);
            for (int i = 0; i < 8; i++) v = otpf_step(&p, v);
            T8[h] = v;
        }
        uint8_t *bytes = (uint8_t *)bits;
        for (; t + 8 <= M; t += 8) {
            uint64_t top = s >> (L - 8);
            bytes[t >> 3] = otpf_rev8[top];
            s = ((s << 8) & M) ^ T8[top];
        }
    }
    for (; t < M; t++) {
        bits[t >> 6] |= ((s >> (L - 1)) & 1) << (t & 63);
        s = otpf_step(&p, s);
    }
    otpf_fastmod fm[OTPF_MAX_FACTORS];
    for (int i = 0; i < f->count; i++) otpf_fastmod_init(&fm[i], (uint32_t)f->prime[i]);
    uint64_t pending[4], polys[4];
    int npending = 0;
    for (uint64_t k = 1; k < M; k += 2) {            /* an even k is never its coset's least */
        if ((seen[k >> 6] >> (k & 63)) & 1) continue;
        uint64_t r = k;                              /* mark the cyclotomic coset of k */
        for (int j = 0; j < L; j++) {
            seen[r >> 6] |= (uint64_t)1 << (r & 63);
            r = ((r << 1) | (r >> (L - 1))) & M;
        }
        int coprime = 1;
        for (int i = 0; i < f->count; i++)
            if (otpf_fmod(&fm[i], (uint32_t)k) == 0) { coprime = 0; break; }
        if (!coprime) continue;
        uint64_t seq = 0, idx = 0;
        for (int t = 0; t < 2 * L; t++) {
            seq |= ((bits[idx >> 6] >> (idx & 63)) & 1) << t;
            idx += k;
            if (idx >= M) idx -= M;
        }
        pending[npending++] = seq;
        if (npending == 4) {
            otpf_berlekamp_massey4(pending, 2 * L, polys);
            for (int j = 0; j < 4; j++) {
                uint64_t slot = (polys[j] & M) >> 1;     /* bits 0 and L are set */
                found[slot >> 6] |= (uint64_t)1 << (slot & 63);
            }
            npending = 0;
        }
    }
    for (int j = 0; j < npending; j++) {
        uint64_t slot = (otpf_berlekamp_massey(pending[j], 2 * L) & M) >> 1;
        found[slot >> 6] |= (uint64_t)1 << (slot & 63);
    }
    long count = 0;
    const uint64_t nslots = (uint64_t)1 << (L - 1);
    for (uint64_t w = 0; w * 64 < nslots; w++) {
        uint64_t word = found[w];
        while (word) {
            int b = __builtin_ctzll(word);
            word &= word - 1;
            out[count++] = ((uint64_t)1 << L) | (((w << 6) | (uint64_t)b) << 1) | 1;
        }
    }
    free(bits); free(seen); free(found);
    return count;
}

/* -------------------------------------------------- RSA-type batch kernels */

#define OTPF_LANES 8
#define OTPF_BLOCK 2048
#define OTPF_NONUNIT 0xFFFFFFFFu

/* A candidate stream: the LFSR states, or the powers g^i mod P of a primitive root.
 * Candidates are handed out as uint32; states >= 2^32 become 0xFFFFFFFF, which is
 * >= n and therefore skipped like the state itself would be. */
typedef struct {
    int kind;                  /* 0 = LFSR, 1 = primitive root */
    otpf_poly poly;
    int jump8;                 /* LFSR lanes advance by x^8 through T8 (L >= 8) */
    uint64_t T8[256];          /* T8[h] = h * x^L mod P */
    uint64_t P, g, g8;         /* g8 = g^8 mod P */
    uint64_t barrett;          /* floor((2^64 - 1) / P) */
} otpf_stream;

static inline uint64_t otpf_mod_p(const otpf_stream *st, uint64_t x) {
    uint64_t q = (uint64_t)(((otpf_u128)x * st->barrett) >> 64);
    uint64_t r = x - q * st->P;
    if (r >= st->P) r -= st->P;
    if (r >= st->P) r -= st->P;
    return r;
}

static void otpf_stream_lfsr_init(otpf_stream *st, uint64_t low, int L) {
    st->kind = 0;
    otpf_poly_init(&st->poly, low, L);
    st->jump8 = L >= 8;
    if (st->jump8)
        for (uint64_t h = 0; h < 256; h++) {
            uint64_t s = h << (L - 8);
            for (int i = 0; i < 8; i++) s = otpf_step(&st->poly, s);
            st->T8[h] = s;
        }
}

static void otpf_stream_primroot_init(otpf_stream *st, uint64_t P, uint64_t g) {
    st->kind = 1;
    st->P = P;
    st->g = g;
    st->barrett = UINT64_C(0xFFFFFFFFFFFFFFFF) / P;
    st->g8 = otpf_powmod(g, 8, P);
}

static inline uint64_t otpf_step8(const otpf_stream *st, uint64_t s) {
    return ((s << 8) & st->poly.mask) ^ st->T8[s >> (st->poly.L - 8)];
}

/* lfsr_fill: n states from s into out; 8 interleaved lanes jumping by x^8 when L >= 8. */
static void otpf_fill_lanes(const otpf_stream *st, uint64_t s, uint64_t *out, size_t n) {
    if (!st->jump8 || n < 64) { otpf_fill(&st->poly, s, out, n); return; }
    uint64_t lane[8];
    lane[0] = s;
    for (int j = 1; j < 8; j++) lane[j] = otpf_step(&st->poly, lane[j - 1]);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            out[i + j] = lane[j];
            lane[j] = otpf_step8(st, lane[j]);
        }
    for (int j = 0; i < n; i++, j++) out[i] = lane[j];
}

/* The candidate `k` positions after the candidate `value`. */
static inline uint64_t otpf_stream_jump(const otpf_stream *st, uint64_t value, uint64_t k) {
    if (st->kind == 0) return otpf_advance(&st->poly, value, k);
    return otpf_mulmod(value, otpf_powmod(st->g, k % (st->P - 1), st->P), st->P);
}

/* The filler keeps 8 lanes: lane j holds the candidate at position 8t + j. */
typedef struct { uint64_t lane[OTPF_LANES]; } otpf_cursor;

static inline void otpf_cursor_init(const otpf_stream *st, otpf_cursor *c, uint64_t value) {
    c->lane[0] = value;
    for (int j = 1; j < OTPF_LANES; j++)
        c->lane[j] = st->kind == 0 ? otpf_step(&st->poly, c->lane[j - 1])
                                   : otpf_mod_p(st, c->lane[j - 1] * st->g);
}

static inline uint32_t otpf_clip32(uint64_t a) { return a >> 32 ? OTPF_NONUNIT : (uint32_t)a; }

/* n candidates into buf; n is a multiple of OTPF_LANES except for a stream's last block. */
static inline void otpf_cursor_fill(const otpf_stream *st, otpf_cursor *c, uint32_t *buf, size_t n) {
    size_t i = 0;
    if (st->kind == 1) {
        for (; i + OTPF_LANES <= n; i += OTPF_LANES)
            for (int j = 0; j < OTPF_LANES; j++) {
                buf[i + j] = (uint32_t)c->lane[j];
                c->lane[j] = otpf_mod_p(st, c->lane[j] * st->g8);
            }
    } else if (st->jump8) {
        for (; i + OTPF_LANES <= n; i += OTPF_LANES)
            for (int j = 0; j < OTPF_LANES; j++) {
                buf[i + j] = otpf_clip32(c->lane[j]);
                c->lane[j] = otpf_step8(st, c->lane[j]);
            }
    } else {
        uint64_t s = c->lane[0];
        for (; i < n; i++) { buf[i] = otpf_clip32(s); s = otpf_step(&st->poly, s); }
        otpf_cursor_init(st, c, s);
        return;
    }
    for (int j = 0; i < n; i++, j++) buf[i] = otpf_clip32(c->lane[j]);
}

/* What is done to each used candidate a. */
enum { OTPF_IDENTITY = 0, OTPF_CRT = 1, OTPF_SQM = 2 };

typedef struct {
    int method;
    uint32_t n;
    int nprimes;
    otpf_fastmod primes[16];           /* distinct prime factors of n (skip rule) */
    /* CRT: n = n1 * n2 coprime; a^e = T1[a mod n1] + T2[a mod n2] (mod n); OTPF_NONUNIT
     * marks residues that are not units. */
    const uint32_t *T1, *T2;
    otpf_fastmod f1, f2;
    int narrow;                        /* 32-bit remainders are exact for a < n */
    int avx512;                        /* the CPU runs the AVX-512F kernels */
    int avx2;                          /* the CPU runs the AVX2 + FMA kernels */
    uint32_t c1, c2;                   /* ceil(2^32 / n1), ceil(2^32 / n2) */
    /* square-and-multiply */
    uint64_t exp;
    otpf_mont mont;
    int n_odd;
} otpf_xform;

/* Highest vector level used: 2 = AVX-512F, 1 = AVX2 + FMA, 0 = portable C. Tests lower
 * it to run every path on a CPU that has them all. */
static int otpf_simd_allowed = 2;

#if defined(__GNUC__) && defined(__x86_64__)
#define OTPF_X86 1
#include <immintrin.h>
static inline int otpf_cpu_avx512(void) {
    __builtin_cpu_init();
    return otpf_simd_allowed >= 2 && __builtin_cpu_supports("avx512f");
}
static inline int otpf_cpu_avx2(void) {
    __builtin_cpu_init();
    return otpf_simd_allowed >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
static inline int otpf_cpu_avx512(void) { return 0; }
static inline int otpf_cpu_avx2(void) { return 0; }
#endif

/* narrow remainders (Lemire, F = 32) are exact when bits(a) + bits(d) <= 32 */
static inline void otpf_xform_narrow(otpf_xform *x, uint32_t n1, uint32_t n2) {
    x->avx512 = otpf_cpu_avx512();
    x->avx2 = otpf_cpu_avx2();
    int nb = 32 - __builtin_clz(x->n);
    x->narrow = (uint64_t)n1 <= ((uint64_t)1 << (32 - nb)) && (uint64_t)n2 <= ((uint64_t)1 << (32 - nb));
    x->c1 = (uint32_t)(UINT64_C(0xFFFFFFFF) / n1 + 1);
    x->c2 = (uint32_t)(UINT64_C(0xFFFFFFFF) / n2 + 1);
}

static inline int otpf_is_unit(const otpf_xform *x, uint32_t a) {
    int ok = a < x->n;
    for (int i = 0; i < x->nprimes; i++)
        ok &= (x->primes[i].M * a) > (x->primes[i].M - 1);   /* not divisible */
    return ok;
}

static inline uint32_t otpf_sqm(const otpf_xform *x, uint32_t a) {
    if (x->n_odd) return (uint32_t)otpf_mont_pow(&x->mont, a, x->exp);
    uint64_t r = 1, b = a % x->n, e = x->exp;
    while (e) {
        if (e & 1) r = r * b % x->n;
        b = b * b % x->n;
        e >>= 1;
    }
    return (uint32_t)(r % x->n);
}

/* Square-and-multiply on 16 lanes at once in double precision (n < 2^26: products
 * are exact below 2^52). All lanes share the exponent, so the loop vectorises. */
OTPF_CLONES
static void otpf_sqm_lanes(const uint32_t *a, uint32_t *out, size_t count, uint64_t e, uint32_t n) {
    const double dn = (double)n, inv = 1.0 / (double)n;
    int top = e ? 63 - __builtin_clzll(e) : -1;
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        double base[16], r[16];
        for (int j = 0; j < 16; j++) { base[j] = (double)a[i + j]; r[j] = top >= 0 ? base[j] : 1.0; }
        for (int b = top - 1; b >= 0; b--) {
            for (int j = 0; j < 16; j++) {
                double p = r[j] * r[j];
                double t = p - __builtin_floor(p * inv) * dn;
                t = t < 0 ? t + dn : t;
                r[j] = t >= dn ? t - dn : t;
            }
            if ((e >> b) & 1) {
                for (int j = 0; j < 16; j++) {
                    double p = r[j] * base[j];
                    double t = p - __builtin_floor(p * inv) * dn;
                    t = t < 0 ? t + dn : t;
                    r[j] = t >= dn ? t - dn : t;
                }
            }
        }
        for (int j = 0; j < 16; j++) out[i + j] = (uint32_t)r[j];
    }
    for (; i < count; i++) {
        uint64_t r = 1, b = a[i] % n, k = e;
        while (k) {
            if (k & 1) r = r * b % n;
            b = b * b % n;
            k >>= 1;
        }
        out[i] = (uint32_t)(r % n);
    }
}

#ifdef OTPF_X86
#define OTPF_SQM_REGS 8            /* 8 x 8 doubles in flight hide the FMA latency */

/* r * s mod n on 8 lanes, exact for n < 2^26: q = floor(r*s/n) is off by at most one,
 * the fused r*s - q*n is exact, one correction either way. */
__attribute__((target("avx512f")))
static inline __m512d otpf_mulmod_pd(__m512d r, __m512d s, __m512d dn, __m512d inv) {
    __m512d p = _mm512_mul_pd(r, s);
    __m512d q = _mm512_roundscale_pd(_mm512_mul_pd(p, inv), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512d t = _mm512_fnmadd_pd(q, dn, p);
    t = _mm512_mask_add_pd(t, _mm512_cmp_pd_mask(t, _mm512_setzero_pd(), _CMP_LT_OQ), t, dn);
    return _mm512_mask_sub_pd(t, _mm512_cmp_pd_mask(t, dn, _CMP_GE_OQ), t, dn);
}

/* Square-and-multiply on 64 lanes (n < 2^26); returns how many leading items it did. */
__attribute__((target("avx512f")))
static size_t otpf_sqm_lanes_avx512(const uint32_t *a, uint32_t *out, size_t count, uint64_t e, uint32_t n) {
    const __m512d dn = _mm512_set1_pd((double)n), inv = _mm512_set1_pd(1.0 / (double)n);
    const int top = 63 - __builtin_clzll(e);
    size_t i = 0;
    for (; i + 8 * OTPF_SQM_REGS <= count; i += 8 * OTPF_SQM_REGS) {
        __m512d base[OTPF_SQM_REGS], r[OTPF_SQM_REGS];
        for (int j = 0; j < OTPF_SQM_REGS; j++) {
            base[j] = _mm512_cvtepu32_pd(_mm256_loadu_si256((const __m256i *)(a + i + 8 * j)));
            r[j] = base[j];
        }
        for (int b = top - 1; b >= 0; b--) {
            for (int j = 0; j < OTPF_SQM_REGS; j++) r[j] = otpf_mulmod_pd(r[j], r[j], dn, inv);
            if ((e >> b) & 1)
                for (int j = 0; j < OTPF_SQM_REGS; j++) r[j] = otpf_mulmod_pd(r[j], base[j], dn, inv);
        }
        for (int j = 0; j < OTPF_SQM_REGS; j++)
            _mm256_storeu_si256((__m256i *)(out + i + 8 * j), _mm512_cvttpd_epu32(r[j]));
    }
    return i;
}

/* The same on 4 lanes per register with AVX2 + FMA. */
__attribute__((target("avx2,fma")))
static inline __m256d otpf_mulmod_pd4(__m256d r, __m256d s, __m256d dn, __m256d inv) {
    __m256d p = _mm256_mul_pd(r, s);
    __m256d q = _mm256_floor_pd(_mm256_mul_pd(p, inv));
    __m256d t = _mm256_fnmadd_pd(q, dn, p);
    t = _mm256_add_pd(t, _mm256_and_pd(_mm256_cmp_pd(t, _mm256_setzero_pd(), _CMP_LT_OQ), dn));
    return _mm256_sub_pd(t, _mm256_and_pd(_mm256_cmp_pd(t, dn, _CMP_GE_OQ), dn));
}

__attribute__((target("avx2,fma")))
static size_t otpf_sqm_lanes_avx2(const uint32_t *a, uint32_t *out, size_t count, uint64_t e, uint32_t n) {
    const __m256d dn = _mm256_set1_pd((double)n), inv = _mm256_set1_pd(1.0 / (double)n);
    const int top = 63 - __builtin_clzll(e);
    size_t i = 0;
    for (; i + 4 * OTPF_SQM_REGS <= count; i += 4 * OTPF_SQM_REGS) {
        __m256d base[OTPF_SQM_REGS], r[OTPF_SQM_REGS];
        for (int j = 0; j < OTPF_SQM_REGS; j++) {
            base[j] = _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(a + i + 4 * j)));
            r[j] = base[j];
        }
        for (int b = top - 1; b >= 0; b--) {
            for (int j = 0; j < OTPF_SQM_REGS; j++) r[j] = otpf_mulmod_pd4(r[j], r[j], dn, inv);
            if ((e >> b) & 1)
                for (int j = 0; j < OTPF_SQM_REGS; j++) r[j] = otpf_mulmod_pd4(r[j], base[j], dn, inv);
        }
        for (int j = 0; j < OTPF_SQM_REGS; j++)
            _mm_storeu_si128((__m128i *)(out + i + 4 * j), _mm256_cvttpd_epi32(r[j]));
    }
    return i;
}
#endif

/* Square-and-multiply for n < 2^26, vector lanes when the CPU has them (e >= 1). */
static inline void otpf_sqm_batch(const otpf_xform *x, const uint32_t *a, uint32_t *out, size_t count,
                                  uint64_t e, uint32_t n) {
    size_t done = 0;
#ifdef OTPF_X86
    if (x->avx512 && e) done = otpf_sqm_lanes_avx512(a, out, count, e, n);
    else if (x->avx2 && e) done = otpf_sqm_lanes_avx2(a, out, count, e, n);
#endif
    otpf_sqm_lanes(a + done, out + done, count - done, e, n);
}

/* CRT values of a block: v[i] = a[i]^e mod n (table lookups), ok[i] = a[i] is used.
 * Branch-free, so it vectorises (gathers) where the CPU allows. */
OTPF_CLONES
static void otpf_crt_values(const otpf_xform *x, const uint32_t *a, size_t nb, uint32_t *v, uint32_t *ok) {
    const uint32_t n = x->n;
    const uint32_t *T1 = x->T1, *T2 = x->T2;
    if (x->narrow) {                   /* n < 2^31 here, so t1 + t2 fits */
        const uint32_t c1 = x->c1, c2 = x->c2, d1 = x->f1.d, d2 = x->f2.d;
        for (size_t i = 0; i < nb; i++) {
            uint32_t ai = a[i];
            uint32_t r1 = (uint32_t)(((uint64_t)(uint32_t)(c1 * ai) * d1) >> 32);
            uint32_t r2 = (uint32_t)(((uint64_t)(uint32_t)(c2 * ai) * d2) >> 32);
            uint32_t t1 = T1[r1], t2 = T2[r2];
            uint32_t s = t1 + t2;
            v[i] = s >= n ? s - n : s;
            ok[i] = (ai < n) & (t1 != OTPF_NONUNIT) & (t2 != OTPF_NONUNIT);
        }
    } else {
        for (size_t i = 0; i < nb; i++) {
            uint32_t ai = a[i];
            uint32_t t1 = T1[otpf_fmod(&x->f1, ai)], t2 = T2[otpf_fmod(&x->f2, ai)];
            uint64_t s = (uint64_t)t1 + t2;             /* n may be close to 2^32 */
            v[i] = (uint32_t)(s >= n ? s - n : s);
            ok[i] = (ai < n) & (t1 != OTPF_NONUNIT) & (t2 != OTPF_NONUNIT);
        }
    }
}

#ifdef OTPF_X86
/* hi32(lo * d) per 32-bit lane */
__attribute__((target("avx512f")))
static inline __m512i otpf_mulhi_epu32(__m512i lo, __m512i d) {
    __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(lo, d), 32);
    __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(lo, 32), d);
    return _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, odd);
}

/* The narrow CRT path for a whole block, 16 candidates per step: remainders by
 * multiplication, table gathers, and the used ones packed to out. Returns the count. */
__attribute__((target("avx512f")))
static size_t otpf_crt_block_avx512(const otpf_xform *x, const uint32_t *a, size_t nb, uint32_t *out) {
    const __m512i vc1 = _mm512_set1_epi32((int)x->c1), vd1 = _mm512_set1_epi32((int)x->f1.d);
    const __m512i vc2 = _mm512_set1_epi32((int)x->c2), vd2 = _mm512_set1_epi32((int)x->f2.d);
    const __m512i vn = _mm512_set1_epi32((int)x->n), vnon = _mm512_set1_epi32(-1);
    size_t got = 0;
    for (size_t i = 0; i < nb; i += 16) {
        __mmask16 live = nb - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nb - i)) - 1);
        __m512i va = _mm512_maskz_loadu_epi32(live, a + i);
        __m512i r1 = otpf_mulhi_epu32(_mm512_mullo_epi32(va, vc1), vd1);
        __m512i r2 = otpf_mulhi_epu32(_mm512_mullo_epi32(va, vc2), vd2);
        __m512i t1 = _mm512_i32gather_epi32(r1, (const void *)x->T1, 4);
        __m512i t2 = _mm512_i32gather_epi32(r2, (const void *)x->T2, 4);
        __m512i sum = _mm512_add_epi32(t1, t2);
        sum = _mm512_min_epu32(sum, _mm512_sub_epi32(sum, vn));
        __mmask16 used = live & _mm512_cmplt_epu32_mask(va, vn) & _mm512_cmpneq_epi32_mask(t1, vnon)
                         & _mm512_cmpneq_epi32_mask(t2, vnon);
        int k = __builtin_popcount((unsigned)used);
        _mm512_mask_storeu_epi32(out + got, (__mmask16)((1u << k) - 1), _mm512_maskz_compress_epi32(used, sum));
        got += (size_t)k;
    }
    return got;
}
#endif

#ifdef OTPF_X86
__attribute__((target("avx2")))
static inline __m256i otpf_mulhi_epu32_avx2(__m256i lo, __m256i d) {
    __m256i even = _mm256_srli_epi64(_mm256_mul_epu32(lo, d), 32);
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(lo, 32), d);
    return _mm256_blend_epi32(even, odd, 0xAA);
}

/* otpf_crt_values on 8 lanes with AVX2 gathers (narrow remainders only). */
__attribute__((target("avx2")))
static void otpf_crt_values_avx2(const otpf_xform *x, const uint32_t *a, size_t nb, uint32_t *v, uint32_t *ok) {
    const __m256i vc1 = _mm256_set1_epi32((int)x->c1), vd1 = _mm256_set1_epi32((int)x->f1.d);
    const __m256i vc2 = _mm256_set1_epi32((int)x->c2), vd2 = _mm256_set1_epi32((int)x->f2.d);
    const __m256i vn = _mm256_set1_epi32((int)x->n), vlast = _mm256_set1_epi32((int)(x->n - 1));
    const __m256i vnon = _mm256_set1_epi32(-1), one = _mm256_set1_epi32(1);
    size_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        __m256i va = _mm256_loadu_si256((const __m256i *)(a + i));
        __m256i r1 = otpf_mulhi_epu32_avx2(_mm256_mullo_epi32(va, vc1), vd1);
        __m256i r2 = otpf_mulhi_epu32_avx2(_mm256_mullo_epi32(va, vc2), vd2);
        __m256i t1 = _mm256_i32gather_epi32((const int *)x->T1, r1, 4);
        __m256i t2 = _mm256_i32gather_epi32((const int *)x->T2, r2, 4);
        __m256i sum = _mm256_add_epi32(t1, t2);
        sum = _mm256_min_epu32(sum, _mm256_sub_epi32(sum, vn));
        __m256i below = _mm256_cmpeq_epi32(_mm256_max_epu32(va, vlast), vlast);      /* a < n */
        __m256i bad = _mm256_or_si256(_mm256_cmpeq_epi32(t1, vnon), _mm256_cmpeq_epi32(t2, vnon));
        _mm256_storeu_si256((__m256i *)(v + i), sum);
        _mm256_storeu_si256((__m256i *)(ok + i), _mm256_and_si256(_mm256_andnot_si256(bad, below), one));
    }
    for (; i < nb; i++) {
        uint32_t ai = a[i];
        uint32_t t1 = x->T1[otpf_fmod(&x->f1, ai)], t2 = x->T2[otpf_fmod(&x->f2, ai)];
        uint64_t sum = (uint64_t)t1 + t2;
        v[i] = (uint32_t)(sum >= x->n ? sum - x->n : sum);
        ok[i] = (ai < x->n) & (t1 != OTPF_NONUNIT) & (t2 != OTPF_NONUNIT);
    }
}
#endif

static inline void otpf_crt_dispatch(const otpf_xform *x, const uint32_t *a, size_t nb, uint32_t *v, uint32_t *ok) {
#ifdef OTPF_X86
    if (x->avx2 && x->narrow) { otpf_crt_values_avx2(x, a, nb, v, ok); return; }
#endif
    otpf_crt_values(x, a, nb, v, ok);
}

/* Map the used candidates among buf[0..nb) to out, at most `limit` outputs.
 * *used = candidates consumed (stops right after the candidate of output `limit`). */
static inline size_t otpf_block(const otpf_xform *x, const uint32_t *buf, size_t nb, size_t limit,
                                uint32_t *out, uint32_t *v, uint32_t *ok, size_t *used) {
    size_t got = 0, i = 0;
    if (x->method == OTPF_CRT) {
#ifdef OTPF_X86
        if (x->avx512 && x->narrow && limit >= nb) {
            *used = nb;
            return otpf_crt_block_avx512(x, buf, nb, out);
        }
#endif
        otpf_crt_dispatch(x, buf, nb, v, ok);
        for (; i < nb && got < limit; i++) { out[got] = v[i]; got += ok[i]; }
        *used = i;
        return got;
    }
    uint32_t *dst = x->method == OTPF_IDENTITY ? out : v;
    for (; i < nb && got < limit; i++) {
        dst[got] = buf[i];
        got += otpf_is_unit(x, buf[i]);
    }
    *used = i;
    if (x->method == OTPF_SQM) {
        if (x->n < (1u << 26)) otpf_sqm_batch(x, v, out, got, x->exp, x->n);
        else for (size_t j = 0; j < got; j++) out[j] = otpf_sqm(x, v[j]);
    }
    return got;
}

/* Walk the stream from candidate `value`: consume at most max_cand candidates, write at
 * most `limit` outputs. Returns outputs written; *used = candidates consumed;
 * *next = the candidate after the last one consumed. */
static size_t otpf_run(const otpf_stream *st, uint64_t value, uint64_t max_cand, uint64_t limit,
                       const otpf_xform *x, uint32_t *out, uint64_t *used, uint64_t *next) {
    uint32_t buf[OTPF_BLOCK], v[OTPF_BLOCK], ok[OTPF_BLOCK];
    otpf_cursor cur;
    otpf_cursor_init(st, &cur, value);
    uint64_t consumed = 0, got = 0;
    while (consumed < max_cand && got < limit) {
        size_t nb = (size_t)(max_cand - consumed < OTPF_BLOCK ? max_cand - consumed : OTPF_BLOCK);
        otpf_cursor_fill(st, &cur, buf, nb);
        size_t u;
        uint64_t lim = limit - got;
        got += otpf_block(x, buf, nb, (size_t)(lim < OTPF_BLOCK ? lim : OTPF_BLOCK), out + got, v, ok, &u);
        consumed += u;
        if (u < nb) break;
    }
    *used = consumed;
    *next = otpf_stream_jump(st, value, consumed);
    return (size_t)got;
}

/* mask[i] = 1 iff otps[i] < n and otps[i]^d mod n == expect[i]; xd carries d. Returns the count. */
static size_t otpf_verify_block(const otpf_xform *xd, const uint32_t *otps, const uint32_t *expect,
                                size_t count, uint8_t *mask) {
    uint32_t in[OTPF_BLOCK], res[OTPF_BLOCK], ok[OTPF_BLOCK];
    const uint32_t n = xd->n;
    size_t good_total = 0;
    for (size_t base = 0; base < count; base += OTPF_BLOCK) {
        size_t m = count - base < OTPF_BLOCK ? count - base : OTPF_BLOCK;
        for (size_t j = 0; j < m; j++) in[j] = otps[base + j] < n ? otps[base + j] : 0;
        if (xd->method == OTPF_CRT) {
            otpf_crt_dispatch(xd, in, m, res, ok);
            for (size_t j = 0; j < m; j++) if (!ok[j]) res[j] = OTPF_NONUNIT;
        } else if (n < (1u << 26)) {
            otpf_sqm_batch(xd, in, res, m, xd->exp, n);
        } else {
            for (size_t j = 0; j < m; j++) res[j] = otpf_sqm(xd, in[j]);
        }
        for (size_t j = 0; j < m; j++) {
            uint8_t good = (otps[base + j] < n) & (res[j] == expect[base + j]);
            mask[base + j] = good;
            good_total += good;
        }
    }
    return good_total;
}


/* ------------------------------------------------------------- text out */

static const char otpf_digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Fixed width: each value < 10^digits, written as `digits` characters and "\n". */
static inline void otpf_format_fixed(const uint64_t *v, size_t count, int digits, char *dst) {
    for (size_t i = 0; i < count; i++) {
        char *p = dst + i * (size_t)(digits + 1);
        uint64_t x = v[i];
        p[digits] = '\n';
        int k = digits;
        while (k >= 2) {
            memcpy(p + k - 2, otpf_digit_pairs + 2 * (x % 100), 2);
            x /= 100;
            k -= 2;
        }
        if (k) p[0] = (char)('0' + x % 10);
    }
}

static inline void otpf_format_fixed32(const uint32_t *v, size_t count, int digits, char *dst) {
    for (size_t i = 0; i < count; i++) {
        char *p = dst + i * (size_t)(digits + 1);
        uint32_t x = v[i];
        p[digits] = '\n';
        int k = digits;
        while (k >= 2) {
            memcpy(p + k - 2, otpf_digit_pairs + 2 * (x % 100), 2);
            x /= 100;
            k -= 2;
        }
        if (k) p[0] = (char)('0' + x % 10);
    }
}

#endif
