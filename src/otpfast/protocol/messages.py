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
PROOF_LIMIT = 255         # as long as the credential: 43 bytes for every credential otpfast issues
CIPHERTEXT_LIMIT = 1024   # RSA-OAEP under keys up to 8192 bits
PEM_LIMIT = 16384
RECEIPT_LIMIT = 256
NONCE_LIMIT = 64
MASKED_LIMIT = 1024
SIGNATURE_LIMIT = 1024    # RSA-PSS under keys up to 8192 bits
DIGEST_LIMIT = 64
ELEMENT_LIMIT = 32        # a ristretto255 element or scalar
DLEQ_LIMIT = 64           # a DLEQ proof: two scalars
COUNTERS_LIMIT = 8 * 16   # up to 16 u64 counters, packed big-endian
CEREMONY_LIMIT = 60000    # a DKG round's canonical JSON (services.tprfdkg; n <= 7 share servers)
REQUEST_ID_LIMIT = 64     # a client's request id (VerifyOnce)


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
    """Authority -> key server (after authenticating): an encrypted secret phrase for one
    account's ceremony (RSA-OAEP, labelled with the account and the authority id)."""
    account: str
    ciphertext: bytes
    TYPE = 3
    FIELDS = (("account", "str", NAME_LIMIT), ("ciphertext", "bytes", CIPHERTEXT_LIMIT))

    def __repr__(self):
        return f"Contribute(account={self.account!r}, ciphertext=<{len(self.ciphertext)} bytes>)"


@dataclass(frozen=True, slots=True)
class Receipt:
    """Key server -> authority: the receipt (a digest binding the contribution), signed by the
    key server (RSA-PSS-SHA256), and how many authorities still have to contribute."""
    receipt: bytes
    signature: bytes
    remaining: int
    TYPE = 4
    FIELDS = (("receipt", "bytes", DIGEST_LIMIT), ("signature", "bytes", SIGNATURE_LIMIT),
              ("remaining", "u32", 0))


@dataclass(frozen=True, slots=True)
class AuthStart:
    """Client or authority -> server: start authenticating as ``principal`` (a client name, or
    an authority id in decimal on the key server)."""
    principal: str
    client_nonce: bytes
    TYPE = 13
    FIELDS = (("principal", "str", NAME_LIMIT), ("client_nonce", "bytes", NONCE_LIMIT))


@dataclass(frozen=True, slots=True)
class Challenge:
    """Server -> client: the server's nonce."""
    server_nonce: bytes
    TYPE = 14
    FIELDS = (("server_nonce", "bytes", NONCE_LIMIT),)


@dataclass(frozen=True, slots=True)
class AuthProof:
    """Client -> server: the proof of the credential, bound to both nonces and to the server
    certificate the client saw (services.credentials); never the credential itself."""
    proof: bytes
    TYPE = 15
    FIELDS = (("proof", "bytes", PROOF_LIMIT),)

    def __repr__(self):
        return f"AuthProof(proof=<{len(self.proof)} bytes>)"


@dataclass(frozen=True, slots=True)
class AuthOk:
    """Server -> client: authenticated; ``server_signature`` proves the server knew the
    credential's stored hash and saw the same certificate."""
    server_signature: bytes
    TYPE = 6
    FIELDS = (("server_signature", "bytes", DIGEST_LIMIT),)


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
class TranscriptRequest:
    """Authority -> key server (after authenticating): the signed transcript of a completed
    ceremony the authority took part in."""
    account: str
    TYPE = 16
    FIELDS = (("account", "str", NAME_LIMIT),)


@dataclass(frozen=True, slots=True)
class Transcript:
    """Key server -> authority: the ceremony transcript and its RSA-PSS-SHA256 signature."""
    transcript: bytes
    signature: bytes
    TYPE = 17
    FIELDS = (("transcript", "bytes", DIGEST_LIMIT), ("signature", "bytes", SIGNATURE_LIMIT))


@dataclass(frozen=True, slots=True)
class Error:
    """Server -> peer: generic refusal; the server closes the connection after it."""
    TYPE = 12
    FIELDS = ()


# -- share servers (tprf tokens; protocol.shares) ---------------------------------------------
@dataclass(frozen=True, slots=True)
class ShareStatus:
    """Device or verifier -> share server: the account's issuing watermark and the counters this
    server issued that are not consumed yet."""
    account: str
    TYPE = 18
    FIELDS = (("account", "str", NAME_LIMIT),)


@dataclass(frozen=True, slots=True)
class ShareState:
    """Share server -> client: ``watermark`` (the lowest counter it would issue) and the
    outstanding counters (u64 big-endian each; a single zero byte for none)."""
    watermark: int
    outstanding: bytes
    TYPE = 19
    FIELDS = (("watermark", "u64", 0), ("outstanding", "bytes", COUNTERS_LIMIT))


@dataclass(frozen=True, slots=True)
class Evaluate:
    """Device (purpose 1, issue) or verifier (purpose 2, verify) -> share server: evaluate the
    account's share at ``counter``."""
    account: str
    counter: int
    purpose: int
    TYPE = 20
    FIELDS = (("account", "str", NAME_LIMIT), ("counter", "u64", 0), ("purpose", "u32", 1))


@dataclass(frozen=True, slots=True)
class Partial:
    """Share server -> client: H1(x)^{k_j} and its DLEQ proof against g^{k_j}."""
    index: int
    element: bytes
    proof: bytes
    TYPE = 21
    FIELDS = (("index", "u32", 1), ("element", "bytes", ELEMENT_LIMIT), ("proof", "bytes", DLEQ_LIMIT))


@dataclass(frozen=True, slots=True)
class Outcome:
    """Verifier -> share server: what became of the verification at ``counter`` (1 accepted,
    0 a wrong OTP: it counts toward the account's throttle)."""
    account: str
    counter: int
    accepted: int
    TYPE = 22
    FIELDS = (("account", "str", NAME_LIMIT), ("counter", "u64", 0), ("accepted", "u32", 0))


@dataclass(frozen=True, slots=True)
class CeremonyStep:
    """Ceremony orchestrator -> share server: one DKG round (``round`` 1 deal, 2 dealings,
    3 finish, 4 confirm) with its canonical JSON body (services.tprfdkg)."""
    account: str
    round: int
    body: bytes
    TYPE = 23
    FIELDS = (("account", "str", NAME_LIMIT), ("round", "u32", 1), ("body", "bytes", CEREMONY_LIMIT))


@dataclass(frozen=True, slots=True)
class CeremonyReply:
    """Share server -> orchestrator: its answer to a DKG round (canonical JSON) and its
    RSA-PSS-SHA256 signature over it."""
    body: bytes
    signature: bytes
    TYPE = 24
    FIELDS = (("body", "bytes", CEREMONY_LIMIT), ("signature", "bytes", SIGNATURE_LIMIT))


@dataclass(frozen=True, slots=True)
class TryAgain:
    """Distribution server -> client, the reply to a Verify: the server's store could not
    decide it now (unreachable, timed out); nothing was accepted. Ask again, here or at
    another server. Not a refusal: the connection stays open."""
    TYPE = 25
    FIELDS = ()


@dataclass(frozen=True, slots=True)
class VerifyOnce:
    """Verifier -> distribution server: Verify with the client's id of this request; a
    retry with the same id (after a lost reply or TryAgain) gets the outcome the first one
    got (Accept/Reject), never a second decision."""
    account: str
    otp: str
    request_id: str
    TYPE = 26
    FIELDS = (("account", "str", NAME_LIMIT), ("otp", "str", OTP_LIMIT),
              ("request_id", "str", REQUEST_ID_LIMIT))

    def __repr__(self):
        return f"VerifyOnce(account={self.account!r}, otp=<hidden>, request_id={self.request_id!r})"


MESSAGE_TYPES = {cls.TYPE: cls for cls in (
    Hello, PublicKey, Contribute, Receipt, AuthOk, Request, Issued, Verify, Accept, Reject, Error,
    AuthStart, Challenge, AuthProof, TranscriptRequest, Transcript, ShareStatus, ShareState,
    Evaluate, Partial, Outcome, CeremonyStep, CeremonyReply, TryAgain, VerifyOnce)}
