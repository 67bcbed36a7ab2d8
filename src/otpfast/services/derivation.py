"""Key-ceremony math and the derivation of every account's token material.

Ceremony (the source's steps 3-5, hardened as DESIGN §2 asks):

    digest_i   = PBKDF2-HMAC-SHA256(phrase_i, salt_i (16 random bytes), iterations, 32)
    secret     = HKDF-SHA256(ikm  = digest_a || digest_b || ...   (ascending authority id),
                             salt = "otpfast ceremony v1",
                             info = "otpfast token secret\\0" || account, length = 32)
    receipt_i  = SHA-256("otpfast receipt v1\\0" || account || "\\0" || u32(i) || SHA-256(ct_i))
    transcript = SHA-256("otpfast transcript v1\\0" || account || "\\0" ||
                         u32(a) || SHA-256(ct_a) || u32(b) || SHA-256(ct_b) || ...)

Each authority receives its receipt_i and, once the ceremony is complete, the transcript
(binding every ciphertext), both signed by the key server (services.keyserver). Accounts created
without a ceremony take ``secret`` from the CSPRNG. Either way the scheme's material is then
derived from ``secret`` deterministically (:func:`derive_material`), so the same
contributions always give the same token.
"""
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SALT_BYTES = 16
SECRET_BYTES = 32
DEFAULT_ITERATIONS = 600_000
HOTP_KEY_BYTES = {"sha1": 20, "sha256": 32, "sha512": 64}
CHAIN_SEED_BYTES = 32
LFSR_DEGREE = 20
PRIMROOT_PRIME = 999_983


def contribution_digest(phrase: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", phrase, salt, iterations, dklen=32)


def token_secret(account: str, digests: list[bytes]) -> bytes:
    """``digests`` in ascending authority order."""
    return HKDF(algorithm=hashes.SHA256(), length=SECRET_BYTES, salt=b"otpfast ceremony v1",
                info=b"otpfast token secret\0" + account.encode()).derive(b"".join(digests))


def receipt(account: str, authority_id: int, ciphertext_hash: bytes) -> bytes:
    return hashlib.sha256(b"otpfast receipt v1\0" + account.encode() + b"\0"
                          + struct.pack(">I", authority_id) + ciphertext_hash).digest()


def transcript(account: str, contributions: list[tuple[int, bytes]]) -> bytes:
    """``contributions``: (authority id, SHA-256 of its ciphertext), ascending id."""
    h = hashlib.sha256(b"otpfast transcript v1\0" + account.encode() + b"\0")
    for authority_id, ciphertext_hash in contributions:
        h.update(struct.pack(">I", authority_id) + ciphertext_hash)
    return h.digest()


def _subkey(secret: bytes, label: str, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=b"otpfast material v1",
                info=b"otpfast " + label.encode()).derive(secret)


class HmacDrbg:
    """A deterministic random bit stream from a secret: HMAC-SHA256(key, counter) blocks
    with key = HKDF(secret, label). Same secret and label -> same bits. Offers the
    ``random.Random``-style calls parameter generators use."""

    def __init__(self, secret: bytes, label: str):
        self._key = _subkey(secret, "drbg " + label, 32)
        self._counter = 0
        self._buffer = b""

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            block = hmac.new(self._key, struct.pack(">Q", self._counter), hashlib.sha256)
            self._buffer += block.digest()
            self._counter += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def getrandbits(self, k: int) -> int:
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        if k == 0:
            return 0
        return int.from_bytes(self.read((k + 7) // 8), "big") >> (-k % 8)

    __call__ = getrandbits

    def randbelow(self, n: int) -> int:
        if n <= 0:
            raise ValueError("n must be positive")
        k = n.bit_length()
        while True:
            r = self.getrandbits(k)
            if r < n:
                return r

    def randrange(self, start: int, stop: int | None = None) -> int:
        if stop is None:
            start, stop = 0, start
        return start + self.randbelow(stop - start)

    def randint(self, a: int, b: int) -> int:
        return a + self.randbelow(b - a + 1)
