"""Enrolment for authenticator apps: the otpauth:// Key URI and its QR code.

Format (the de-facto "Key Uri Format" that Google Authenticator, FreeOTP, Aegis and pyotp use):

    otpauth://TYPE/LABEL?secret=BASE32&issuer=ISSUER&algorithm=SHA1&digits=6&period=30
    TYPE  = totp | hotp (hotp requires counter=N, totp may carry period=N)
    LABEL = [ISSUER ":"] ACCOUNT, percent-encoded (spaces as %20)

``parse_uri`` is strict: unknown or repeated parameters, a label issuer that differs from the
issuer parameter, bad base32, keys under 128 bits, digits outside 6..8, unknown algorithms and
counter/period on the wrong type are all rejected with InvalidParameter naming the part (and
nothing else escapes: any malformed text is an InvalidParameter).
QR codes are made with segno (terminal text, PNG or SVG); a QR file holds the secret, so it is
written mode 0600 and never through a symbolic link.
"""
import base64
import binascii
import errno
import io
import os
import stat
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .errors import InvalidParameter
from .hotp import ALGORITHMS, validate_algorithm, validate_digits, validate_key

__all__ = ["KeyUri", "build_uri", "parse_uri", "qr_text", "save_qr", "QR_SUFFIXES"]

KINDS = ("totp", "hotp")
QR_SUFFIXES = (".png", ".svg")
_KNOWN = {"secret", "issuer", "algorithm", "digits", "period", "counter"}
_MAX_URI = 4096
_MAX_NAME = 16  # characters of an unknown parameter's name echoed in an error
_MAX_DECIMAL = 20  # digits; 2**64 has 20, and int() of a long string is slow


@dataclass(frozen=True, slots=True)
class KeyUri:
    """A parsed otpauth:// URI. ``secret`` is the raw key; ``counter`` is None for totp and
    ``period`` is None for hotp."""

    kind: str
    secret: bytes
    account: str
    issuer: str | None = None
    algorithm: str = "sha1"
    digits: int = 6
    period: int | None = 30
    counter: int | None = None

    def __repr__(self):  # never show the secret
        return (
            f"KeyUri(kind={self.kind!r}, account={self.account!r}, issuer={self.issuer!r}, "
            f"algorithm={self.algorithm!r}, digits={self.digits}, period={self.period}, "
            f"counter={self.counter})"
        )

    def uri(self):
        return build_uri(
            self.kind, self.secret, self.account, issuer=self.issuer, algorithm=self.algorithm,
            digits=self.digits, period=self.period if self.kind == "totp" else 30,
            counter=self.counter if self.kind == "hotp" else 0,
        )


def _b32(secret):
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def _check_label_part(value, field):
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameter(field, "must be a non-empty string")
    if ":" in value:
        raise InvalidParameter(field, "must not contain ':' (it separates issuer and account)")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidParameter(field, "must not contain control characters")
    return value


def build_uri(kind, secret, account, issuer=None, algorithm="sha1", digits=6, period=30, counter=0):
    """Build an otpauth:// URI for `kind` "totp" (uses `period`) or "hotp" (uses `counter`)."""
    if kind not in KINDS:
        raise InvalidParameter("kind", f"must be totp or hotp, got {kind!r}")
    secret = validate_key(secret)
    _check_label_part(account, "account")
    algorithm = validate_algorithm(algorithm)
    digits = validate_digits(digits)
    label = quote(account, safe="@.")
    params = [("secret", _b32(secret))]
    if issuer is not None:
        _check_label_part(issuer, "issuer")
        label = f"{quote(issuer, safe='@.')}:{label}"
        params.append(("issuer", quote(issuer, safe="@.")))
    params += [("algorithm", algorithm.upper()), ("digits", str(digits))]
    if kind == "totp":
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise InvalidParameter("period", f"must be a positive integer, got {period!r}")
        params.append(("period", str(period)))
    else:
        if isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter < 2**64:
            raise InvalidParameter("counter", f"must be an integer in [0, 2**64), got {counter!r}")
        params.append(("counter", str(counter)))
    query = "&".join(f"{k}={v}" for k, v in params)
    return f"otpauth://{kind}/{label}?{query}"


def _decimal(text, field):
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_DECIMAL:
        raise InvalidParameter(field, "must be a decimal integer")
    return int(text)


def parse_uri(uri):
    """Parse and validate an otpauth:// URI strictly; return a KeyUri."""
    if not isinstance(uri, str) or not uri.isascii():
        raise InvalidParameter("uri", "must be an ASCII string (non-ASCII must be percent-encoded)")
    if len(uri) > _MAX_URI:
        raise InvalidParameter("uri", "too long")
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. an unclosed [IPv6] netloc
        raise InvalidParameter("uri", "malformed URI") from None
    if parts.scheme.lower() != "otpauth":
        raise InvalidParameter("uri", "the scheme must be otpauth://")
    kind = parts.netloc.lower()
    if kind not in KINDS:
        raise InvalidParameter("type", "must be totp or hotp")  # no echo: it may hold the secret
    if parts.fragment:
        raise InvalidParameter("uri", "must not have a #fragment")
    raw_label = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not raw_label or "/" in raw_label:
        raise InvalidParameter("label", "missing or malformed label")
    try:
        label = unquote(raw_label, errors="strict")
    except UnicodeDecodeError:
        raise InvalidParameter("label", "not percent-encoded UTF-8") from None
    label_issuer, sep, account = label.partition(":")
    if not sep:
        label_issuer, account = None, label
    account = account.strip()
    if label_issuer is not None:
        label_issuer = label_issuer.strip()
        _check_label_part(label_issuer, "issuer")
    _check_label_part(account, "account")

    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query),
                          errors="strict")
    except UnicodeDecodeError:
        raise InvalidParameter("uri", "the query string is not percent-encoded UTF-8") from None
    except ValueError:
        raise InvalidParameter("uri", "malformed query string") from None
    params = {}
    for key, value in pairs:
        if key not in _KNOWN:
            # named only when it looks like a parameter name: a mangled URI may put the secret here
            short = key.isascii() and key.isidentifier() and len(key) <= _MAX_NAME
            raise InvalidParameter(key if short else "uri", "unknown parameter")
        if key in params:
            raise InvalidParameter(key, "given more than once")
        params[key] = value

    if "secret" not in params:
        raise InvalidParameter("secret", "missing")
    text = params["secret"].replace(" ", "").upper().rstrip("=")
    if not text or len(text) % 8 in (1, 3, 6):
        raise InvalidParameter("secret", "not valid base32")
    try:
        secret = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise InvalidParameter("secret", "not valid base32") from None
    secret = validate_key(secret)

    issuer = params.get("issuer")
    if issuer is not None:
        issuer = issuer.strip()
        _check_label_part(issuer, "issuer")
        if label_issuer is not None and label_issuer != issuer:
            raise InvalidParameter("issuer", "the label's issuer prefix and the issuer parameter differ")
    else:
        issuer = label_issuer

    algorithm = params.get("algorithm", "SHA1").lower()
    if algorithm not in ALGORITHMS:  # checked here so that the error does not echo the value
        raise InvalidParameter("algorithm", f"must be one of {', '.join(ALGORITHMS).upper()}")
    algorithm = validate_algorithm(algorithm)
    digits = validate_digits(_decimal(params.get("digits", "6"), "digits"))
    if kind == "totp":
        if "counter" in params:
            raise InvalidParameter("counter", "only for hotp")
        period = _decimal(params.get("period", "30"), "period")
        if period < 1:
            raise InvalidParameter("period", "must be positive")
        counter = None
    else:
        if "period" in params:
            raise InvalidParameter("period", "only for totp")
        if "counter" not in params:
            raise InvalidParameter("counter", "required for hotp")
        counter = _decimal(params["counter"], "counter")
        if counter >= 2**64:
            raise InvalidParameter("counter", "must be below 2**64")
        period = None
    return KeyUri(kind, secret, account, issuer, algorithm, digits, period, counter)


def _qr(uri):
    import segno  # imported on use: only enrolment needs it

    parse_uri(uri)
    try:
        return segno.make(uri, error="m", micro=False)
    except segno.DataOverflowError:
        raise InvalidParameter("uri", "the URI is too long for a QR code") from None


def qr_text(uri, *, compact=True):
    """The QR code of `uri` as text for a terminal (block characters, quiet zone included)."""
    buf = io.StringIO()
    _qr(uri).terminal(out=buf, compact=compact)
    return buf.getvalue()


def save_qr(uri, path, *, scale=6):
    """Write the QR code of `uri` to `path`: PNG or SVG by the file suffix. The file is mode
    0600 (an existing one is tightened); a symbolic link or a non-regular file is refused.
    OSError for what the system refuses."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in QR_SUFFIXES:
        raise InvalidParameter("out", "the QR file must end in .png or .svg")
    qr = _qr(uri)
    # O_NONBLOCK: a FIFO without a reader fails at once instead of hanging
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise InvalidParameter("out", f"{path} is a symbolic link; not following it") from None
        raise
    with os.fdopen(fd, "wb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidParameter("out", f"{path} is not a regular file")
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        qr.save(fh, scale=scale, kind=suffix[1:])
