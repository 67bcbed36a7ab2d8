"""The distribution server's logic (KDC): authenticate clients, issue masked OTPs, verify.

Verification policy, the same for every caller (native protocol, CLI, RADIUS):

* exact syntax (ASCII digits of the account's length; hex for hash chains);
* server-issued OTPs (rsa-*, hotp, hashchain) are valid once, until their expiry
  (issued_at + ttl): ``UPDATE issued SET used_at = :now WHERE ... used_at IS NULL AND
  expires_at > :now`` decides atomically;
* HOTP also accepts an authenticator app's OTP within the look-ahead window from the stored
  counter (the counter then moves past it: no reuse); TOTP accepts the current step +-1
  and only steps after the last accepted one; hash chains follow the paper (H(x) == last,
  then x is stored) and need the issued row too;
* after ``lockout`` consecutive failures the account is locked (every OTP refused) until
  ``otpfast account unlock``; a success resets the count;
* every failure raises the same InvalidToken; every call writes one audit entry.
"""
import dataclasses
import time

from otpfast.errors import InvalidToken, Refused
from otpfast.store import ACCOUNT_ACTIVE, Store

from . import audit, credentials, masking, tokens
from .policy import SERVER_ISSUED


@dataclasses.dataclass(frozen=True, slots=True)
class ClientInfo:
    name: str
    account: str | None
    verifier: bool


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedOtp:
    nonce: bytes
    masked: bytes
    expires_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyItem:
    account: str
    otp: str
    source: str
    client: ClientInfo | None = None


def _client_label(client: ClientInfo | None) -> str:
    return "-" if client is None else client.name


class Distribution:
    def __init__(self, store: Store, *, clock=time.time):
        self.store = store
        self.clock = clock

    # -- clients ----------------------------------------------------------------------
    def authenticate(self, client_name: str, credential: bytes) -> ClientInfo:
        record = self.store.client(client_name) if isinstance(client_name, str) else None
        if not credentials.check(credential, None if record is None else record.credential_hash):
            with self.store.transaction() as tx:
                tx.audit(self.clock(), audit.AUTHENTICATE, "-", str(client_name)[:128], "-",
                         audit.REFUSED)
            raise Refused()
        return ClientInfo(record.name, record.account, record.verifier)

    # -- issuing ----------------------------------------------------------------------
    def request(self, client: ClientInfo, account: str) -> IssuedOtp:
        now = self.clock()
        record = self.store.client(client.name)
        try:
            if record is None or record.verifier or record.account != account:
                raise Refused()
            with self.store.transaction() as tx:
                acct = tx.account(account)
                if (acct is None or acct.state != ACCOUNT_ACTIVE or acct.type not in SERVER_ISSUED
                        or acct.locked):
                    raise Refused()
                otp, counter = tokens.issue(acct)
                if not tx.advance_counter(account, acct.counter, counter):
                    raise Refused()
                expires_at = now + acct.params["ttl"]
                tx.purge_issued(now)     # expired rows can never verify; keep the table small
                tx.issue(account, client.name, self.store.keys.otp_digest(account, otp), now,
                         expires_at)
                tx.audit(now, audit.REQUEST, account, client.name, "-", audit.ISSUED)
        except Refused:
            with self.store.transaction() as tx:
                tx.audit(now, audit.REQUEST, str(account)[:128], client.name, "-", audit.REFUSED)
            raise Refused() from None
        nonce, masked = masking.mask(record.mask_key, account, otp)
        return IssuedOtp(nonce, masked, expires_at)

    # -- verifying --------------------------------------------------------------------
    def verify(self, account: str, otp: str, *, source: str,
               client: ClientInfo | None = None) -> None:
        if not self.verify_many([VerifyItem(account, otp, source, client)])[0]:
            raise InvalidToken()

    def verify_many(self, items: list[VerifyItem]) -> list[bool]:
        """Verify a batch in ONE transaction (group commit: one fsync for all). Items are
        decided in order with the same rules as :meth:`verify`; of two copies of one OTP
        exactly one is accepted."""
        if not items:
            return []
        now = self.clock()
        results = []
        with self.store.transaction() as tx:
            for item in items:
                outcome = self._verify_one(tx, item, now)
                accepted = outcome == audit.ACCEPTED
                results.append(accepted)
                tx.audit(now, audit.VERIFY, str(item.account)[:128],
                         _client_label(item.client), str(item.source)[:64], outcome)
        return results

    def _verify_one(self, tx, item: VerifyItem, now: float) -> str:
        if not isinstance(item.account, str):
            return audit.NO_ACCOUNT
        if item.client is not None and not item.client.verifier:
            return audit.NOT_AUTHORISED
        acct = tx.account(item.account)
        if acct is None:
            return audit.NO_ACCOUNT
        if acct.state != ACCOUNT_ACTIVE:
            return audit.PENDING
        if acct.locked:
            return audit.LOCKED
        if tokens.well_formed(acct, item.otp) and self._match(tx, acct, item.otp, now):
            if acct.failures and not tx.clear_failures(acct.name):
                raise RuntimeError("account state changed inside a transaction")
            return audit.ACCEPTED
        tx.record_failure(acct.name)
        return audit.NO_MATCH if tokens.well_formed(acct, item.otp) else audit.BAD_FORMAT

    def _match(self, tx, acct, otp: str, now: float) -> bool:
        name = acct.name
        if acct.type == "totp":
            try:
                step = tokens.totp_token(acct).verify(
                    otp, at=now, window=1,
                    after_step=acct.last_step if acct.last_step >= 0 else None)
            except InvalidToken:
                return False
            return tx.advance_step(name, acct.last_step, step)
        if acct.type == "hashchain":
            otp = otp.lower()
            if not tokens.chain_match(acct, otp):
                return False
            if not tx.use_issued(name, self.store.keys.otp_digest(name, otp), now):
                return False
            if not tx.advance_chain(name, acct.chain_last, bytes.fromhex(otp)):
                raise RuntimeError("account state changed inside a transaction")
            return True
        if tx.use_issued(name, self.store.keys.otp_digest(name, otp), now):
            return True
        if acct.type == "hotp":
            try:
                matched = tokens.hotp_token(acct).verify(otp, acct.counter,
                                                         window=acct.params["window"])
            except InvalidToken:
                return False
            return tx.advance_counter(name, acct.counter, matched + 1)
        return False
