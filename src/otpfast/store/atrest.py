"""Keys kept outside the database: the at-rest key and the keys derived from it.

The at-rest key is 32 random bytes, held in a 0600 file in the data directory or in
``$OTPFAST_AT_REST_KEY`` (base64url or hex). From it, HKDF-SHA256 derives
independent keys so one key never serves two purposes:

* ``enc``   AES-256-GCM for secrets (token material, contribution hashes, masking keys);
  the record's identity (e.g. the account name) is the associated data, so a ciphertext
  moved to another row does not decrypt.
* ``audit`` HMAC-SHA256 key chaining the audit log (someone with write access to the
  database but not to this key cannot re-chain edited entries).
* ``otp``   HMAC-SHA256 key for the digests of issued OTPs (a 6-digit OTP has only 10^6
  values, so an unkeyed hash would be reversible).
* ``row``   keyed BLAKE2b-256 key authenticating rows (clients, accounts, issued OTPs,
  authorities: see otpfast.store.rows), so an edit without the at-rest key is refused.
* ``head``  HMAC-SHA256 key of the audit head file and of the archive anchor (a check value
  an attacker who deletes or rewrites them cannot recompute).
* ``pin``   HMAC-SHA256 pepper of PIN and recovery-code hashes (services.pin).

After ``otpfast rotate at-rest`` (otpfast.store.rekey) the key is 96 bytes: the new 32-byte
key, then the ``pin`` and ``otp`` keys carried over from the key before (what they hashed -
PINs, recovery codes, issued OTPs - cannot be hashed again without the secret itself).
Everything else derives from the new key.
"""
import base64
import binascii
import hashlib
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from otpfast.core import HmacSha256
from otpfast.errors import StoreError

KEY_BYTES = 32
CARRIED_BYTES = 64      # the pin and otp keys a rotated key carries over (see above)
NONCE_BYTES = 12
ENV_VAR = "OTPFAST_AT_REST_KEY"


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


def decode_key(text: str) -> bytes:
    """Parse an at-rest key written as base64url (the file format) or hex."""
    text = text.strip()
    key = None
    if len(text) in (2 * KEY_BYTES, 2 * (KEY_BYTES + CARRIED_BYTES)):
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = None
    if key is None:
        try:
            key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise StoreError("the at-rest key is not base64url or hex") from None
    if len(key) not in (KEY_BYTES, KEY_BYTES + CARRIED_BYTES):
        raise StoreError(f"the at-rest key must be {KEY_BYTES} bytes ({KEY_BYTES + CARRIED_BYTES} "
                         "after a rotation)")
    return key


def _derive(key: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"otpfast at-rest v1",
                info=label).derive(key)


class AtRestKeys:
    """The AEAD and MAC keys of one store, derived from its at-rest key."""

    def __init__(self, key: bytes):
        if not isinstance(key, bytes) or len(key) not in (KEY_BYTES, KEY_BYTES + CARRIED_BYTES):
            raise StoreError(f"the at-rest key must be {KEY_BYTES} bytes")
        if len(key) > KEY_BYTES:
            key, otp_key, pin_key = key[:KEY_BYTES], key[KEY_BYTES:2 * KEY_BYTES], key[2 * KEY_BYTES:]
        else:
            otp_key, pin_key = _derive(key, b"otpfast otp digest"), _derive(key, b"otpfast pin pepper")
        self.carried = otp_key + pin_key        # what a rotation carries over
        self._aead = AESGCM(_derive(key, b"otpfast encrypt"))
        self.audit_key = _derive(key, b"otpfast audit mac")
        self.audit_mac = HmacSha256(self.audit_key)
        self._otp_mac = HmacSha256(otp_key)
        # keyed BLAKE2b-256 (RFC 7693's MAC mode): one hash per row MAC, on the hot path;
        # the key itself for the core's batch kernel (otpfast.store.rows.row_macs)
        self.row_key = _derive(key, b"otpfast row mac")
        self.row_mac = hashlib.blake2b(key=self.row_key, digest_size=32)
        self.head_mac = HmacSha256(_derive(key, b"otpfast head mac"))
        # the pepper of PIN and recovery-code hashes (services.pin): kept out of the store
        self.pin_mac = HmacSha256(pin_key)

    def encrypt(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def decrypt(self, blob: bytes, associated: bytes) -> bytes:
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated)
        except (InvalidTag, ValueError):
            raise StoreError("a record does not decrypt: wrong at-rest key or a moved/edited "
                             "record") from None

    def otp_digest(self, account: str, otp: str) -> bytes:
        return self._otp_mac(account.encode() + b"\0" + otp.encode())


def load_key(path: str | None) -> bytes:
    """The at-rest key from $OTPFAST_AT_REST_KEY, else from ``path`` (must be 0600)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return decode_key(env)
    if path is None:
        raise StoreError(f"no at-rest key: set ${ENV_VAR} or give a key file")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise StoreError(f"no at-rest key file at {path} (run `otpfast init`)") from None
    if st.st_mode & 0o077:
        raise StoreError(f"the at-rest key file {path} must be mode 0600")
    with open(path, encoding="ascii") as fh:
        return decode_key(fh.read())
