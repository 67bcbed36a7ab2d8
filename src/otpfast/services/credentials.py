"""Credentials of authorities and clients: 256 random bits, shown once, stored as a hash;
proved over the network by challenge-response, never sent.

The credential's text form (base64url, 43 characters, no padding) is what the admin hands
out and what credential files hold. The store keeps only SHA-256 over a domain label and the
text; a fast hash is enough because the input has 256 bits of entropy (no guessing attack).

Proof of the credential (SCRAM's idea, RFC 5802, with the stored hash as StoredKey and the
credential text as ClientKey; channel binding RFC 5929 tls-server-end-point):

    binding     = SHA-256(DER of the server certificate the client saw)
    auth_msg    = "otpfast auth v2\\0" || kind || lp(principal) || lp(client_nonce)
                  || lp(server_nonce) || lp(binding)                 (lp = u16be length prefix)
    stored      = SHA-256("otpfast credential v1\\0" || credential)   (what the store keeps)
    proof       = credential XOR HKDF-SHA256(ikm = stored, info = "otpfast proof\\0" || auth_msg,
                                             length = len(credential))
    session_key = HKDF-SHA256(ikm = credential, salt = "otpfast session v2",
                              info = auth_msg, length = 32)
    server_sig  = HMAC-SHA256(session_key, "otpfast server signature")

The server recovers the credential from the proof with its stored hash and checks that it
hashes to the stored hash (constant time; an unknown principal costs the same). A relay that
terminates TLS with its own certificate sees a proof bound to *its* certificate: forwarded
to the real server it recovers garbage, and it gives the relay nothing to reuse (the pad needs
the stored hash). The session key (response masks) needs the credential itself.
"""
import base64
import dataclasses
import hashlib
import hmac
import secrets
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from otpfast.errors import InvalidParameter

CREDENTIAL_BYTES = 32
NONCE_BYTES = 32
MIN_NONCE_BYTES = 16
CLIENT, AUTHORITY = b"client", b"authority"
SESSION_KEY_BYTES = 32
MAX_CREDENTIAL_BYTES = 255        # the proof is as long as the credential (43 bytes as issued)
_LABEL = b"otpfast credential v1\0"
# Compared against when the principal does not exist, so unknown and wrong take equal time.
_DUMMY_HASH = hashlib.sha256(_LABEL + b"no such principal").digest()
_U16 = struct.Struct(">H")


def new_credential() -> str:
    """A fresh credential (text form)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(CREDENTIAL_BYTES)).rstrip(b"=").decode()


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def normalise(credential: bytes | str) -> bytes:
    """The credential as the ASCII bytes of its text form (surrounding whitespace removed,
    so a credential file's trailing newline does not matter)."""
    if isinstance(credential, str):
        credential = credential.encode("utf-8")
    return bytes(credential).strip()


def _hash(key: bytes) -> bytes:
    return hashlib.sha256(_LABEL + key).digest()


def credential_hash(credential: bytes | str) -> bytes:
    return _hash(normalise(credential))


@dataclasses.dataclass(frozen=True, slots=True)
class Exchange:
    """One authentication: who (``kind`` CLIENT or AUTHORITY, ``principal``), both nonces and
    the channel binding (SHA-256 of the server certificate)."""
    kind: bytes
    principal: str
    client_nonce: bytes
    server_nonce: bytes
    binding: bytes

    def auth_message(self) -> bytes:
        parts = [self.principal.encode("utf-8"), self.client_nonce, self.server_nonce, self.binding]
        return (b"otpfast auth v2\0" + self.kind + b"\0"
                + b"".join(_U16.pack(len(p)) + p for p in parts))


def _pad(stored: bytes, auth_message: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                info=b"otpfast proof\0" + auth_message).derive(stored)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _session_key(key: bytes, auth_message: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=SESSION_KEY_BYTES, salt=b"otpfast session v2",
                info=auth_message).derive(key)


def server_signature(session_key: bytes) -> bytes:
    return hmac.new(session_key, b"otpfast server signature", hashlib.sha256).digest()


def prove(credential: bytes | str, exchange: Exchange) -> tuple[bytes, bytes]:
    """The client's side: (proof to send, session key)."""
    key = normalise(credential)
    if not 1 <= len(key) <= MAX_CREDENTIAL_BYTES:
        raise InvalidParameter("credential", f"must be 1..{MAX_CREDENTIAL_BYTES} bytes")
    message = exchange.auth_message()
    return _xor(key, _pad(_hash(key), message, len(key))), _session_key(key, message)


def check_proof(proof: bytes, stored_hash: bytes | None, exchange: Exchange) -> bytes | None:
    """The server's side: the session key if ``proof`` proves the credential whose hash is
    ``stored_hash``, else None. ``stored_hash=None`` (unknown principal) costs the same."""
    if not isinstance(proof, bytes) or not 1 <= len(proof) <= MAX_CREDENTIAL_BYTES:
        proof, stored_hash = b"\0", None
    stored = _DUMMY_HASH if stored_hash is None else stored_hash
    message = exchange.auth_message()
    key = _xor(proof, _pad(stored, message, len(proof)))
    session_key = _session_key(key, message)
    if not hmac.compare_digest(_hash(key), stored) or stored_hash is None:
        return None
    return session_key

