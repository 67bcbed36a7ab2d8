"""RFC 2289 one-time passwords (S/KEY's successor): hash chain over seed + passphrase.

S(0) = fold(H(lower(seed) || passphrase)); S(i) = fold(H(S(i-1))); the OTP for sequence n is
S(n). fold() reduces the digest to 64 bits (RFC 2289 Appendix A; for SHA-1 the five words are
XORed into two and written little-endian). OTPs are written as six words from the RFC's
2048-word dictionary (11 bits each, the last two bits a checksum) or as 16 hex digits; both are
parsed back case- and space-insensitively. md4 is offered only where hashlib provides it.

A server keeps the last accepted OTP S(n) and n; it accepts x iff fold(H(x)) == S(n), then keeps
x and n - 1 (``verify``).
"""
import hashlib
import hmac
from importlib import resources

from . import core
from .errors import InvalidParameter, InvalidToken

__all__ = [
    "ALGORITHMS",
    "available_algorithms",
    "validate_passphrase",
    "validate_seed",
    "otp",
    "otps",
    "to_words",
    "to_hex",
    "parse",
    "verify",
    "WORDS",
]

ALGORITHMS = ("md4", "md5", "sha1")
_KERNEL_ALGORITHMS = ("md5", "sha1")
MIN_PASSPHRASE, MAX_PASSPHRASE = 10, 63
MAX_SEED = 16
MAX_SEQUENCE = 10**7


def _load_words():
    text = resources.files("otpfast").joinpath("data/rfc2289_words.txt").read_text("ascii")
    words = tuple(text.split())
    if len(words) != 2048 or len(set(words)) != 2048:
        raise RuntimeError("otpfast/data/rfc2289_words.txt is damaged (need 2048 distinct words)")
    return words


WORDS = _load_words()
_INDEX = {w: i for i, w in enumerate(WORDS)}


def _hash_available(name):
    try:
        hashlib.new(name)
    except ValueError:
        return False
    return True


def available_algorithms():
    """The algorithms this platform can compute (md4 needs OpenSSL's legacy provider)."""
    return tuple(a for a in ALGORITHMS if _hash_available(a))


def validate_algorithm(algorithm):
    name = algorithm.lower() if isinstance(algorithm, str) else algorithm
    if name not in ALGORITHMS:
        raise InvalidParameter("algorithm", f"must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if not _hash_available(name):
        raise InvalidParameter("algorithm", f"{name} is not available on this platform (OpenSSL without it)")
    return name


def validate_passphrase(passphrase):
    if not isinstance(passphrase, str):
        raise InvalidParameter("passphrase", "must be text")
    if not MIN_PASSPHRASE <= len(passphrase) <= MAX_PASSPHRASE:
        raise InvalidParameter(
            "passphrase", f"must be {MIN_PASSPHRASE} to {MAX_PASSPHRASE} characters long (RFC 2289 §6.0)"
        )
    return passphrase


def validate_seed(seed):
    """1 to 16 ASCII alphanumerics; returned lower-cased (RFC 2289 §6.0)."""
    if not isinstance(seed, str) or not 1 <= len(seed) <= MAX_SEED or not (seed.isascii() and seed.isalnum()):
        raise InvalidParameter("seed", f"must be 1 to {MAX_SEED} ASCII letters and digits")
    return seed.lower()


def _validate_sequence(sequence):
    if isinstance(sequence, bool) or not isinstance(sequence, int) or not 0 <= sequence <= MAX_SEQUENCE:
        raise InvalidParameter("sequence", f"must be an integer from 0 to {MAX_SEQUENCE}, got {sequence!r}")
    return sequence


def _fold_hash(data, algorithm):
    return core.rfc2289_fold(hashlib.new(algorithm, data).digest(), algorithm)


def _start(passphrase, seed, algorithm):
    data = validate_seed(seed).encode("ascii") + validate_passphrase(passphrase).encode("utf-8")
    return _fold_hash(data, algorithm)


def otps(passphrase, seed, sequence, count=1, algorithm="md5"):
    """The OTPs for sequence numbers n = sequence, sequence-1, ..., sequence-count+1, as a
    list of (n, 8-byte value), newest first."""
    algorithm = validate_algorithm(algorithm)
    _validate_sequence(sequence)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= sequence + 1:
        raise InvalidParameter("count", f"must be from 1 to sequence+1 = {sequence + 1}, got {count!r}")
    start = _start(passphrase, seed, algorithm)
    if algorithm in _KERNEL_ALGORITHMS:
        raw = core.rfc2289_batch(start, sequence, count, algorithm)
        values = [raw[8 * k : 8 * k + 8] for k in range(count)]
    else:
        chain = [start]
        for _ in range(sequence):
            chain.append(_fold_hash(chain[-1], algorithm))
        values = chain[::-1][:count]
    return [(sequence - k, v) for k, v in enumerate(values)]


def otp(passphrase, seed, sequence, algorithm="md5"):
    """The 8-byte OTP for sequence number `sequence`."""
    return otps(passphrase, seed, sequence, 1, algorithm)[0][1]


def _checksum(value):
    return sum((value >> s) & 3 for s in range(0, 64, 2)) & 3


def to_words(otp_bytes):
    """Six dictionary words (RFC 2289 §6.0 and Appendix D), upper case, space-separated."""
    value = int.from_bytes(_eight(otp_bytes), "big")
    bits = (value << 2) | _checksum(value)
    return " ".join(WORDS[(bits >> (55 - 11 * k)) & 0x7FF] for k in range(6))


def to_hex(otp_bytes):
    """16 hex digits in groups of four, upper case, as in RFC 2289 Appendix C."""
    h = _eight(otp_bytes).hex().upper()
    return " ".join(h[i : i + 4] for i in range(0, 16, 4))


def _eight(otp_bytes):
    b = bytes(otp_bytes)
    if len(b) != 8:
        raise InvalidParameter("otp", "an RFC 2289 OTP is 8 bytes")
    return b


def parse(text):
    """Six words or 16 hex digits (case and spaces ignored; optional 'word:'/'hex:' prefix)
    -> the 8-byte value. A wrong word checksum or an unknown word raises InvalidToken."""
    if not isinstance(text, str) or not text.isascii() or len(text) > 128:
        raise InvalidToken()
    body = text.strip()
    lower = body.lower()
    kind = None
    for prefix in ("word:", "hex:"):
        if lower.startswith(prefix):
            kind, body = prefix[:-1], body[len(prefix) :]
    tokens = body.upper().split()
    if kind != "hex" and len(tokens) == 6:
        bits = 0
        for token in tokens:
            index = _INDEX.get(token)
            if index is None:
                raise InvalidToken()
            bits = (bits << 11) | index
        value = bits >> 2
        if bits & 3 != _checksum(value):
            raise InvalidToken()
        return value.to_bytes(8, "big")
    if kind == "word":
        raise InvalidToken()
    compact = "".join(tokens)
    if len(compact) != 16 or any(ch not in "0123456789ABCDEF" for ch in compact):
        raise InvalidToken()
    return bytes.fromhex(compact)


def verify(response, last, algorithm="md5"):
    """Server step: accept `response` (words or hex) iff fold(H(x)) equals `last`, the stored
    previous OTP. Returns x, to store in place of `last` (with the sequence number minus one)."""
    algorithm = validate_algorithm(algorithm)
    x = parse(response)
    if not hmac.compare_digest(_fold_hash(x, algorithm), bytes(last)):
        raise InvalidToken()
    return x
