"""The store interface. Callers (otpfast.services) see only this module.

Rules every backend keeps, so a PostgreSQL backend can follow without changing callers:

* Every state change happens inside ``with store.transaction() as tx:``; the block is one
  database transaction (commit on normal exit, rollback on exception). A backend opens it
  in a mode that takes its audit chain's lock at once, before any read: SQLite ``BEGIN
  IMMEDIATE`` (one writer at a time); PostgreSQL locks the head row of the chain it appends
  to (one per node process: otpfast.store.postgres) and :meth:`Transaction.accounts` locks
  the accounts it returns, so a verification batch's reads stay current until COMMIT.
* Each state change is a single conditional statement whose result says whether it
  happened (``UPDATE ... WHERE counter = :old`` -> True/False). Callers never write a value
  they computed from an earlier read unless the write is conditional on that read.
* ``now`` is always passed in by the caller (injected clock); the store never reads time.
* Rows that decide access or replay (clients, authorities, accounts, issued OTPs) carry a
  MAC under a key derived from the at-rest key and the version (audit seq) of their last
  write (otpfast.store.rows). A row that fails is refused - reads return None / leave it
  out, writes to it return False - and ``verify_audit`` lists it.
"""
import abc
import contextlib
import dataclasses
from typing import Iterator

ACCOUNT_PENDING = "pending"   # waiting for its key ceremony
ACCOUNT_ACTIVE = "active"
# locked_until of a hard lock (only ``account unlock`` lifts it): 2**53 s, past any clock
LOCKED_FOR_GOOD = 2**53


@dataclasses.dataclass(frozen=True, slots=True)
class AccountRecord:
    name: str
    type: str
    params: dict              # non-secret settings: digits, ttl, algorithm, lockout, ...
    state: str                # ACCOUNT_PENDING | ACCOUNT_ACTIVE
    material: dict | None     # decrypted token material (None while pending)
    counter: int              # next HOTP counter / stream index / chain index to issue
    last_step: int            # TOTP: last accepted time step (-1: none)
    chain_last: bytes | None  # hash chain: last accepted value
    failures: int             # recent failed verifications (they leak away: services.policy)
    transcript: bytes | None  # ceremony transcript hash (final receipt)
    created_at: float
    failed_at: int = 0        # when ``failures`` last leaked or was set (whole seconds)
    locked_until: int = 0     # refused before this time (s); LOCKED_FOR_GOOD: a hard lock
    locks: int = 0            # temporary locks in a row (the back-off level)
    # the row as stored: every ACCOUNT_COLUMNS value, then its version (otpfast.store.rows)
    row: tuple = dataclasses.field(default=(), compare=False, repr=False)

    @property
    def authorities(self) -> tuple[int, ...]:
        return tuple(self.params.get("authorities") or ())

    @property
    def lockout(self) -> int:
        return int(self.params["lockout"])

    @property
    def locked(self) -> bool:
        """A hard lock (the permanent lockout policy or ``account lock``): only an admin
        lifts it. A temporary lock is a matter of time: :meth:`locked_at`."""
        return self.locked_until == LOCKED_FOR_GOOD

    def locked_at(self, now: float) -> bool:
        return now < self.locked_until


@dataclasses.dataclass(frozen=True, slots=True)
class TokenRecord:
    """One token of a user (an account). The user's main token (``main``) is the account
    row itself - its type, params, material and verification state are the account's; its
    tokens row only names it (serial, description, enabled). A further token keeps its own
    params, material (encrypted, the serial as associated data) and state here."""
    serial: str
    user: str
    type: str
    params: dict
    description: str
    enabled: bool
    main: bool
    material: dict | None     # None for a main token (the account's material)
    counter: int
    last_step: int
    chain_last: bytes | None
    created_at: float
    row: tuple = dataclasses.field(default=(), compare=False, repr=False)

    @property
    def name(self) -> str:    # the token cache's key (services.distribution)
        return self.serial


@dataclasses.dataclass(frozen=True, slots=True)
class ClientRecord:
    name: str
    account: str | None
    verifier: bool
    credential_hash: bytes
    created_at: float
    admin: bool = False         # may call the admin API (otpfast.protocol.admin_api)


@dataclasses.dataclass(frozen=True, slots=True)
class AuthorityRecord:
    id: int
    credential_hash: bytes
    created_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class ContributionRecord:
    account: str
    authority_id: int
    salt: bytes
    digest: bytes             # decrypted PBKDF2 output
    ciphertext_hash: bytes    # SHA-256 of the RSA-OAEP ciphertext (transcript input)
    created_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class AuditReport:
    entries: int              # entries read
    first_bad: int | None     # seq of the first edited/missing entry (None: chain intact)
    reason: str               # "ok" or what is wrong, for the operator
    head_seq: int             # seq of the last entry (the head to record elsewhere)
    head_hash: bytes
    bad_rows: tuple = ()      # rows edited or rolled back without the key (otpfast.store.rows)
    anchor_seq: int = 0       # where the chain starts (the last archived entry)

    @property
    def ok(self) -> bool:
        return self.first_bad is None and not self.bad_rows


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    time: float
    event: str
    account: str
    client: str
    source: str
    outcome: str
    hash: bytes
    rows: str | None = None   # the rows its transaction wrote (otpfast.store.rows)
    chain: int = 1            # its chain (PostgreSQL: one per node process; SQLite: 1)


class Transaction(abc.ABC):
    """One open write transaction. Methods returning bool report whether the conditional
    change happened; a False leaves the row untouched."""

    # -- reads inside the transaction (current until COMMIT: the write lock is held)
    @abc.abstractmethod
    def account(self, name: str) -> AccountRecord | None: ...

    @abc.abstractmethod
    def accounts(self, names) -> dict[str, AccountRecord]:
        """The existing accounts among ``names`` (one query), keyed by name."""

    @abc.abstractmethod
    def contributions(self, account: str) -> list[ContributionRecord]: ...

    @abc.abstractmethod
    def clients(self, names) -> dict[str, ClientRecord]:
        """The existing clients among ``names`` whose rows pass their MAC, keyed by name."""

    # -- principals
    @abc.abstractmethod
    def add_authority(self, authority_id: int, credential_hash: bytes, now: float) -> bool: ...

    @abc.abstractmethod
    def add_client(self, name: str, account: str | None, verifier: bool,
                   credential_hash: bytes, now: float, *, admin: bool = False) -> bool: ...

    @abc.abstractmethod
    def delete_client(self, name: str) -> ClientRecord | None:
        """Delete an authentic client row; the record deleted, or None (absent or refused)."""

    @abc.abstractmethod
    def delete_clients_of(self, account: str) -> list[str]:
        """Delete the device clients bound to ``account``; their names."""

    @abc.abstractmethod
    def delete_authority(self, authority_id: int) -> bool:
        """Delete an authentic authority row."""

    # -- accounts
    @abc.abstractmethod
    def add_account(self, name: str, type: str, params: dict, material: dict | None,
                    chain_last: bytes | None, now: float, *, counter: int = 0,
                    serial: str | None = None) -> bool:
        """Insert an account; ``material is None`` makes it wait for its ceremony. Its main
        token gets ``serial`` (default: a fresh one)."""

    @abc.abstractmethod
    def add_accounts(self, accounts, now: float) -> list[str]:
        """Insert many new active accounts ((name, type, params, material) tuples) with
        their main tokens, sealed in bulk; their serials."""

    @abc.abstractmethod
    def existing(self, table: str, names) -> set:
        """Which of ``names`` are keys of ``table`` ("accounts" or "tokens")."""

    @abc.abstractmethod
    def delete_account(self, name: str) -> bool: ...

    @abc.abstractmethod
    def activate_account(self, name: str, material: dict, chain_last: bytes | None,
                         transcript: bytes, *, counter: int = 0) -> bool:
        """pending -> active with its material; False if it was not pending."""

    @abc.abstractmethod
    def advance_counter(self, name: str, old: int, new: int) -> bool: ...

    @abc.abstractmethod
    def advance_step(self, name: str, old: int, new: int) -> bool:
        """TOTP: last_step old -> new (callers ensure new > old)."""

    @abc.abstractmethod
    def advance_chain(self, name: str, old: bytes, new: bytes) -> bool: ...

    @abc.abstractmethod
    def update_accounts(self, changes) -> int:
        """Compare-and-set of the verification state of several accounts in one go:
        ``changes`` is [(old, new)] AccountRecords of distinct accounts; each row takes new's
        counter, last_step, chain_last, failures, failed_at, locked_until and locks only if
        it still holds old's counter, last_step, chain_last, failures and locked_until (and
        last_step does not go back, failures stay within the lockout). Returns how many rows
        were changed; a caller getting fewer than ``len(changes)`` must roll back."""

    @abc.abstractmethod
    def record_failure(self, name: str) -> bool:
        """failures += 1 unless already at the lockout limit."""

    @abc.abstractmethod
    def clear_failures(self, name: str) -> bool:
        """failures -> 0 if the account is not locked (a successful verification)."""

    @abc.abstractmethod
    def unlock(self, name: str) -> bool:
        """Clear failures, lock and back-off unconditionally (the admin's ``account unlock``)."""

    @abc.abstractmethod
    def lock(self, name: str) -> bool:
        """A hard lock (locked_until -> LOCKED_FOR_GOOD): the admin's ``account lock``."""

    # -- tokens (TokenRecord; a tokens row is authenticated as an account row is)
    @abc.abstractmethod
    def add_token(self, serial: str, user: str, type: str, params: dict, material: dict | None,
                  now: float, *, description: str = "", main: bool = False, counter: int = 0,
                  chain_last: bytes | None = None) -> bool:
        """Insert a token; False if the serial exists."""

    @abc.abstractmethod
    def token(self, serial: str) -> "TokenRecord | None": ...

    @abc.abstractmethod
    def tokens_of(self, users) -> dict[str, list["TokenRecord"]]:
        """The tokens of these users (one query), by user, in serial order."""

    @abc.abstractmethod
    def change_token(self, serial: str, **columns) -> bool:
        """Set columns of one token (enabled, description, params, counter, last_step,
        chain_last)."""

    @abc.abstractmethod
    def delete_token(self, serial: str) -> bool: ...

    @abc.abstractmethod
    def update_tokens(self, changes) -> int:
        """Compare-and-set of the verification state (counter, last_step) of
        several further tokens: ``changes`` is [(old TokenRecord, new state)]; each row
        changes only if it still holds old's state. Returns how many rows changed."""

    @abc.abstractmethod
    def set_account_params(self, name: str, params: dict) -> bool:
        """Replace an account's params (its lockout column stays)."""

    # -- ceremony
    @abc.abstractmethod
    def add_contribution(self, account: str, authority_id: int, salt: bytes, digest: bytes,
                         ciphertext_hash: bytes, now: float) -> bool:
        """False if this authority has contributed to this account already."""

    @abc.abstractmethod
    def delete_contributions(self, account: str) -> int:
        """Delete the account's contributions (its ceremony completed: the digests would let
        anyone with the store and the at-rest key recompute the secret); return how many."""

    # -- issued OTPs
    @abc.abstractmethod
    def issue(self, account: str, client: str, otp_digest: bytes, issued_at: float,
              expires_at: float) -> int: ...

    @abc.abstractmethod
    def use_issued(self, account: str, otp_digest: bytes, now: float) -> bool:
        """Mark one unused, unexpired issued OTP with this digest used."""

    @abc.abstractmethod
    def find_issued(self, wanted, now: float) -> dict[tuple[str, bytes], list[int]]:
        """For each (account, otp_digest) in ``wanted``: the ids of its unused, unexpired
        issued rows, ascending (one query for a whole batch; pairs without any are absent)."""

    @abc.abstractmethod
    def use_issued_ids(self, ids, now: float) -> int:
        """Mark these distinct issued rows used, each only if still unused and unexpired
        (one conditional UPDATE); returns how many were marked."""

    @abc.abstractmethod
    def purge_issued(self, before: float) -> int:
        """Delete issued rows that expired before ``before``; returns how many."""

    # -- idempotent verification (a client's request ids)
    @abc.abstractmethod
    def request_outcomes(self, keys) -> dict[tuple[str, str], bool]:
        """For (client, request id) pairs: the outcome recorded for each that has one (rows
        that fail their MAC are left out, logged)."""

    @abc.abstractmethod
    def record_outcomes(self, outcomes, now: float) -> None:
        """Record ((client, request id), accepted) pairs (a pair recorded already is kept)."""

    @abc.abstractmethod
    def purge_requests(self, before: float) -> int:
        """Forget the request ids recorded before ``before``; returns how many."""

    # -- audit
    @abc.abstractmethod
    def audit(self, now: float, event: str, account: str, client: str, source: str,
              outcome: str) -> None:
        """Append one hash-chained entry. Never pass secrets or OTPs."""

    def audit_many(self, entries) -> None:
        """Append several entries, each (now, event, account, client, source, outcome), in
        order (as :meth:`audit` each)."""
        for entry in entries:
            self.audit(*entry)


class Store(abc.ABC):
    """A store of accounts, principals, ceremony contributions, issued OTPs and the audit log."""

    #: HMAC/AEAD keys derived from the at-rest key (see otpfast.store.atrest)
    keys: "object"

    @abc.abstractmethod
    def transaction(self, *, wait: bool = True,
                    durable: bool = True) -> contextlib.AbstractContextManager[Transaction]:
        """One write transaction (the store's write lock, held until it ends). ``wait=False``:
        raise StoreBusy at once instead of waiting while another writer holds the lock.
        ``durable=False``: the commit may return before the transaction is on disk; it is
        once a later :meth:`sync` returns. Act on nothing it decided (no reply) before that."""

    def sync(self) -> None:
        """Make every transaction committed so far durable (see ``durable=False``); may run
        in another thread than the transactions."""

    # -- reads outside any write transaction
    @abc.abstractmethod
    def account(self, name: str) -> AccountRecord | None: ...

    @abc.abstractmethod
    def accounts(self) -> list[AccountRecord]: ...

    @abc.abstractmethod
    def client(self, name: str) -> ClientRecord | None: ...

    @abc.abstractmethod
    def token(self, serial: str) -> TokenRecord | None: ...

    @abc.abstractmethod
    def tokens(self, user: str | None = None) -> list[TokenRecord]:
        """Every token (of ``user``), in user then serial order."""

    @abc.abstractmethod
    def authority(self, authority_id: int) -> AuthorityRecord | None: ...

    @abc.abstractmethod
    def contributions(self, account: str) -> list[ContributionRecord]: ...

    @abc.abstractmethod
    def client_list(self) -> list[ClientRecord]:
        """Every client whose row passes its MAC, by name (refused rows are left out and
        logged, as :meth:`client` refuses them)."""

    @abc.abstractmethod
    def authority_list(self) -> list[AuthorityRecord]:
        """Every authority whose row passes its MAC, by id (refused rows left out, logged)."""

    @abc.abstractmethod
    def audit_entries(self) -> Iterator[AuditEntry]: ...

    @abc.abstractmethod
    def checked_audit_entries(self) -> Iterator[tuple[AuditEntry, bool]]:
        """Every entry with whether its MAC chains onto the entry before it (the first onto
        the archive anchor): what ``audit list`` shows; ``verify_audit`` is the full proof."""

    @abc.abstractmethod
    def verify_audit(self) -> AuditReport:
        """Check the audit chain (every entry's MAC, no gap, the archive anchor and the
        recorded heads) and every authenticated row against it (otpfast.store.rows)."""

    @abc.abstractmethod
    def archive_audit(self, before: float, path: str, now: float):
        """Move the entries dated before ``before`` to the new file ``path`` and anchor the
        rest of the chain (otpfast.store.archive); returns an archive.Archived."""

    @abc.abstractmethod
    def schema_version(self) -> int: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
