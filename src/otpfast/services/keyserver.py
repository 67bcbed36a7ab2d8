"""The key server's logic: the source's steps 1-5 (see derivation.py for the math).

1. hands out its RSA public key (PEM);
2. an authority presents its credential (checked in constant time) and sends
   (account, authority id, RSA-OAEP-SHA256 ciphertext of its secret phrase);
3. the server decrypts, hashes the phrase with a per-record salt and PBKDF2-HMAC-SHA256
   (600,000 iterations by default) and stores the hash encrypted at rest;
4. when every authority the account names has contributed, it derives the token secret
   with HKDF over all contributions in ascending authority order and the scheme's material
   from that, and activates the account - in the same transaction as the last contribution;
5. each authority receives a receipt; the last one receives the ceremony transcript.

Every refusal (unknown authority, wrong credential, undecryptable ciphertext, unknown account,
account without a ceremony or already complete, authority not named by the account, second
contribution) raises the same Refused and changes nothing but the audit log.
"""
import hashlib
import secrets
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from otpfast.errors import Refused
from otpfast.store import ACCOUNT_PENDING, Store

from . import audit, credentials, derivation, tokens

MIN_ITERATIONS_DEFAULT = 600_000
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(),
                     label=None)


def encrypt_phrase(public_key_pem: bytes, phrase: bytes) -> bytes:
    """The authority's side of step 2: RSA-OAEP-SHA256 encryption to the key server."""
    public_key = serialization.load_pem_public_key(public_key_pem)
    return public_key.encrypt(phrase, _OAEP)


class KeyServer:
    def __init__(self, store: Store, private_key, *, iterations: int = derivation.DEFAULT_ITERATIONS,
                 clock=time.time):
        self.store = store
        self._private_key = private_key
        self.iterations = iterations
        self.clock = clock

    def public_key_pem(self) -> bytes:
        return self._private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def _decrypt(self, ciphertext: bytes) -> bytes | None:
        try:
            return self._private_key.decrypt(bytes(ciphertext), _OAEP)
        except (ValueError, TypeError):
            return None

    def contribute(self, account: str, authority_id: int, credential: bytes,
                   ciphertext: bytes) -> bytes:
        now = self.clock()
        try:
            return self._contribute(account, authority_id, credential, ciphertext, now)
        except Refused:
            with self.store.transaction() as tx:
                tx.audit(now, audit.CONTRIBUTE, str(account)[:128],
                         f"authority:{authority_id}"[:64], "-", audit.REFUSED)
            raise Refused() from None

    def _contribute(self, account, authority_id, credential, ciphertext, now) -> bytes:
        if (not isinstance(account, str) or isinstance(authority_id, bool)
                or not isinstance(authority_id, int) or not isinstance(ciphertext, bytes)):
            raise Refused()
        authority = self.store.authority(authority_id)
        authenticated = credentials.check(credential,
                                          None if authority is None else authority.credential_hash)
        phrase = self._decrypt(ciphertext)   # always decrypt: refusals take equal time
        if not authenticated or phrase is None:
            raise Refused()
        acct = self.store.account(account)
        if (acct is None or acct.state != ACCOUNT_PENDING or authority_id not in acct.authorities
                or any(c.authority_id == authority_id for c in self.store.contributions(account))):
            raise Refused()
        salt = secrets.token_bytes(derivation.SALT_BYTES)
        digest = derivation.contribution_digest(phrase, salt, self.iterations)
        ciphertext_hash = hashlib.sha256(ciphertext).digest()
        with self.store.transaction() as tx:
            acct = tx.account(account)
            if (acct is None or acct.state != ACCOUNT_PENDING
                    or authority_id not in acct.authorities):
                raise Refused()
            if not tx.add_contribution(account, authority_id, salt, digest, ciphertext_hash, now):
                raise Refused()
            tx.audit(now, audit.CONTRIBUTE, account, f"authority:{authority_id}", "-",
                     audit.ACCEPTED)
            contributions = tx.contributions(account)
            if sorted(c.authority_id for c in contributions) != sorted(acct.authorities):
                return derivation.receipt(account, authority_id, ciphertext_hash)
            contributions.sort(key=lambda c: c.authority_id)
            secret = derivation.token_secret(account, [c.digest for c in contributions])
            material, chain_last, counter = tokens.derive_material(acct.type, acct.params, secret)
            transcript = derivation.transcript(
                account, [(c.authority_id, c.ciphertext_hash) for c in contributions])
            if not tx.activate_account(account, material, chain_last, transcript,
                                       counter=counter):
                raise Refused()
            tx.audit(now, audit.CEREMONY_COMPLETE, account, f"authority:{authority_id}", "-",
                     audit.ACCEPTED)
            return transcript
