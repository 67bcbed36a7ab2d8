"""Credentials of authorities and clients: 256 random bits, shown once, stored as a hash.

The credential's text form (base64url, 43 characters, no padding) is what the admin hands
out and what credential files hold. The store keeps only SHA-256 over a domain label and the
text; a fast hash is enough because the input has 256 bits of entropy (no guessing attack).
"""
import base64
import hashlib
import hmac
import secrets

CREDENTIAL_BYTES = 32
_LABEL = b"otpfast credential v1\0"
# Compared against when the principal does not exist, so unknown and wrong take equal time.
_DUMMY_HASH = hashlib.sha256(_LABEL + b"no such principal").digest()


def new_credential() -> str:
    """A fresh credential (text form)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(CREDENTIAL_BYTES)).rstrip(b"=").decode()


def normalise(credential: bytes | str) -> bytes:
    """The credential as the ASCII bytes of its text form (surrounding whitespace removed,
    so a credential file's trailing newline does not matter)."""
    if isinstance(credential, str):
        credential = credential.encode("utf-8")
    return bytes(credential).strip()


def credential_hash(credential: bytes | str) -> bytes:
    return hashlib.sha256(_LABEL + normalise(credential)).digest()


def check(credential: bytes | str, stored_hash: bytes | None) -> bool:
    """Constant-time comparison; ``stored_hash=None`` (unknown principal) is always False
    but costs the same."""
    if not isinstance(credential, (bytes, bytearray, str)):
        credential, stored_hash = b"", None
    given = credential_hash(credential)
    ok = hmac.compare_digest(given, _DUMMY_HASH if stored_hash is None else stored_hash)
    return ok and stored_hash is not None
