"""The contract of otpfast._core and otpfast._core_py (same names, arguments, results, errors).

Bad arguments raise otpfast.errors.InvalidParameter(field, message) with field one of
"poly", "state", "degree", "count", "k", "mod", "exp", "base", "bases", "n", "e", "d",
"prime", "generator", "start", "otps", "num_threads", "method", "digits", "values".
"""
from array import array
from collections.abc import Iterable, Sequence
from typing import Literal

Method = Literal["auto", "crt", "sqm"]

OPENMP_ENABLED: bool
LFSR_ALL_MAX_DEGREE: int

def effective_num_threads(num_threads: int | None = None) -> int: ...

# LFSR over GF(2): degree L = poly.bit_length() - 1 in 2..64, bit 0 and bit L set,
# states in [1, 2^L); one step: s <<= 1; if s >> L: s ^= poly.
def lfsr_step(poly: int, state: int) -> int: ...
def lfsr_fill(poly: int, state: int, n: int) -> array: ...  # array('Q'): s0, s1, ..., s(n-1)
def lfsr_advance(poly: int, state: int, k: int) -> int: ...  # 0 <= k < 2^64, O(log k)
def lfsr_is_primitive(poly: int) -> bool: ...
def lfsr_count_primitive(degree: int) -> int: ...  # phi(2^L - 1) / L, L in 2..64
def lfsr_primitive_at(degree: int, k: int) -> int: ...  # k-th from 0, ascending
def lfsr_primitive_all(degree: int) -> array: ...  # array('Q') ascending, L in 2..28

# Word modexp: 1 < mod < 2^63, 0 <= exp < 2^64 (otpfast.core.modexp takes any size).
def modexp(base: int, exp: int, mod: int) -> int: ...
def modexp_batch(bases: Iterable[int], exp: int, mod: int, num_threads: int | None = None) -> array: ...

# RSA-type OTP batches, 2 <= n < 2^32. A candidate a is used iff 1 <= a < n and
# gcd(a, n) == 1 (else skipped). The LFSR poly must be primitive; the generator must be
# a primitive root modulo the prime (3 <= prime < 2^32). n is factored internally
# (it is below 2^32), so "crt" needs no p, q. Results never depend on method or threads.
def rsa_lfsr_generate(n: int, e: int, poly: int, state: int, count: int,
                      num_threads: int | None = None, method: Method = "auto") -> tuple[array, int]: ...
def rsa_lfsr_verify(n: int, d: int, poly: int, state: int, otps: Iterable[int],
                    num_threads: int | None = None, method: Method = "auto") -> int: ...
def rsa_lfsr_verify_mask(n: int, d: int, poly: int, state: int, otps: Iterable[int],
                         num_threads: int | None = None, method: Method = "auto") -> bytes: ...
def rsa_primroot_generate(n: int, e: int, prime: int, generator: int, start: int, count: int,
                          num_threads: int | None = None, method: Method = "auto") -> tuple[array, int]: ...
def rsa_primroot_verify(n: int, d: int, prime: int, generator: int, start: int, otps: Iterable[int],
                        num_threads: int | None = None, method: Method = "auto") -> int: ...
def rsa_primroot_verify_mask(n: int, d: int, prime: int, generator: int, start: int,
                             otps: Iterable[int], num_threads: int | None = None,
                             method: Method = "auto") -> bytes: ...

def format_decimal(values: Iterable[int], digits: int) -> bytes: ...


# Row MACs (otpfast.store.rows): keyed BLAKE2b-256 (key 0..64 bytes) of each row (values,
# the version last) under an ASCII tag; the encoding of one value.
ROW_MAC_BYTES: int
def row_encode(value: object) -> bytes: ...
def row_macs(key: bytes, tag: str, rows: Iterable[Sequence[object]]) -> list[bytes]: ...
# The audit chain (otpfast.store.chain): HMAC-SHA256 of each entry (time, event, account,
# client, source, outcome), numbered from seq + 1, chained from prev; rows in the first.
def audit_chain_macs(key: bytes, seq: int, prev: bytes, entries: Iterable[tuple],
                     rows: str | None = None) -> list[bytes]: ...
class HmacSha256:
    """HMAC-SHA256 under one fixed key (keyed states computed once)."""
    key: bytes
    def __init__(self, key: bytes) -> None: ...
    def __call__(self, message: bytes) -> bytes: ...
class HmacMd5:
    """HMAC-MD5 under one fixed key (keyed states computed once)."""
    key: bytes
    def __init__(self, key: bytes) -> None: ...
    def __call__(self, message: bytes) -> bytes: ...
