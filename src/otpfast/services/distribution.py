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
import collections
import dataclasses
import threading
import time

from otpfast.errors import InvalidToken, Refused
from otpfast.store import ACCOUNT_ACTIVE, AccountRecord, Store

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


TOKEN_CACHE_SIZE = 4096


class _TokenCache:
    """HOTP/TOTP scheme objects (they hold the key: memory only) of recently verified
    accounts, keyed by everything they are built from, so a changed key or setting is a
    miss. Oldest out first."""

    def __init__(self, size: int = TOKEN_CACHE_SIZE):
        self._size = size
        self._tokens: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, acct, make):
        params = acct.params
        cache_key = (acct.name, acct.type, acct.material["key"], params["digits"],
                     params["algorithm"], params.get("period"))
        token = self._tokens.get(cache_key)
        if token is None:
            token = make(acct)
            with self._lock:
                self._tokens[cache_key] = token
                while len(self._tokens) > self._size:
                    self._tokens.popitem(last=False)
        return token


class Distribution:
    def __init__(self, store: Store, *, clock=time.time):
        self.store = store
        self.clock = clock
        self._tokens = _TokenCache()

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
        with self.store.transaction() as tx:
            batch = _VerifyBatch(tx, self.store.keys, self._tokens, items, now)
            results = []
            for item in items:
                outcome = batch.verify(item)
                results.append(outcome == audit.ACCEPTED)
                tx.audit(now, audit.VERIFY, str(item.account)[:128],
                         _client_label(item.client), str(item.source)[:64], outcome)
            batch.finish()
        return results


class _VerifyBatch:
    """One verify_many transaction. Reads are done once for the whole batch, under the
    store's write lock (so they stay current until COMMIT): the batch's accounts in one
    query, the unused issued OTPs it names in another. Items are then decided in order on
    in-memory copies that follow every decision, so later items see earlier ones (a
    duplicate OTP, a moved counter or step, a failure count reaching the lockout). Before
    COMMIT the changes are written as conditional updates whose row counts are checked:
    each changed account is compared-and-set from the state read at the start
    (Transaction.update_accounts), each issued OTP taken is marked used only if still
    unused (Transaction.use_issued_ids). Any shortfall raises, and the whole transaction
    rolls back - nothing accepted, nothing audited; the write lock makes that impossible
    short of someone writing behind otpfast's back."""

    def __init__(self, tx, keys, token_cache: _TokenCache, items: list[VerifyItem], now: float):
        self.tx = tx
        self.now = now
        self._token = token_cache.get
        self.accounts = tx.accounts(item.account for item in items
                                    if item.client is None or item.client.verifier)
        self.original = dict(self.accounts)
        self.digests: dict[tuple[str, str], bytes] = {}
        for item in items:
            acct = self.accounts.get(item.account) if isinstance(item.account, str) else None
            if (acct is not None and acct.type in SERVER_ISSUED
                    and tokens.well_formed(acct, item.otp)):
                otp = item.otp.lower() if acct.type == "hashchain" else item.otp
                if (acct.name, otp) not in self.digests:
                    self.digests[acct.name, otp] = keys.otp_digest(acct.name, otp)
        self.unused = tx.find_issued([(name, digest) for (name, _), digest
                                      in self.digests.items()], now)
        self.taken: list[int] = []

    def finish(self) -> None:
        """Write the batch's decisions (inside the transaction, before COMMIT)."""
        changes = [(self.original[name], acct) for name, acct in self.accounts.items()
                   if acct is not self.original[name]]
        if changes and self.tx.update_accounts(changes) != len(changes):
            raise RuntimeError("account state changed inside a transaction")
        if self.taken and self.tx.use_issued_ids(self.taken, self.now) != len(self.taken):
            raise RuntimeError("issued OTPs changed inside a transaction")

    def _set(self, acct, *, counter=None, last_step=None, chain_last=None, failures=None):
        """Change the batch's copy of ``acct`` (written by finish)."""
        self.accounts[acct.name] = AccountRecord(
            name=acct.name, type=acct.type, params=acct.params, state=acct.state,
            material=acct.material, counter=acct.counter if counter is None else counter,
            last_step=acct.last_step if last_step is None else last_step,
            chain_last=acct.chain_last if chain_last is None else chain_last,
            failures=acct.failures if failures is None else failures,
            transcript=acct.transcript, created_at=acct.created_at)

    def verify(self, item: VerifyItem) -> str:
        if not isinstance(item.account, str):
            return audit.NO_ACCOUNT
        if item.client is not None and not item.client.verifier:
            return audit.NOT_AUTHORISED
        acct = self.accounts.get(item.account)
        if acct is None:
            return audit.NO_ACCOUNT
        if acct.state != ACCOUNT_ACTIVE:
            return audit.PENDING
        if acct.locked:
            return audit.LOCKED
        well_formed = tokens.well_formed(acct, item.otp)
        if well_formed and self._match(acct, item.otp):
            acct = self.accounts[acct.name]
            if acct.failures:
                self._set(acct, failures=0)
            return audit.ACCEPTED
        self._set(acct, failures=acct.failures + 1)     # not locked: below the lockout
        return audit.NO_MATCH if well_formed else audit.BAD_FORMAT

    def _take_issued(self, name: str, otp: str) -> bool:
        ids = self.unused.get((name, self.digests[name, otp]))
        if not ids:
            return False
        self.taken.append(ids.pop(0))
        return True

    def _match(self, acct, otp: str) -> bool:
        name = acct.name
        if acct.type == "totp":
            try:
                step = self._token(acct, tokens.totp_token).verify(
                    otp, at=self.now, window=1,
                    after_step=acct.last_step if acct.last_step >= 0 else None)
            except InvalidToken:
                return False
            self._set(acct, last_step=step)          # > last_step: after_step enforces it
            return True
        if acct.type == "hashchain":
            otp = otp.lower()
            if not tokens.chain_match(acct, otp) or not self._take_issued(name, otp):
                return False
            self._set(acct, chain_last=bytes.fromhex(otp))
            return True
        if self._take_issued(name, otp):
            return True
        if acct.type == "hotp":
            try:
                matched = self._token(acct, tokens.hotp_token).verify(
                    otp, acct.counter, window=acct.params["window"])
            except InvalidToken:
                return False
            self._set(acct, counter=matched + 1)
            return True
        return False
