"""Wire messages: frozen, slotted dataclasses carrying bytes, ints and str only.

Each class declares its wire type code (``TYPE``) and its fields in wire order
(``FIELDS``: (name, kind, limit)); the codec encodes and validates from these tables.
Kinds: ``"str"`` (UTF-8, no control characters, at most ``limit`` bytes), ``"bytes"``
(at most ``limit`` bytes), ``"u32"`` / ``"u64"`` (unsigned integers; ``limit`` is the
inclusive minimum).
"""
from dataclasses import dataclass

NAME_LIMIT = 128          # account / client names, UTF-8 bytes
OTP_LIMIT = 256           # an OTP as typed (hex hash-chain values, RFC 2289 six words)
CREDENTIAL_LIMIT = 256
CIPHERTEXT_LIMIT = 1024   # RSA-OAEP under keys up to 8192 bits
PEM_LIMIT = 16384
RECEIPT_LIMIT = 256
NONCE_LIMIT = 64
MASKED_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Hello:
    """Authority -> key server: ask for the key server's RSA public key."""
    TYPE = 1
    FIELDS = ()


@dataclass(frozen=True, slots=True)
class PublicKey:
    """Key server -> authority: the RSA public key (PEM)."""
    pem: bytes
    TYPE = 2
    FIELDS = (("pem", "bytes", PEM_LIMIT),)


@dataclass(frozen=True, slots=True)
class Contribute:
    """Authority -> key server: an encrypted secret phrase for one account's ceremony."""
    account: str
    authority_id: int
    credential: bytes
    ciphertext: bytes
    TYPE = 3
    FIELDS = (("account", "str", NAME_LIMIT), ("authority_id", "u32", 1),
              ("credential", "bytes", CREDENTIAL_LIMIT), ("ciphertext", "bytes", CIPHERTEXT_LIMIT))

    def __repr__(self):
        return f"Contribute(account={self.account!r}, authority_id={self.authority_id}, credential=<hidden>, ciphertext=<{len(self.ciphertext)} bytes>)"


@dataclass(frozen=True, slots=True)
class Receipt:
    """Key server -> authority: the receipt binding the contribution into the transcript."""
    receipt: bytes
    TYPE = 4
    FIELDS = (("receipt", "bytes", RECEIPT_LIMIT),)


@dataclass(frozen=True, slots=True)
class Auth:
    """Client -> distribution server: authenticate as a registered client."""
    client: str
    credential: bytes
    TYPE = 5
    FIELDS = (("client", "str", NAME_LIMIT), ("credential", "bytes", CREDENTIAL_LIMIT))

    def __repr__(self):
        return f"Auth(client={self.client!r}, credential=<hidden>)"


@dataclass(frozen=True, slots=True)
class AuthOk:
    """Distribution server -> client: authenticated."""
    TYPE = 6
    FIELDS = ()


@dataclass(frozen=True, slots=True)
class Request:
    """Account client -> distribution server: issue the next OTP of ``account``."""
    account: str
    TYPE = 7
    FIELDS = (("account", "str", NAME_LIMIT),)


@dataclass(frozen=True, slots=True)
class Issued:
    """Distribution server -> client: the masked OTP, its nonce and expiry (ms since the epoch)."""
    nonce: bytes
    masked: bytes
    expires_at_ms: int
    TYPE = 8
    FIELDS = (("nonce", "bytes", NONCE_LIMIT), ("masked", "bytes", MASKED_LIMIT),
              ("expires_at_ms", "u64", 0))

    def __repr__(self):
        return f"Issued(nonce=<{len(self.nonce)} bytes>, masked=<hidden>, expires_at_ms={self.expires_at_ms})"


@dataclass(frozen=True, slots=True)
class Verify:
    """Verifier client -> distribution server: is ``otp`` right for ``account``?"""
    account: str
    otp: str
    TYPE = 9
    FIELDS = (("account", "str", NAME_LIMIT), ("otp", "str", OTP_LIMIT))

    def __repr__(self):
        return f"Verify(account={self.account!r}, otp=<hidden>)"


@dataclass(frozen=True, slots=True)
class Accept:
    """Distribution server -> verifier: the OTP verified (and is now used)."""
    TYPE = 10
    FIELDS = ()


@dataclass(frozen=True, slots=True)
class Reject:
    """Distribution server -> verifier: the OTP did not verify (no reason, on purpose)."""
    TYPE = 11
    FIELDS = ()


@dataclass(frozen=True, slots=True)
class Error:
    """Server -> peer: generic refusal; the server closes the connection after it."""
    TYPE = 12
    FIELDS = ()


MESSAGE_TYPES = {cls.TYPE: cls for cls in (
    Hello, PublicKey, Contribute, Receipt, Auth, AuthOk, Request, Issued, Verify, Accept, Reject, Error)}
