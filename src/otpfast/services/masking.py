"""Masking of issued OTPs (the source's "salt", made a keyed per-response mask).

A relay that sees the distribution server's response but not the client's credential cannot
read the OTP, and a modified response is detected. Scheme (version 1):

    mask_key = HKDF-SHA256(ikm = credential text bytes, salt = "otpfast mask v1",
                           info = "otpfast mask", length = 32)
    nonce    = 16 random bytes, fresh per response
    pad      = HKDF-SHA256(ikm = mask_key, salt = nonce,
                           info = "otpfast mask pad\\0" || account, length = len(otp))
    tag      = HMAC-SHA256(mask_key, "otpfast mask tag\\0" || account || "\\0" || nonce || body)[:16]
    masked   = body || tag,   where body = otp (ASCII) XOR pad

The server never stores the credential: ``otpfast client add`` stores its hash (for
authentication) and ``mask_key`` encrypted at rest (AES-GCM, client name as associated
data). The client derives the same ``mask_key`` from its credential and calls
:func:`unmask`.
"""
import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from otpfast.errors import InvalidToken

from .credentials import normalise

NONCE_BYTES = 16
TAG_BYTES = 16


def mask_key(credential: bytes | str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"otpfast mask v1",
                info=b"otpfast mask").derive(normalise(credential))


def _pad(key: bytes, account: str, nonce: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=nonce,
                info=b"otpfast mask pad\0" + account.encode()).derive(key)


def _tag(key: bytes, account: str, nonce: bytes, body: bytes) -> bytes:
    message = b"otpfast mask tag\0" + account.encode() + b"\0" + nonce + body
    return hmac.new(key, message, hashlib.sha256).digest()[:TAG_BYTES]


def mask(key: bytes, account: str, otp: str) -> tuple[bytes, bytes]:
    """(nonce, masked) for one response; ``key`` is the client's mask key."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    data = otp.encode("ascii")
    body = bytes(a ^ b for a, b in zip(data, _pad(key, account, nonce, len(data))))
    return nonce, body + _tag(key, account, nonce, body)


def unmask(credential: bytes | str, account: str, nonce: bytes, masked: bytes) -> str:
    """The OTP from a masked response. Raises InvalidToken if the response was not made for
    this credential and account, or was modified."""
    if len(nonce) != NONCE_BYTES or len(masked) <= TAG_BYTES:
        raise InvalidToken()
    key = mask_key(credential)
    body, tag = masked[:-TAG_BYTES], masked[-TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(key, account, nonce, body)):
        raise InvalidToken()
    data = bytes(a ^ b for a, b in zip(body, _pad(key, account, nonce, len(body))))
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidToken() from None
