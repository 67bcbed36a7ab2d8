"""Pure-Python twin of the hash kernels in _core_hash.pxi: the executable spec.

Same names, arguments, results and exceptions as the compiled kernels. Leaf module: stdlib only.
"""
import array
import hashlib
import hmac
import struct

__all__ = [
    "HOTP_ALGORITHMS",
    "CHAIN_ALGORITHMS",
    "RFC2289_KERNEL_ALGORITHMS",
    "hotp_batch",
    "hashchain_batch",
    "rfc2289_batch",
    "rfc2289_fold",
]

HOTP_ALGORITHMS = ("sha1", "sha256", "sha512")
CHAIN_ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")
RFC2289_KERNEL_ALGORITHMS = ("md5", "sha1")


def _check_algorithm(algorithm, allowed):
    if algorithm not in allowed:
        raise ValueError(f"algorithm must be one of {', '.join(allowed)}, got {algorithm!r}")


def hotp_batch(key, counter, count, digits, algorithm="sha1", num_threads=None):
    """HOTP values (RFC 4226) for counters counter .. counter+count-1, as array('I').

    Each value is the dynamic truncation mod 10**digits (zero-pad to `digits` to print).
    """
    _check_algorithm(algorithm, HOTP_ALGORITHMS)
    if not 1 <= digits <= 9:
        raise ValueError(f"digits must be in 1..9, got {digits}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if counter < 0 or counter + count > 2**64:
        raise ValueError("counter range must lie in [0, 2**64)")
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads == 0):
        raise ValueError(f"num_threads must be a non-zero integer or None, got {num_threads!r}")
    key = bytes(key)
    modulus = 10**digits
    out = array.array("I")
    for c in range(counter, counter + count):
        mac = hmac.new(key, struct.pack(">Q", c), algorithm).digest()
        offset = mac[-1] & 0x0F
        binary = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
        out.append(binary % modulus)
    return out


def hashchain_batch(seed, length, algorithm="sha256"):
    """Lamport chain h(0) = seed, h(i) = H(h(i-1)): returns h(length), h(length-1), ..., h(1)
    concatenated (length digests). Slice 0 is the anchor, slice i the OTP for use i
    (1 <= i < length); use `length` is h(0), the seed itself."""
    _check_algorithm(algorithm, CHAIN_ALGORITHMS)
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    values = []
    h = bytes(seed)
    for _ in range(length):
        h = hashlib.new(algorithm, h).digest()
        values.append(h)
    return b"".join(reversed(values))


def rfc2289_fold(digest, algorithm):
    """RFC 2289 Appendix A: fold a digest to 64 bits. MD4/MD5: XOR the two halves. SHA-1:
    XOR the five 32-bit words into two (h0^h2^h4, h1^h3), each written little-endian."""
    if algorithm == "sha1":
        h = struct.unpack(">5I", digest)
        return struct.pack("<2I", h[0] ^ h[2] ^ h[4], h[1] ^ h[3])
    return bytes(a ^ b for a, b in zip(digest[:8], digest[8:16]))


def rfc2289_batch(start, sequence, count, algorithm="md5"):
    """RFC 2289 chain from the folded S(0) = fold(H(seed || passphrase)) (8 bytes):
    returns S(sequence), S(sequence-1), ..., S(sequence-count+1), 8 bytes each."""
    _check_algorithm(algorithm, RFC2289_KERNEL_ALGORITHMS)
    s = bytes(start)
    if len(s) != 8:
        raise ValueError("start must be 8 bytes")
    if sequence < 0 or sequence >= 2**63:
        raise ValueError(f"sequence must be in [0, 2**63), got {sequence}")
    if not 1 <= count <= sequence + 1:
        raise ValueError(f"count must be in 1..sequence+1, got {count}")
    kept = [s] if sequence + 1 == count else []
    for i in range(1, sequence + 1):
        s = rfc2289_fold(hashlib.new(algorithm, s).digest(), algorithm)
        if i + count > sequence:
            kept.append(s)
    return b"".join(reversed(kept))
