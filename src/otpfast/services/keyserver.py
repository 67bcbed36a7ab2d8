"""The key server's logic: the source's steps 1-5 (see derivation.py for the math).

1. hands out its RSA public key (PEM);
2. an authority proves its credential by challenge-response (services.credentials) - before
   anything else, so no RSA work is done for an unauthenticated peer - and sends
   (account, RSA-OAEP-SHA256 ciphertext of its secret phrase), the OAEP label naming the
   account and the authority: another authority's ciphertext, or one made for another
   account, does not decrypt;
3. the server checks the account waits for this authority (cheap checks first), decrypts,
   refuses an empty phrase, hashes the phrase with a per-record salt and PBKDF2-HMAC-SHA256
   (600,000 iterations by default) and stores the hash encrypted at rest;
4. when every authority the account names has contributed, it derives the token secret
   with HKDF over all contributions in ascending authority order and the scheme's material
   from that, activates the account and deletes the contributions' digests - in the same
   transaction as the last contribution;
5. each authority receives a receipt signed by the key server's RSA key (RSA-PSS-SHA256) and,
   once the ceremony is complete, fetches the signed transcript (``transcript``).

Every refusal (unknown authority, wrong proof, undecryptable ciphertext, empty phrase,
unknown account, account without a ceremony or already complete, authority not named by the
account, second contribution) raises the same Refused and changes nothing but the audit log.
"""
import dataclasses
import hashlib
import secrets
import struct
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from otpfast.errors import Refused
from otpfast.store import ACCOUNT_ACTIVE, ACCOUNT_PENDING, Store

from . import audit, credentials, derivation, policy, tokens
from .refusals import RefusalLog
from .throttle import RateLimiter

MIN_ITERATIONS_DEFAULT = 600_000
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
_RECEIPT_CONTEXT = b"otpfast signed receipt v2\0"
_TRANSCRIPT_CONTEXT = b"otpfast signed transcript v2\0"


def _oaep(account: str, authority_id: int) -> padding.OAEP:
    label = b"otpfast contribution v2\0" + account.encode() + b"\0" + struct.pack(">I", authority_id)
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(),
                        label=label)


def encrypt_phrase(public_key_pem: bytes, phrase: bytes, account: str, authority_id: int) -> bytes:
    """The authority's side of step 2: RSA-OAEP-SHA256, labelled with account and authority."""
    public_key = serialization.load_pem_public_key(public_key_pem)
    return public_key.encrypt(phrase, _oaep(account, authority_id))


def _verify(public_key_pem: bytes, signature: bytes, message: bytes) -> bool:
    try:
        serialization.load_pem_public_key(public_key_pem).verify(signature, message, _PSS,
                                                                 hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def check_receipt(public_key_pem: bytes, account: str, authority_id: int, ciphertext: bytes,
                  receipt: bytes, signature: bytes) -> bool:
    """The authority's check: ``receipt`` names this contribution and the key server signed it."""
    expected = derivation.receipt(account, authority_id, hashlib.sha256(ciphertext).digest())
    return receipt == expected and _verify(public_key_pem, signature, _RECEIPT_CONTEXT + receipt)


def check_transcript(public_key_pem: bytes, account: str, transcript: bytes,
                     signature: bytes) -> bool:
    """True if the key server signed ``transcript`` as the ceremony transcript of ``account``."""
    return _verify(public_key_pem, signature,
                   _TRANSCRIPT_CONTEXT + account.encode() + b"\0" + transcript)


@dataclasses.dataclass(frozen=True, slots=True)
class AuthorityInfo:
    authority_id: int
    session_key: bytes = dataclasses.field(repr=False, compare=False)
    source: str = dataclasses.field(default="-", compare=False)    # the peer address (audit)
    # the credential it proved: after `authority delete` its session contributes nothing
    credential_hash: bytes | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass(frozen=True, slots=True)
class SignedReceipt:
    receipt: bytes
    signature: bytes
    remaining: int       # authorities still to contribute; 0: the ceremony is complete


class KeyServer:
    def __init__(self, store: Store, private_key, *, iterations: int = derivation.DEFAULT_ITERATIONS,
                 clock=time.time):
        self.store = store
        self._private_key = private_key
        self.iterations = iterations
        self.clock = clock
        # refusals: throttled per source, audited in batches and floods aggregated, as the
        # distribution server's (services.refusals)
        self._failed_sources = RateLimiter(policy.FAILED_PER_SOURCE, clock=clock)
        self._refusals = RefusalLog()

    def set_failure_limits(self, per_source, per_client=None) -> None:
        """A new per-source failure throttle while serving (SIGHUP); ``per_client`` is the
        distribution server's (the key server's refusals are per source only)."""
        self._failed_sources.limit = per_source

    def public_key_pem(self) -> bytes:
        return self._private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def _sign(self, message: bytes) -> bytes:
        return self._private_key.sign(message, _PSS, hashes.SHA256())

    def _refused(self, now, event, account, authority, source="-", outcome=audit.REFUSED):
        """Queue a refusal with its reason (``outcome``); the Refused returned says nothing."""
        source = str(source)[:64]
        self._failed_sources.charge(source)
        self._refusals.add(now, event, str(account)[:128], str(authority)[:64], source, outcome)
        self.flush_refusals(now)
        return Refused()

    def flush_refusals(self, now: float | None = None, *, everything: bool = False) -> int:
        """Write the refusal entries that are due (one transaction): a source's first few
        each minute one by one, the rest of a flood as one aggregate when its window ends;
        ``everything`` at shutdown. Returns how many entries were written."""
        entries = self._refusals.take(self.clock() if now is None else now, everything=everything)
        if entries:
            try:
                with self.store.transaction() as tx:
                    tx.audit_many(entries)
            except BaseException:
                self._refusals.put_back(entries)
                raise
        return len(entries)

    def close(self) -> None:
        """Write every queued refusal, then close the store (at shutdown)."""
        try:
            self.flush_refusals(everything=True)
        finally:
            self.store.close()

    def authenticate(self, exchange: credentials.Exchange, proof: bytes, *,
                     source: str = "-") -> AuthorityInfo:
        """Check an authority's proof; ``exchange.principal`` is its id in decimal."""
        principal = exchange.principal
        if self._failed_sources.blocked(str(source)[:64]):
            # out of failures: refused before any work (this says nothing about the principal)
            raise self._refused(self.clock(), audit.AUTHENTICATE, "-", f"authority:{principal}",
                                source, audit.THROTTLED) from None
        authority = None
        if (exchange.kind == credentials.AUTHORITY and principal.isascii() and principal.isdigit()
                and len(principal) <= 10):
            authority = self.store.authority(int(principal))
        session_key = credentials.check_proof(
            proof, None if authority is None else authority.credential_hash, exchange)
        if session_key is None:
            raise self._refused(self.clock(), audit.AUTHENTICATE, "-", f"authority:{principal}",
                                source, audit.UNKNOWN_PRINCIPAL if authority is None
                                else audit.BAD_PROOF) from None
        return AuthorityInfo(int(principal), session_key, str(source)[:64],
                             authority.credential_hash)

    def contribute(self, authority: AuthorityInfo, account: str, ciphertext: bytes) -> SignedReceipt:
        """An authenticated authority's contribution; its signed receipt."""
        now = self.clock()
        try:
            return self._contribute(authority, account, ciphertext, now)
        except Refused as exc:      # its text is the audit outcome (never sent)
            raise self._refused(now, audit.CONTRIBUTE, account,
                                f"authority:{authority.authority_id}", authority.source,
                                str(exc) or audit.REFUSED) from None

    def _waiting_for(self, account, authority_id) -> bool:
        acct = self.store.account(account)
        return (acct is not None and acct.state == ACCOUNT_PENDING
                and authority_id in acct.authorities
                and all(c.authority_id != authority_id for c in self.store.contributions(account)))

    def _contribute(self, authority, account, ciphertext, now) -> SignedReceipt:
        authority_id = authority.authority_id
        if not isinstance(account, str) or not isinstance(ciphertext, bytes):
            raise Refused(audit.MALFORMED)
        if authority.credential_hash is not None:       # None: built in-process
            current = self.store.authority(authority_id)
            if current is None or current.credential_hash != authority.credential_hash:
                raise Refused(audit.REVOKED)
        if not self._waiting_for(account, authority_id):     # before any RSA work
            raise Refused(audit.REQUEST_NO_ACCOUNT if self.store.account(account) is None
                          else audit.NOT_WAITING)
        try:
            phrase = self._private_key.decrypt(ciphertext, _oaep(account, authority_id))
        except (ValueError, TypeError):
            raise Refused(audit.UNDECRYPTABLE) from None
        if not phrase:
            raise Refused(audit.EMPTY_PHRASE)
        salt = secrets.token_bytes(derivation.SALT_BYTES)
        digest = derivation.contribution_digest(phrase, salt, self.iterations)
        ciphertext_hash = hashlib.sha256(ciphertext).digest()
        with self.store.transaction() as tx:
            acct = tx.account(account)
            if (acct is None or acct.state != ACCOUNT_PENDING
                    or authority_id not in acct.authorities):
                raise Refused(audit.NOT_WAITING)
            if not tx.add_contribution(account, authority_id, salt, digest, ciphertext_hash, now):
                raise Refused(audit.NOT_WAITING)
            tx.audit(now, audit.CONTRIBUTE, account, f"authority:{authority_id}",
                     authority.source, audit.ACCEPTED)
            contributions = tx.contributions(account)
            remaining = len(set(acct.authorities) - {c.authority_id for c in contributions})
            if not remaining:
                contributions.sort(key=lambda c: c.authority_id)
                secret = derivation.token_secret(account, [c.digest for c in contributions])
                material, chain_last, counter = tokens.derive_material(acct.type, acct.params,
                                                                       secret)
                transcript = derivation.transcript(
                    account, [(c.authority_id, c.ciphertext_hash) for c in contributions])
                if not tx.activate_account(account, material, chain_last, transcript,
                                           counter=counter):
                    raise Refused()
                tx.delete_contributions(account)
                tx.audit(now, audit.CEREMONY_COMPLETE, account, f"authority:{authority_id}",
                         authority.source, audit.ACCEPTED)
        receipt = derivation.receipt(account, authority_id, ciphertext_hash)
        return SignedReceipt(receipt, self._sign(_RECEIPT_CONTEXT + receipt), remaining)

    def transcript(self, authority: AuthorityInfo, account: str) -> tuple[bytes, bytes]:
        """(transcript, signature) of a completed ceremony ``authority`` took part in."""
        acct = self.store.account(account) if isinstance(account, str) else None
        if (acct is None or acct.state != ACCOUNT_ACTIVE or acct.transcript is None
                or authority.authority_id not in acct.authorities):
            raise self._refused(self.clock(), audit.TRANSCRIPT, account,
                                f"authority:{authority.authority_id}", authority.source,
                                audit.REQUEST_NO_ACCOUNT if acct is None
                                else audit.REQUEST_PENDING if acct.state != ACCOUNT_ACTIVE
                                else audit.NOT_WAITING)
        signed = _TRANSCRIPT_CONTEXT + account.encode() + b"\0" + acct.transcript
        return acct.transcript, self._sign(signed)
