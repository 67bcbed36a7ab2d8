"""The distribution server's logic (KDC): authenticate clients, issue masked OTPs, verify.

Verification policy, the same for every caller (native protocol, CLI, RADIUS):

* exact syntax (ASCII digits of the account's length; hex for hash chains), after the ASCII
  spaces of an OTP typed as apps show it ("123 456") are removed (services.otp_input);
* server-issued OTPs (rsa-*, hotp, hashchain) are valid once, until their expiry
  (issued_at + ttl): ``UPDATE issued SET used_at = :now WHERE ... used_at IS NULL AND
  expires_at > :now`` decides atomically;
* HOTP also accepts an authenticator app's OTP within the look-ahead window from the stored
  counter (the counter then moves past it: no reuse); TOTP accepts the current step +-1
  and only steps after the last accepted one; hash chains follow the paper (H(x) == last,
  then x is stored) and need the issued row too;
* failures count per account and leak away over time (a success does not reset them);
  reaching ``lockout`` locks the account (every OTP refused) for a while that doubles at
  each repeated lock, or for good under the permanent policy (services.policy);
* failures also count per source address and per client name (token buckets,
  services.throttle): over the limit a verification is refused before any account is read;
* an unknown account costs the same work as a known one (a decoy account of the default
  type is verified in its place), so timing does not tell which names exist;
* a user (account) may hold further tokens and a PIN (services.usertokens, services.pin):
  then every enabled token is checked with its full work, the first that matches is the one
  accepted (its serial in the audit outcome), and with a PIN only PIN + OTP in one field
  passes (a wrong PIN is refused as a wrong OTP, with the same work);
* every failure raises the same InvalidToken; every verification writes one audit entry
  in its batch's transaction; refusals before that point are queued (note_refusal,
  services.refusals) and written with the next batch or flush, floods aggregated.
"""
import collections
import dataclasses
import hmac
import secrets
import threading
import time

from otpfast.errors import InvalidParameter, InvalidToken, Refused, StoreBusy
from otpfast.store import ACCOUNT_ACTIVE, AccountRecord, Store

from . import audit, credentials, masking, otp_input, pin as pins, policy, tokens
from .policy import SERVER_ISSUED
from .refusals import RefusalLog
from .throttle import RateLimiter


@dataclasses.dataclass(frozen=True, slots=True)
class ClientInfo:
    name: str
    account: str | None
    verifier: bool
    # this connection's key (masks issued OTPs); memory only
    session_key: bytes | None = dataclasses.field(default=None, repr=False, compare=False)
    source: str = dataclasses.field(default="-", compare=False)    # the peer address (audit)
    # the credential it proved: a request after `client rotate` or `client delete` is refused
    credential_hash: bytes | None = dataclasses.field(default=None, repr=False, compare=False)
    admin: bool = False             # may call the admin API


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedOtp:
    nonce: bytes
    masked: bytes
    expires_at: float
    expires_at_ms: int          # what the mask's tag covers (and the wire carries)


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyItem:
    account: str
    otp: str
    source: str
    client: ClientInfo | None = None
    # the client's id of this request: a retry of the same id (after a timeout or "try
    # again") gets the outcome the first one got, never a second decision
    request_id: str | None = None


TOKEN_CACHE_SIZE = 4096
REQUEST_ID_TTL = 86400          # seconds a request id's outcome is kept for its retries
MIN_TTL, MAX_TTL = 1, 86400     # seconds; the paper uses 120..900
# The decoy verified in place of an unknown account: HOTP with the default settings (the
# widest look-ahead of the default settings, so the most HMACs), as any new account has.
DECOY_TYPE = "hotp"             # (_VerifyBatch builds its matcher: tokens.HotpMatcher)
_DECOY_NAME = " decoy"          # no real account can have it (names never start with a space)


class _TokenCache:
    """The verifiers of recently verified accounts (tokens.HotpMatcher for hotp, TOTP for
    totp; they hold the key: memory only), keyed by everything they are built from, so a
    changed key or setting is a miss. Oldest out first."""

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
    def __init__(self, store: Store, *, clock=time.time, ttl: float | None = None,
                 require_pin: bool = False):
        """``ttl``: the server's validity of issued OTPs in seconds; None: each account's own
        ttl setting. ``require_pin``: refuse users without a PIN (services.pin)."""
        if ttl is not None and not (isinstance(ttl, (int, float)) and MIN_TTL <= ttl <= MAX_TTL):
            raise InvalidParameter("ttl", f"must be {MIN_TTL}..{MAX_TTL} seconds")
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self.require_pin = bool(require_pin)
        self._tokens = _TokenCache()
        self._failed_sources = RateLimiter(policy.FAILED_PER_SOURCE, clock=clock)
        self._failed_clients = RateLimiter(policy.FAILED_PER_CLIENT, clock=clock)
        self._refusals = RefusalLog()
        self.refusal_counts = collections.Counter()   # (event, outcome) -> refusals (metrics)
        self._decoy = _decoy_account(clock())

    def set_failure_limits(self, per_source, per_client) -> None:
        """New failure throttles (services.throttle.Rate) while serving (SIGHUP); the
        buckets keep the tokens they have."""
        self._failed_sources.limit = per_source
        self._failed_clients.limit = per_client

    # -- clients ----------------------------------------------------------------------
    def authenticate(self, exchange: credentials.Exchange, proof: bytes, *,
                     source: str = "-") -> ClientInfo:
        """Check a client's proof (services.credentials); the ClientInfo carries the session
        key that masks this connection's OTPs. Refused: one generic Refused, same cost."""
        name = exchange.principal
        if self.throttled(str(source)[:64], str(name)[:128]):
            # out of failures: refused before any work (this says nothing about the name)
            self.note_refusal(self.clock(), audit.AUTHENTICATE, "-", str(name)[:128],
                              str(source)[:64], audit.THROTTLED)
            raise Refused()
        record = self.store.client(name) if exchange.kind == credentials.CLIENT else None
        session_key = credentials.check_proof(
            proof, None if record is None else record.credential_hash, exchange)
        if session_key is None:
            self.note_refusal(self.clock(), audit.AUTHENTICATE, "-", str(name)[:128],
                              str(source)[:64],
                              audit.UNKNOWN_PRINCIPAL if record is None else audit.BAD_PROOF)
            raise Refused()
        return ClientInfo(record.name, record.account, record.verifier, session_key,
                          str(source)[:64], record.credential_hash, record.admin)

    def login(self, client_name: str, credential: bytes | str, *,
              source: str = "local") -> ClientInfo:
        """In-process authentication (the credential reached this process another way, e.g.
        an HTTP bearer token; ``source``: the peer, throttled and audited as in
        :meth:`authenticate`); the session key is fresh and random."""
        exchange = credentials.Exchange(credentials.CLIENT, client_name, credentials.new_nonce(),
                                        credentials.new_nonce(), b"in-process")
        proof, _ = credentials.prove(credential, exchange)
        return self.authenticate(exchange, proof, source=source)

    # -- issuing ----------------------------------------------------------------------
    def request(self, client: ClientInfo, account: str) -> IssuedOtp:
        now = self.clock()
        record = self.store.client(client.name)
        reason = audit.REFUSED      # the audit entry's outcome; the reply stays generic
        try:
            if (record is None or record.verifier or record.account != account
                    or client.session_key is None):
                reason = audit.REQUEST_NOT_AUTHORISED
                raise Refused()
            if (client.credential_hash is not None      # None: built in-process, not by login
                    and record.credential_hash != client.credential_hash):
                reason = audit.REVOKED
                raise Refused()
            with self.store.transaction() as tx:
                acct = tx.account(account)
                reason = _request_refusal(acct)
                if reason is not None:
                    raise Refused()
                if acct.params.get("tokens") and not any(   # the main token disabled
                        token.main and token.enabled
                        for token in tx.tokens_of([account]).get(account, ())):
                    reason = audit.REQUEST_DISABLED
                    raise Refused()
                reason = audit.REFUSED
                otp, counter = tokens.issue(acct)
                if not tx.advance_counter(account, acct.counter, counter):
                    raise Refused()
                expires_at = now + (self.ttl if self.ttl is not None else acct.params["ttl"])
                tx.purge_issued(now)     # expired rows can never verify; keep the table small
                tx.issue(account, client.name, self.store.keys.otp_digest(account, otp), now,
                         expires_at)
                tx.audit(now, audit.REQUEST, account, client.name, client.source, audit.ISSUED)
        except Refused:
            self.note_refusal(now, audit.REQUEST, str(account)[:128], client.name, client.source,
                              reason)
            raise Refused() from None
        expires_at_ms = max(0, int(expires_at * 1000))
        nonce, masked = masking.mask(client.session_key, account, otp, expires_at_ms)
        return IssuedOtp(nonce, masked, expires_at, expires_at_ms)

    # -- verifying --------------------------------------------------------------------
    def verify(self, account: str, otp: str, *, source: str,
               client: ClientInfo | None = None) -> None:
        if not self.verify_many([VerifyItem(account, otp, source, client)])[0]:
            raise InvalidToken()

    def verify_many(self, items: list[VerifyItem], *, wait: bool = True,
                    durable: bool = True) -> list[bool]:
        """Verify a batch in ONE transaction (group commit: one fsync for all). Items are
        decided in order with the same rules as :meth:`verify`; of two copies of one OTP
        exactly one is accepted. ``wait=False``: raise StoreBusy (nothing decided) while
        another writer holds the store. ``durable=False``: return before the decisions are
        on disk; tell nobody of them before ``store.sync()`` returns. The queued refusal
        entries are written in the same transaction."""
        if not items:
            return []
        items = otp_input.normalise_items(items)      # "123 456" as apps show it
        now = self.clock()
        # a source or client out of failures: refused before its accounts are even read
        # (asked once per distinct pair: a relay's batch comes from one source and client)
        throttled, known = self.throttled, {}
        blocked_ids = set()
        for item in items:
            pair = (item.source, None if item.client is None else item.client.name)
            out = known.get(pair)
            if out is None:
                out = known[pair] = throttled(*pair)
            if out:
                self._refuse_throttled(now, item)
                blocked_ids.add(id(item))
        asked = items
        if blocked_ids:
            items = [item for item in items if id(item) not in blocked_ids]
            if not items:       # no transaction at all: the refusals wait for the next one
                return [False] * len(asked)
        refusals = self._refusals.take(now)
        charged: list = []      # the failures this batch counted: given back if it rolls back
        try:
            with self.store.transaction(wait=wait, durable=durable) as tx:
                # a session whose client credential was rotated or deleted since: refused
                # (its refusal entry queued, written with the next transaction)
                revoked = _revoked(tx, items)
                if revoked:
                    for item in revoked:
                        self._refuse_throttled(now, item, audit.REVOKED)
                        blocked_ids.add(id(item))
                    items = [item for item in items if id(item) not in blocked_ids]
                repeated, items = _repeated_requests(tx, items)
                batch = _VerifyBatch(tx, self.store.keys, self._tokens, items, now, self._decoy,
                                     self.require_pin)
                decided = batch.run(self, refusals, charged)
                batch.finish()
                if repeated is not None:
                    decided = _record_requests(tx, items, decided, repeated, now)
                    items = repeated[0]
        except BaseException:
            self._refusals.put_back(refusals)
            for source, client_name in charged:     # decided again if retried: counted once
                self._refund_failure(source, client_name)
            raise
        if not blocked_ids:
            return decided
        decided_iter = iter(decided)
        return [False if id(item) in blocked_ids else next(decided_iter) for item in asked]

    # -- health -----------------------------------------------------------------------
    HEALTHY, UNREACHABLE, LOCK_BUSY = None, "store_unreachable", "write_lock_busy"

    def check_health(self) -> str | None:
        """None if the store answers and its write lock can be taken right now (an empty
        transaction: SQLite's BEGIN IMMEDIATE, PostgreSQL's row lock, both without waiting);
        else a reason code: ``store_unreachable``, or ``write_lock_busy`` (another writer
        holds it: the caller may ask again shortly). Never waits for the lock."""
        try:
            self.store.schema_version()
        except Exception:  # noqa: BLE001 - whatever the driver raises, the store is not usable
            return self.UNREACHABLE
        try:
            with self.store.transaction(wait=False, durable=False):
                pass
        except StoreBusy:
            return self.LOCK_BUSY
        except Exception:  # noqa: BLE001
            return self.UNREACHABLE
        return self.HEALTHY

    # -- throttling and refusals ------------------------------------------------------
    def throttled(self, source, client_name: str | None = None) -> bool:
        """True while ``source`` or ``client_name`` has used up its failures (see
        policy.FAILED_PER_SOURCE): refuse at once, touching no account."""
        return self._failed_sources.blocked(source) or (
            client_name is not None and self._failed_clients.blocked(client_name))

    def throttled_counts(self) -> tuple[int, int]:
        """How many sources and clients are throttled now (a scan: for metrics, not per
        request)."""
        return self._failed_sources.count_blocked(), self._failed_clients.count_blocked()

    def _refuse_throttled(self, now: float, item: VerifyItem, outcome=audit.THROTTLED) -> None:
        self.refusal_counts[audit.VERIFY, outcome] += 1
        self._refusals.add(now, audit.VERIFY, str(item.account)[:128],
                           "-" if item.client is None else item.client.name,
                           str(item.source)[:64], outcome)

    def _count_failure(self, source, client_name: str | None) -> None:
        self._failed_sources.charge(source)
        if client_name is not None and client_name != "-":
            self._failed_clients.charge(client_name)

    def _refund_failure(self, source, client_name: str | None) -> None:
        """Undo _count_failure for a decision its transaction rolled back."""
        self._failed_sources.refund(source)
        if client_name is not None and client_name != "-":
            self._failed_clients.refund(client_name)

    def refusals_pending(self) -> bool:
        return self._refusals.pending()

    def flush_refusals(self, *, wait: bool = True, durable: bool = True,
                       everything: bool = False) -> int:
        """Write the queued refusal entries that are due (one transaction); returns how
        many. The network glue calls it when idle, and with ``everything`` (flood windows
        still open included) when it stops; ``wait``/``durable`` as verify_many."""
        refusals = self._refusals.take(self.clock(), everything=everything)
        if not refusals:
            return 0
        try:
            with self.store.transaction(wait=wait, durable=durable) as tx:
                tx.audit_many(refusals)
        except BaseException:
            self._refusals.put_back(refusals)
            raise
        return len(refusals)

    def note_refusal(self, now: float, event: str, account: str, client: str, source: str,
                     outcome: str) -> None:
        """A refusal outside a verification batch (failed authentication, refused request):
        it counts against ``source`` and ``client`` (see :meth:`throttled`) and its audit
        entry is queued, not committed: it is written with the next verification batch or
        :meth:`flush_refusals`, floods aggregated (services.refusals)."""
        source, client = str(source)[:64], str(client)[:128]
        self.refusal_counts[event, outcome] += 1
        self._count_failure(source, client)
        self._refusals.add(now, event, str(account)[:128], client, source, outcome)


def _revoked(tx, items) -> list:
    """The items of sessions whose client credential was rotated or deleted after they
    authenticated (the batch's clients read in ``tx``, once each)."""
    sessions = [item for item in items
                if item.client is not None and item.client.credential_hash is not None]
    if not sessions:
        return []
    current = tx.clients(item.client.name for item in sessions)
    return [item for item in sessions if (record := current.get(item.client.name)) is None
            or record.credential_hash != item.client.credential_hash]


def _request_key(item: VerifyItem):
    if item.request_id is None or item.client is None:
        return None
    return (item.client.name, str(item.request_id)[:128])


def _repeated_requests(tx, items):
    """(None, items) when no item carries a request id. Else ((every item, outcomes
    recorded before, index of each item's first copy in the batch), the items to decide):
    an item whose (client, request id) has an outcome, or repeats an earlier item of the
    batch, is not decided again."""
    if not any(item.request_id is not None for item in items):
        return None, items
    keys = [_request_key(item) for item in items]
    known = tx.request_outcomes([key for key in keys if key is not None])
    first: dict = {}
    to_decide = []
    for index, (item, key) in enumerate(zip(items, keys)):
        if key is None or (key not in known and key not in first):
            if key is not None:
                first[key] = index
            to_decide.append(item)
    return (items, known, first), to_decide


def _record_requests(tx, decided_items, decided, repeated, now) -> list[bool]:
    """The results of every item (the repeated ones from their first decision); the new
    outcomes recorded in the same transaction."""
    items, known, first = repeated
    result_of = {id(item): ok for item, ok in zip(decided_items, decided)}
    tx.purge_requests(now - REQUEST_ID_TTL)
    tx.record_outcomes([(_request_key(items[index]), result_of[id(items[index])])
                        for index in first.values()], now)
    out = []
    for item in items:
        key = _request_key(item)
        if key is not None and key in known:
            out.append(known[key])
        elif key is not None:
            out.append(result_of[id(items[first[key]])])
        else:
            out.append(result_of[id(item)])
    return out


def _request_refusal(acct: AccountRecord | None) -> str | None:
    """Why ``acct`` cannot issue an OTP now (an audit outcome), or None."""
    if acct is None:
        return audit.REQUEST_NO_ACCOUNT
    if acct.state != ACCOUNT_ACTIVE:
        return audit.REQUEST_PENDING
    if acct.type not in SERVER_ISSUED:
        return audit.REQUEST_NOT_ISSUED
    if acct.locked:
        return audit.REQUEST_LOCKED
    if tokens.uses_left(acct) == 0:
        return audit.REQUEST_EXHAUSTED
    return None


def _decoy_account(now: float) -> AccountRecord:
    """The account verified in place of an unknown one: a random key nobody knows."""
    params = policy.account_params(DECOY_TYPE)
    material, chain_last, counter = tokens.derive_material(DECOY_TYPE, params,
                                                           secrets.token_bytes(32))
    return AccountRecord(name=_DECOY_NAME, type=DECOY_TYPE, params=params, state=ACCOUNT_ACTIVE,
                         material=material, counter=counter, last_step=-1,
                         chain_last=chain_last, failures=0, transcript=None, created_at=now)


class _Live:
    """The batch's current verification state of one account (its record as read at the
    start, plus the fields the batch's decisions move)."""

    __slots__ = ("record", "counter", "last_step", "chain_last", "failures", "failed_at",
                 "locked_until", "locks", "lockout", "permanent", "token", "moved", "user")

    def __init__(self, record: AccountRecord):
        self.record = record
        self.counter = record.counter
        self.last_step = record.last_step
        self.chain_last = record.chain_last
        self.failures = record.failures
        self.failed_at = record.failed_at
        self.locked_until = record.locked_until
        self.locks = record.locks
        self.lockout = record.lockout
        self.permanent = record.params.get("lockout_policy") == "permanent"
        self.token = None
        self.moved = False      # a decision set a field (even back to its start value)
        self.user = None        # _User: its tokens and PIN, for a user whose params say so


class _User:
    """What verification needs of a user with tokens beyond the plain account (further
    tokens, a disabled main token, a PIN): read once per batch."""

    __slots__ = ("main_serial", "main_on", "pin", "extras")

    def __init__(self, keys, record: AccountRecord, token_records, make_token):
        main = [token for token in token_records if token.main]
        self.main_serial = main[0].serial if main else "-"
        self.main_on = bool(main) and main[0].enabled   # no authentic row: off (fail closed)
        pin = record.params.get("pin")
        self.pin = None if pin is None else pins.PinCheck(keys, record.name, pin)
        self.extras = [_LiveToken(keys, token, make_token) for token in token_records
                       if not token.main and token.enabled]


class _LiveToken:
    """A further token's state in the batch (as _Live for an account)."""

    __slots__ = ("record", "serial", "counter", "last_step", "moved", "_keys", "_matcher",
                 "length")

    def __init__(self, keys, record, make_token):
        self.record, self.serial = record, record.serial
        self.counter, self.last_step = record.counter, record.last_step
        self.moved = False
        self._keys = keys
        kind = record.type
        self._matcher = (make_token(record, tokens.HotpMatcher) if kind == "hotp"
                         else make_token(record, tokens.totp_token) if kind == "totp" else None)
        self.length = pins.RECOVERY_CHARS if kind == "recovery" else record.params["digits"]

    def split(self, field: str) -> tuple[str, str]:
        """(PIN, OTP) of a PIN + OTP field for this token's OTP length."""
        if self.record.type == "recovery":
            return pins.split_recovery(field)
        return field[:-self.length], field[-self.length:]

    def check(self, otp: str, now: float):
        """The (counter, last_step) after accepting ``otp``, or None. The full work of this
        token's check whatever ``otp`` is."""
        record = self.record
        kind = record.type
        if kind == "recovery":
            code = pins.normalise_code(otp)
            digest = pins.recovery_hash(self._keys, self.serial, code or "")
            found = None
            for index, stored in enumerate(record.material["hashes"]):
                if hmac.compare_digest(bytes.fromhex(stored), digest) and code is not None \
                        and not self.counter >> index & 1 and found is None:
                    found = index
            return None if found is None else (self.counter | 1 << found, self.last_step)
        if len(otp) != self.length or not set(otp) <= _DIGITS:
            return None
        params = record.params
        if kind == "hotp":
            matched = self._matcher.match(otp, self.counter, params["window"])
            return None if matched is None else (matched + 1, self.last_step)
        try:
            step = self._matcher.verify(
                otp, at=now + params.get("drift", 0) * params["period"], window=1,
                after_step=self.last_step if self.last_step >= 0 else None)
        except InvalidToken:
            return None
        return self.counter, step


_HEX = frozenset("0123456789abcdef")
_DIGITS = frozenset("0123456789")
_ACCEPTED_BY = audit.ACCEPTED + ":"     # + the serial, for a user with several tokens


def _main_length(record: AccountRecord) -> int:
    params = record.params
    return params["hex_length"] if record.type == "hashchain" else params["digits"]


class _VerifyBatch:
    """One verify_many transaction. Reads are done once for the whole batch, under the
    store's write lock (so they stay current until COMMIT): the batch's accounts in one
    query, the unused issued OTPs it names in another. Items are then decided in order on
    in-memory state (_Live) that follows every decision, so later items see earlier ones (a
    duplicate OTP, a moved counter or step, a failure count reaching the lockout). Before
    COMMIT the changes are written as conditional updates whose row counts are checked:
    each changed account is compared-and-set from the state read at the start
    (Transaction.update_accounts, one statement), each issued OTP taken is marked used only
    if still unused (Transaction.use_issued_ids). Any shortfall raises, and the whole
    transaction rolls back - nothing accepted, nothing audited; the write lock makes that
    impossible short of someone writing behind otpfast's back. The audit entries (one per
    item) are handed over in one call.

    An item naming an unknown account is decided on a decoy (_Live of the decoy account
    under the unknown name): the same format check, issued-OTP lookup, HMACs and failure
    update (a compare-and-set that matches no row) as a wrong OTP for a real account."""

    def __init__(self, tx, keys, token_cache: _TokenCache, items: list[VerifyItem], now: float,
                 decoy: AccountRecord, require_pin: bool = False):
        self.tx = tx
        self.now = now
        self.items = items
        self.require_pin = require_pin
        self._token = token_cache.get
        records = tx.accounts(item.account for item in items
                              if item.client is None or item.client.verifier)
        self.live = {name: _Live(record) for name, record in records.items()}
        # users with further tokens, a disabled main token or a PIN: their tokens, one query
        users = [name for name, record in records.items() if record.params.get("tokens")]
        self.further: list[_LiveToken] = []
        if users:
            found = tx.tokens_of(users)
            for name in users:
                live = self.live[name]
                live.user = _User(keys, live.record, found.get(name, ()), self._token)
                self.further.extend(live.user.extras)
        self.decoys: list[_Live] = []
        # per item: (its account's _Live or None, well formed, issued-OTP lookup key or None)
        self.checked: list[tuple] = []
        wanted: dict[tuple[str, str], tuple[str, bytes]] = {}
        otp_digest = keys.otp_digest
        live_of = self.live.get
        for item in items:
            account, otp, client = item.account, item.otp, item.client
            if not isinstance(account, str) or (client is not None and not client.verifier):
                self.checked.append((None, False, None))
                continue
            live = live_of(account)
            if live is None:        # the decoy's matcher: from the cache, as for any account
                live = _Live(decoy)     # its name can match no row: its update changes nothing
                live.token = self._token(decoy, tokens.HotpMatcher)
                self.decoys.append(live)
            record = live.record
            kind = record.type
            if live.user is not None and live.user.pin is not None and isinstance(otp, str):
                otp = otp[-_main_length(record):]       # PIN + OTP: the main token's part
            if not isinstance(otp, str):
                well_formed = False
            elif kind == "hashchain":       # tokens.well_formed, inlined
                well_formed = len(otp) == record.params["hex_length"]
                otp = otp.lower()
                well_formed = well_formed and set(otp) <= _HEX
            else:
                well_formed = len(otp) == record.params["digits"] and set(otp) <= _DIGITS
            lookup = None
            if well_formed and kind in SERVER_ISSUED and record.state == ACCOUNT_ACTIVE:
                lookup = wanted.get((account, otp))
                if lookup is None:
                    lookup = wanted[account, otp] = (account, otp_digest(account, otp))
            self.checked.append((live, well_formed, lookup))
        self.unused = tx.find_issued(list(wanted.values()), now)
        self.taken: list[int] = []
        self._decoy = decoy
        self._decoy_material = decoy.material

    def run(self, distribution: Distribution, refusals=(), charged=None) -> list[bool]:
        """Decide every item in order; queue one audit entry each (after ``refusals``,
        entries queued earlier); True = accepted. Each failure counts against its source
        and client at once, so a later item of the batch from a source that has run out is
        refused without a decision (its entry goes to the refusal log); ``charged`` gets
        (source, client) of each."""
        now, accepted = self.now, audit.ACCEPTED
        count_failure = distribution._count_failure
        source_blocked = distribution._failed_sources.blocked
        client_blocked = distribution._failed_clients.blocked
        # sources and clients that ran out in this batch (the others were asked before it)
        out_sources, out_clients = set(), set()
        results, entries = [], list(refusals)
        for item, (live, well_formed, lookup) in zip(self.items, self.checked):
            client = item.client
            client_name = None if client is None else client.name
            if (out_sources or out_clients) and (item.source in out_sources
                                                 or client_name in out_clients):
                distribution._refuse_throttled(now, item)
                results.append(False)
                continue
            outcome = self._decide(item, live, well_formed, lookup)
            ok = outcome == accepted or outcome.startswith(_ACCEPTED_BY)
            results.append(ok)
            entries.append((now, audit.VERIFY, str(item.account)[:128],
                            "-" if client is None else client_name, str(item.source)[:64],
                            outcome))
            if not ok:
                count_failure(item.source, client_name)
                if charged is not None:
                    charged.append((item.source, client_name))
                if source_blocked(item.source):
                    out_sources.add(item.source)
                if client_name is not None and client_blocked(client_name):
                    out_clients.add(client_name)
        if entries:
            self.tx.audit_many(entries)
        return results

    def finish(self) -> None:
        """Write the batch's decisions (inside the transaction, before COMMIT); the decoys'
        updates name no existing row, so they change nothing."""
        changes = [(live.record, live) for live in self.live.values() if live.moved]
        expected = len(changes)
        changes += [(live.record, live) for live in self.decoys if live.moved]
        if changes and self.tx.update_accounts(changes) != expected:
            raise RuntimeError("account state changed inside a transaction")
        moved = [(token.record, token) for token in self.further if token.moved]
        if moved and self.tx.update_tokens(moved) != len(moved):
            raise RuntimeError("token state changed inside a transaction")
        if self.taken and self.tx.use_issued_ids(self.taken, self.now) != len(self.taken):
            raise RuntimeError("issued OTPs changed inside a transaction")

    def _decide(self, item: VerifyItem, live: _Live | None, well_formed: bool, lookup) -> str:
        if live is None:
            if (isinstance(item.account, str) and item.client is not None
                    and not item.client.verifier):
                return audit.NOT_AUTHORISED
            return audit.NO_ACCOUNT
        if live.record.state != ACCOUNT_ACTIVE:
            return audit.PENDING
        if self.now < live.locked_until:
            # the work of a wrong OTP (HMACs on the decoy, the account row written back as
            # it is): a lock must not tell in its timing that the account exists
            if well_formed:
                self._token(self._decoy, tokens.HotpMatcher).match(
                    item.otp, 0, self._decoy.params["window"])
            live.moved = True
            return audit.LOCKED
        user = live.user
        if user is not None:
            serial = self._match_user(live, user, item.otp, well_formed, lookup)
            if serial is not None:
                return _ACCEPTED_BY + serial
            well_formed = True      # which token's format: not told
        elif self.require_pin:      # refused; the work of a wrong OTP all the same
            if well_formed:
                self._token(self._decoy, tokens.HotpMatcher).match(
                    item.otp, 0, self._decoy.params["window"])
        elif well_formed and self._match(live, item.otp, lookup):
            if live.record.material is self._decoy_material:
                return audit.NO_ACCOUNT
            return audit.ACCEPTED
        (live.failures, live.failed_at, live.locked_until, live.locks) = policy.after_failure(
            live.failures, live.failed_at, live.locked_until, live.locks, live.lockout,
            live.permanent, self.now)
        live.moved = True
        if live.record.material is self._decoy_material:
            return audit.NO_ACCOUNT
        if self.require_pin and (user is None or user.pin is None):
            return audit.PIN_REQUIRED
        if not well_formed:
            return audit.BAD_FORMAT
        return audit.EXHAUSTED if tokens.uses_left(live.record) == 0 else audit.NO_MATCH

    def _match_user(self, live: _Live, user: _User, field, well_formed: bool, lookup):
        """The serial of the one token that accepts ``field`` (PIN + OTP for a user with a
        PIN), or None. Every enabled token is checked (and the PIN for each token's split)
        whatever the others gave: the work does not tell which part was wrong. Only the
        first token that matched moves its state."""
        if not isinstance(field, str):
            field = ""
        pin = user.pin
        refuse_all = pin is None and self.require_pin
        matched = None
        if user.main_on:
            length = _main_length(live.record)
            pin_ok = True if pin is None else pin.check(field[:-length])
            otp = field if pin is None else field[-length:]
            saved = (live.counter, live.last_step, live.chain_last, live.moved, len(self.taken))
            if well_formed and self._match(live, otp, lookup):
                if pin_ok and not refuse_all:
                    matched = user.main_serial
                else:       # the state moves only when the whole field is right
                    (live.counter, live.last_step, live.chain_last, live.moved) = saved[:4]
                    while len(self.taken) > saved[4]:
                        self.unused.setdefault(lookup, []).insert(0, self.taken.pop())
        elif well_formed:       # a disabled main token: the work of a wrong OTP all the same
            length = _main_length(live.record)
            if pin is not None:
                pin.check(field[:-length])
            self._token(self._decoy, tokens.HotpMatcher).match(
                field[-length:], 0, self._decoy.params["window"])
        now = self.now
        for token in user.extras:
            if pin is None:
                pin_ok, otp = True, field
            else:
                pin_text, otp = token.split(field)
                pin_ok = pin.check(pin_text)
            new = token.check(otp, now)
            if new is not None and pin_ok and matched is None and not refuse_all:
                token.counter, token.last_step = new
                token.moved = True
                matched = token.serial
        return matched

    def _take_issued(self, lookup) -> bool:
        ids = self.unused.get(lookup)
        if not ids:
            return False
        self.taken.append(ids.pop(0))
        return True

    def _match(self, live: _Live, otp: str, lookup) -> bool:
        record = live.record
        kind = record.type
        if kind == "totp":
            if live.token is None:
                live.token = self._token(record, tokens.totp_token)
            drift = record.params.get("drift")      # steps (token resync)
            at = self.now if drift is None else self.now + drift * record.params["period"]
            try:
                live.last_step = live.token.verify(   # > last_step: after_step enforces it
                    otp, at=at, window=1,
                    after_step=live.last_step if live.last_step >= 0 else None)
            except InvalidToken:
                return False
            live.moved = True
            return True
        if kind == "hashchain":
            otp = otp.lower()
            current = dataclasses.replace(record, chain_last=live.chain_last)
            if not tokens.chain_match(current, otp) or not self._take_issued(lookup):
                return False
            live.chain_last = bytes.fromhex(otp)
            live.moved = True
            return True
        if self._take_issued(lookup):
            return True
        if kind == "hotp":
            if live.token is None:
                live.token = self._token(record, tokens.HotpMatcher)
            matched = live.token.match(otp, live.counter, record.params["window"])
            if matched is None:
                return False
            live.counter = matched + 1
            live.moved = True
            return True
        return False
