"""Masking of issued OTPs (the source's "salt", made a keyed per-response mask).

A relay that sees the distribution server's response but not the client's credential cannot
read the OTP, and a modified response (OTP, account or expiry) is detected. Scheme (v2):

    key      = the connection's session key (services.credentials: derived from the
               credential, both nonces and the server certificate; never sent)
    nonce    = 16 random bytes, fresh per response
    pad      = HKDF-SHA256(ikm = key, salt = nonce,
                           info = "otpfast mask pad v2\\0" || account, length = len(otp))
    tag      = HMAC-SHA256(key, "otpfast mask tag v2\\0" || u16be(len(account)) || account
                                || nonce || u64be(expires_at_ms) || body)[:16]
    masked   = body || tag,   where body = otp (ASCII) XOR pad

The client derives the same session key while authenticating and calls :func:`unmask`.
"""
import hashlib
import hmac
import secrets
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from otpfast.errors import InvalidToken

NONCE_BYTES = 16
TAG_BYTES = 16
_TAG_PARTS = struct.Struct(">H")
_EXPIRY = struct.Struct(">Q")


def _pad(key: bytes, account: str, nonce: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=nonce,
                info=b"otpfast mask pad v2\0" + account.encode()).derive(key)


def _tag(key: bytes, account: str, nonce: bytes, expires_at_ms: int, body: bytes) -> bytes:
    name = account.encode()
    message = (b"otpfast mask tag v2\0" + _TAG_PARTS.pack(len(name)) + name + nonce
               + _EXPIRY.pack(expires_at_ms) + body)
    return hmac.new(key, message, hashlib.sha256).digest()[:TAG_BYTES]


def mask(key: bytes, account: str, otp: str, expires_at_ms: int) -> tuple[bytes, bytes]:
    """(nonce, masked) for one response; ``key`` is the connection's session key."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    data = otp.encode("ascii")
    body = bytes(a ^ b for a, b in zip(data, _pad(key, account, nonce, len(data))))
    return nonce, body + _tag(key, account, nonce, expires_at_ms, body)


def unmask(key: bytes, account: str, nonce: bytes, masked: bytes, expires_at_ms: int) -> str:
    """The OTP from a masked response. Raises InvalidToken if the response was not made for
    this session and account, or was modified (its expiry included)."""
    if (len(nonce) != NONCE_BYTES or len(masked) <= TAG_BYTES or type(expires_at_ms) is not int
            or not 0 <= expires_at_ms < 1 << 64):
        raise InvalidToken()
    body, tag = masked[:-TAG_BYTES], masked[-TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(key, account, nonce, expires_at_ms, body)):
        raise InvalidToken()
    data = bytes(a ^ b for a, b in zip(body, _pad(key, account, nonce, len(body))))
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidToken() from None
