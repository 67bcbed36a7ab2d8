"""HOTP (RFC 4226): counter-based one-time passwords, plus the key helpers shared with TOTP.

Recipe layer: validated keys and parameters over the core's ``hotp_batch`` kernel, verification
with a look-ahead window that returns the matched counter (so callers can forbid reuse), and
resynchronisation from two consecutive OTPs (RFC 4226 §7.4). Every comparison is constant-time.
"""
import base64
import binascii
import hmac
import struct
import secrets

from . import core
from .errors import InvalidParameter, InvalidToken

__all__ = [
    "ALGORITHMS",
    "MIN_KEY_BYTES",
    "HOTP",
    "generate_key",
    "parse_key",
    "validate_key",
    "validate_digits",
    "validate_algorithm",
    "check_otp_format",
]

ALGORITHMS = ("sha1", "sha256", "sha512")
MIN_KEY_BYTES = 16  # RFC 4226 §4 R6: at least 128 bits
MIN_DIGITS, MAX_DIGITS = 6, 8
_MAX_COUNTER = 2**64 - 1
_ASCII_DIGITS = frozenset("0123456789")


_WORD = struct.Struct("=I")  # one OTP value as array('I') stores it


def generate_key(nbytes=20):
    """A fresh random key from the OS CSPRNG (``secrets``); 20 bytes = 160 bits by default."""
    if not isinstance(nbytes, int) or nbytes < MIN_KEY_BYTES:
        raise InvalidParameter("secret", f"a key needs at least {MIN_KEY_BYTES} bytes")
    return secrets.token_bytes(nbytes)


def validate_key(key):
    """Return the key as bytes; at least 128 bits. Never echoes the key in the error."""
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise InvalidParameter("secret", "the key must be bytes")
    key = bytes(key)
    if len(key) < MIN_KEY_BYTES:
        raise InvalidParameter(
            "secret", f"the key has {len(key) * 8} bits; at least {MIN_KEY_BYTES * 8} are required"
        )
    return key


def validate_digits(digits):
    if isinstance(digits, bool) or not isinstance(digits, int) or not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise InvalidParameter("digits", f"must be an integer from {MIN_DIGITS} to {MAX_DIGITS}, got {digits!r}")
    return digits


def validate_algorithm(algorithm):
    name = algorithm.lower().replace("-", "") if isinstance(algorithm, str) else algorithm
    if name not in ALGORITHMS:
        raise InvalidParameter("algorithm", f"must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    return name


def parse_key(hex=None, base32=None):  # noqa: A002 - the option names users know
    """Decode a key given as hex or as base32 (exactly one). Case, spaces, dashes and missing
    base32 padding are tolerated; the result must still be at least 128 bits."""
    if (hex is None) == (base32 is None):
        raise InvalidParameter("secret", "give the key either as hex or as base32 (exactly one)")
    if hex is not None:
        text = "".join(str(hex).split()).replace("-", "").replace(":", "")
        if text[:2].lower() == "0x":
            text = text[2:]
        if not text.isascii():
            raise InvalidParameter("secret", "the hex key contains non-ASCII characters")
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise InvalidParameter("secret", "not valid hex (use 0-9a-f, an even number of digits)") from None
        return validate_key(key)
    text = "".join(str(base32).split()).replace("-", "").upper().rstrip("=")
    if not text.isascii():
        raise InvalidParameter("secret-base32", "the base32 key contains non-ASCII characters")
    if len(text) % 8 in (1, 3, 6):
        raise InvalidParameter("secret-base32", "not valid base32 (impossible length)")
    try:
        key = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise InvalidParameter("secret-base32", "not valid base32 (use A-Z and 2-7)") from None
    try:
        return validate_key(key)
    except InvalidParameter as exc:
        raise InvalidParameter("secret-base32", exc.message) from None


def check_otp_format(otp, digits):
    """Strict OTP syntax: a str of exactly `digits` ASCII digits (no spaces, no other scripts'
    digits such as '١٢٣٤٥٦'). Raises InvalidToken, which says nothing more."""
    if not isinstance(otp, str) or len(otp) != digits or not set(otp) <= _ASCII_DIGITS:
        raise InvalidToken()
    return otp


def _validate_counter(counter, field="counter"):
    if isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter <= _MAX_COUNTER:
        raise InvalidParameter(field, f"must be an integer in [0, 2**64), got {counter!r}")
    return counter


def _validate_window(window, field="window"):
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise InvalidParameter(field, f"must be a non-negative integer, got {window!r}")
    return window


class HOTP:
    """RFC 4226 HOTP for one key: ``generate(counter)``, ``verify(otp, counter, window=)``,
    ``resync(otp1, otp2, counter, window=)``."""

    __slots__ = ("_key", "digits", "algorithm")

    def __init__(self, key, *, digits=6, algorithm="sha1"):
        self._key = validate_key(key)
        self.digits = validate_digits(digits)
        self.algorithm = validate_algorithm(algorithm)

    def __repr__(self):
        return f"HOTP(digits={self.digits}, algorithm={self.algorithm!r})"

    def values(self, counter, count, *, num_threads=None):
        """The OTPs for counter .. counter+count-1 as integers (array('I'))."""
        _validate_counter(counter)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0 or counter + count - 1 > _MAX_COUNTER:
            raise InvalidParameter("count", "must be non-negative and keep the counters below 2**64")
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise InvalidParameter("threads", f"must be a positive integer, got {num_threads!r}")
        return core.hotp_batch(self._key, counter, count, self.digits, self.algorithm, num_threads=num_threads)

    def generate(self, counter):
        """The OTP for `counter`, zero-padded to `digits`."""
        (value,) = self.values(counter, 1)
        return f"{value:0{self.digits}d}"

    def verify(self, otp, counter, *, window=0):
        """Accept `otp` for a counter in [counter, counter+window]; return the matched counter
        (the caller stores matched+1 as the next counter). Raises InvalidToken."""
        _validate_counter(counter)
        _validate_window(window)
        check_otp_format(otp, self.digits)
        last = min(counter + window, _MAX_COUNTER)
        candidates = self.values(counter, last - counter + 1).tobytes()
        given = _WORD.pack(int(otp))
        matched = None
        for offset in range(0, len(candidates), 4):
            # Scan the whole window so timing does not tell where (or whether) it matched.
            if hmac.compare_digest(candidates[offset:offset + 4], given) and matched is None:
                matched = counter + offset // 4
        if matched is None:
            raise InvalidToken()
        return matched

    def resync(self, otp1, otp2, counter, *, window=100):
        """RFC 4226 §7.4: find two consecutive OTPs otp1, otp2 at counters c, c+1 with
        counter <= c <= counter+window; return c+2, the next counter to expect."""
        _validate_counter(counter)
        _validate_window(window)
        check_otp_format(otp1, self.digits)
        check_otp_format(otp2, self.digits)
        last = min(counter + window + 1, _MAX_COUNTER)
        values = [f"{v:0{self.digits}d}".encode("ascii") for v in self.values(counter, last - counter + 1)]
        first, second = otp1.encode("ascii"), otp2.encode("ascii")
        matched = None
        for offset in range(len(values) - 1):
            both = hmac.compare_digest(values[offset], first) & hmac.compare_digest(values[offset + 1], second)
            if both and matched is None:
                matched = counter + offset
        if matched is None:
            raise InvalidToken()
        return matched + 2
