"""The embedded store: one SQLite file (WAL), the default backend.

Durability: the database runs in WAL mode with ``synchronous=FULL`` by default, so every
COMMIT fsyncs the WAL before it returns: an OTP accepted (marked used) is still marked used
after a power cut, and no OTP can be accepted twice across a crash. ``NORMAL`` (accepted as
an argument) survives process crashes but may lose the last commits on power loss, which
could un-burn an OTP; it is not the default. The cost of FULL is one fsync per transaction,
which is why ``Distribution.verify_many`` puts a whole batch in one transaction (group
commit).

Concurrency: one connection per thread; every write transaction starts with
``BEGIN IMMEDIATE`` (takes the write lock at once, so a read never has to be upgraded and
the busy timeout applies). ``verify_audit`` reads the head file first, then the database
head and every entry inside one read transaction (one WAL snapshot), so a commit by another
process meanwhile is never mistaken for tampering. Statements use named parameters (``:name``) and portable SQL
(``ON CONFLICT DO NOTHING`` needs SQLite >= 3.24) that a PostgreSQL backend can reuse.
"""
import contextlib
import functools
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from typing import Iterator

from otpfast.errors import StoreBusy, StoreError, StoreOutdated

from .atrest import AtRestKeys
from .base import AccountRecord, AuditEntry, AuditReport, Store, Transaction
from . import archive
from .common import (ACCOUNT_SELECT, check_key, KEY_CHECK_LABEL, SECRET_CACHE_SIZE, ZERO_HASH, AccountDecoder, HeadFile,
                     SqlReads, SqlTransaction, add_main_tokens, chain_entries, cover_client_admin,
                     moved_record,
                     seal_existing_rows)

# Ordered migrations: MIGRATIONS[i] brings the schema from version i to i + 1.
MIGRATIONS: list[tuple[str, ...]] = [
    (   # v1: the first release
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
        "CREATE TABLE authorities (id INTEGER PRIMARY KEY, credential_hash BLOB NOT NULL,"
        " created_at REAL NOT NULL)",
        "CREATE TABLE clients (name TEXT PRIMARY KEY, account TEXT, verifier INTEGER NOT NULL,"
        " credential_hash BLOB NOT NULL, mask_key_enc BLOB NOT NULL, created_at REAL NOT NULL)",
        "CREATE TABLE accounts (name TEXT PRIMARY KEY, type TEXT NOT NULL, params TEXT NOT NULL,"
        " state TEXT NOT NULL, material_enc BLOB, counter INTEGER NOT NULL DEFAULT 0,"
        " last_step INTEGER NOT NULL DEFAULT -1, chain_last BLOB,"
        " failures INTEGER NOT NULL DEFAULT 0, lockout INTEGER NOT NULL,"
        " created_at REAL NOT NULL)",
        "CREATE TABLE contributions (account TEXT NOT NULL, authority_id INTEGER NOT NULL,"
        " salt BLOB NOT NULL, digest_enc BLOB NOT NULL, ciphertext_hash BLOB NOT NULL,"
        " created_at REAL NOT NULL, PRIMARY KEY (account, authority_id))",
        "CREATE TABLE issued (id INTEGER PRIMARY KEY, account TEXT NOT NULL, client TEXT NOT NULL,"
        " otp_digest BLOB NOT NULL, issued_at REAL NOT NULL, expires_at REAL NOT NULL,"
        " used_at REAL)",
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, time REAL NOT NULL, event TEXT NOT NULL,"
        " account TEXT NOT NULL, client TEXT NOT NULL, source TEXT NOT NULL,"
        " outcome TEXT NOT NULL, hash BLOB NOT NULL)",
    ),
    (   # v2: ceremony transcript, audit head (tail truncation), issued lookup index
        "ALTER TABLE accounts ADD COLUMN transcript BLOB",
        "CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL,"
        " hash BLOB NOT NULL)",
        "INSERT INTO audit_head (id, seq, hash) SELECT 1, seq, hash FROM audit"
        " WHERE seq = (SELECT MAX(seq) FROM audit)",
        "INSERT INTO audit_head (id, seq, hash) SELECT 1, 0, :zero"
        " WHERE NOT EXISTS (SELECT 1 FROM audit_head)",
        "CREATE INDEX issued_lookup ON issued (account, otp_digest)",
        "CREATE INDEX issued_expiry ON issued (expires_at)",
    ),
    (   # v3: throttling - failures leak over time, locks are temporary (services.policy);
        # an account the old policy had locked for good stays locked (LOCKED_FOR_GOOD)
        "ALTER TABLE accounts ADD COLUMN failed_at INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE accounts ADD COLUMN locked_until INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE accounts ADD COLUMN locks INTEGER NOT NULL DEFAULT 0",
        "UPDATE accounts SET locked_until = 9007199254740992 WHERE failures >= lockout",
    ),
    (   # v4: row authentication (otpfast.store.rows; existing rows are sealed by
        # common.seal_existing_rows in the same transaction), audit archive anchor
        *(f"ALTER TABLE {table} ADD COLUMN {column}"
          for table in ("clients", "authorities", "accounts", "issued")
          for column in ("ver INTEGER", "mac BLOB")),
        "ALTER TABLE audit ADD COLUMN rows TEXT",
        "CREATE TABLE audit_anchor (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL,"
        " hash BLOB NOT NULL, mac BLOB NOT NULL)",
        # the row a verification decoy (unknown account) writes: see SqlTransaction
        "CREATE TABLE decoy (id INTEGER PRIMARY KEY CHECK (id = 1), writes INTEGER NOT NULL,"
        " mac BLOB)",
        "INSERT INTO decoy (id, writes) VALUES (1, 0)",
    ),
    (   # v5: users with several tokens (every existing account's secret and state become
        # its main token: common.add_main_tokens gives each a serial, in the same transaction)
        "CREATE TABLE tokens (serial TEXT PRIMARY KEY, user_name TEXT NOT NULL,"
        " type TEXT NOT NULL, params TEXT NOT NULL, description TEXT NOT NULL,"
        " enabled INTEGER NOT NULL, main INTEGER NOT NULL, material_enc BLOB,"
        " counter INTEGER NOT NULL, last_step INTEGER NOT NULL, chain_last BLOB,"
        " created_at REAL NOT NULL, ver INTEGER, mac BLOB)",
        "CREATE INDEX tokens_user ON tokens (user_name)",
    ),
    (   # v6: admin clients (the admin API); the flag is covered by the clients' row MAC, so
        # the rows that pass their v5 MAC are re-sealed (common.seal_existing_rows)
        "ALTER TABLE clients ADD COLUMN admin INTEGER NOT NULL DEFAULT 0",
    ),
    (   # v7: PostgreSQL keeps one audit chain per node process; one SQLite file has one
        # chain (the head row names no node)
        "ALTER TABLE audit_head ADD COLUMN node TEXT",
        # idempotent verification: a client's request id -> the outcome it got (MACed)
        "CREATE TABLE verify_requests (client TEXT NOT NULL, request_id TEXT NOT NULL,"
        " accepted INTEGER NOT NULL, at REAL NOT NULL, mac BLOB NOT NULL,"
        " PRIMARY KEY (client, request_id))",
        "CREATE INDEX verify_requests_at ON verify_requests (at)",
    ),
    (   # v8: PostgreSQL keeps an archive anchor per chain; one SQLite file has one chain
    ),
]
ROWS_VERSION = 4        # the migration that needs the at-rest key (seals existing rows)
TOKENS_VERSION = 5      # ... and the one that gives every account its main token
ADMIN_VERSION = 6       # ... and the one that covers the clients' admin flag
SCHEMA_VERSION = len(MIGRATIONS)
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)     # UPDATE ... FROM
_AUTOCHECKPOINT = 1000                                       # SQLite's default, in pages
_log = logging.getLogger("otpfast.store")
_JSON = sqlite3.sqlite_version_info >= (3, 38, 0)            # JSON functions built in
# 9 parameters a row; SQLite < 3.32 allows 999 parameters, later versions 32766
_AUDIT_ROWS = 3600 if sqlite3.sqlite_version_info >= (3, 32, 0) else 110
# ACCOUNT_COLUMNS as JSON values: blobs as hex (NULL stays null), the REAL exact (17 digits)
_ACCOUNT_JSON = ("name, type, params, state, iif(material_enc IS NULL, NULL, hex(material_enc)),"
                 " counter, last_step, iif(chain_last IS NULL, NULL, hex(chain_last)), failures,"
                 " iif(transcript IS NULL, NULL, hex(transcript)), printf('%!.17g', created_at),"
                 " failed_at, locked_until, locks, ver, hex(mac)")


def _unhex(text):
    return None if text is None else bytes.fromhex(text)


def _current_version(conn) -> int:
    row = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                       " AND name = 'schema_version'").fetchone()
    if row is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn, target: int = SCHEMA_VERSION, *, keys: AtRestKeys | None = None,
            steps: list | None = None) -> int:
    """Apply the migrations after the database's version up to ``target``, each in its own
    write transaction together with the version bump (the version is re-read under the
    write lock, so two processes opening a store at once do not both migrate it). The
    ROWS_VERSION step also seals the existing rows and needs ``keys``. ``steps`` receives
    the versions applied (the caller then writes or re-keys the audit head file)."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version (version) SELECT 0"
                         " WHERE NOT EXISTS (SELECT 1 FROM schema_version)")
            version = _current_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(f"the store has schema version {version}, newer than this "
                                 f"otpfast ({SCHEMA_VERSION}); upgrade otpfast")
            if version >= target:
                conn.execute("COMMIT")
                return version
            for statement in MIGRATIONS[version]:
                conn.execute(statement, {"zero": ZERO_HASH} if ":zero" in statement else {})
            if version + 1 == ROWS_VERSION:
                if keys is None:
                    raise StoreError("this schema migration needs the at-rest key")
                seal_existing_rows(conn, keys, str, time.time())
            if version + 1 == TOKENS_VERSION:
                if keys is None:
                    raise StoreError("this schema migration needs the at-rest key")
                add_main_tokens(conn, keys, str, time.time())
            if version + 1 == ADMIN_VERSION:
                if keys is None:
                    raise StoreError("this schema migration needs the at-rest key")
                cover_client_admin(conn, keys, str, time.time())
            cur = conn.execute("UPDATE schema_version SET version = :new WHERE version = :old",
                               {"new": version + 1, "old": version})
            if cur.rowcount != 1:
                raise StoreError("concurrent schema migration")
            conn.execute("COMMIT")
            if steps is not None:
                steps.append(version + 1)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _set_wal(conn, timeout: float) -> str:
    """``PRAGMA journal_mode = WAL``; SQLite does not call the busy handler for it while
    another connection opens or converts the same new file, so retry until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def connect(path: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 10_000):
    """A connection with otpfast's pragmas (autocommit mode; transactions are explicit)."""
    if synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise StoreError("synchronous must be FULL, EXTRA or NORMAL")
    if path not in ("", ":memory:"):
        # created 0600 by us, not 0644 by SQLite: its -wal and -shm files copy this mode
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot open the store {path}: {exc.strerror}") from None
    try:
        # one connection per thread (SQLiteStore._conn); check_same_thread=False only lets
        # close() release connections of threads that have finished
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=1024,
                               timeout=busy_timeout_ms / 1000)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = _set_wal(conn, busy_timeout_ms / 1000)
        if mode.lower() != "wal" and path != ":memory:":
            raise StoreError(f"cannot put the store {path} in WAL mode")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path}: {exc}") from None
    return conn


class SQLiteStore(SqlReads, Store):
    """Store in one SQLite file. ``key`` is the 32-byte at-rest key; ``head_path`` (optional)
    is a file outside the database that mirrors the audit head, so a tail truncation that
    also rewrites the in-database head is still detected. An older schema is migrated unless
    ``upgrade=False`` (then StoreOutdated); ``upgraded_from``: the version it was, or None."""

    CHECKPOINT_INTERVAL = 0.25      # seconds between the checkpoints sync() runs

    def __init__(self, path: str, key: bytes, *, head_path: str | None = None,
                 synchronous: str = "FULL", busy_timeout_ms: int = 10_000, create: bool = False,
                 upgrade: bool = True):
        if not create and not os.path.exists(path):
            raise StoreError(f"no store at {path} (run `otpfast init`)")
        self.path = path
        self.location = path
        self.keys = AtRestKeys(key)
        self.head_path = head_path
        self._head_file = HeadFile(head_path, self.keys.head_mac)
        self._decoder = AccountDecoder(self.keys)
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list = []
        self._lock = threading.Lock()
        self._wal_fd = None             # for sync()
        self._checkpointed_at = 0.0
        self._checkpointer = None
        self._unsynced_head = None      # the audit head of durable=False commits, for sync()
        try:
            conn = self._conn()
            unkeyed_head, steps = self._head_file.read_unkeyed(), []
            if not upgrade and 0 < (version := _current_version(conn)) < SCHEMA_VERSION:
                raise StoreOutdated(version, SCHEMA_VERSION)
            migrate(conn, keys=self.keys, steps=steps)
            self.upgraded_from = steps[0] - 1 if steps and steps[0] > 1 else None   # for the caller to say so
            self._check_key(conn)
            if 1 in steps and head_path is not None:    # a new store: its head file
                self._head_file.rewrite(0, ZERO_HASH)
            elif ROWS_VERSION in steps and unkeyed_head is not None:   # the one time it is read
                self._head_file.rewrite(*unkeyed_head)
        except BaseException:
            self.close()
            raise

    # -- connections ------------------------------------------------------------------
    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, synchronous=self._synchronous,
                           busy_timeout_ms=self._busy_timeout_ms)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        if self._unsynced_head is not None:
            self.sync()
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None
        self._local = threading.local()
        self._head_file.close()

    def _check_key(self, conn) -> None:
        row = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        if row is None:
            blob = self.keys.encrypt(KEY_CHECK_LABEL, KEY_CHECK_LABEL)
            conn.execute("INSERT INTO meta (key, value) VALUES ('key_check', :v)"
                         " ON CONFLICT DO NOTHING", {"v": blob})
            row = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        check_key(self.keys, row[0])

    def schema_version(self) -> int:
        return _current_version(self._conn())

    # -- transactions -----------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self, *, wait: bool = True, durable: bool = True) -> Iterator[Transaction]:
        conn = self._conn()
        if conn.in_transaction:
            raise StoreError("transactions do not nest")
        # per-transaction settings (not changeable inside one), kept per connection
        # (durable=False: no fsync at COMMIT, and no checkpoint either: sync() does both later)
        settings = (int(self._busy_timeout_ms) if wait else 0,
                    self._synchronous if durable else "NORMAL",
                    _AUTOCHECKPOINT if durable else 0)
        try:
            if getattr(self._local, "settings", None) != settings:
                self._local.settings = None
                conn.execute(f"PRAGMA busy_timeout = {settings[0]}")
                conn.execute(f"PRAGMA synchronous = {settings[1]}")
                conn.execute(f"PRAGMA wal_autocheckpoint = {settings[2]}")
                self._local.settings = settings
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not wait and getattr(exc, "sqlite_errorname", "") == "SQLITE_BUSY":
                raise StoreBusy() from None
            raise StoreError(f"the store is busy: {exc}") from None
        tx = _SQLiteTransaction(self, conn)
        try:
            yield tx
            head = tx._flush_audit()
            conn.execute("COMMIT")     # durable=False: WAL frames written, fsynced by sync()
        except BaseException:
            self._local.batch_accounts = self._local.clients = None
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._committed_accounts(tx)
        self._committed_clients(tx, conn)
        self._after_commit(tx)
        if head is not None:
            if durable:
                self._head_file.write(*head)
            else:       # the head file must never be ahead of what is on disk: sync() writes it
                with self._lock:
                    if self._unsynced_head is None or head[0] > self._unsynced_head[0]:
                        self._unsynced_head = head

    def sync(self) -> None:
        """fdatasync the WAL file: every transaction committed so far (``durable=False``
        included) is then on disk. A commit in WAL mode only appends frames to the WAL, and
        SQLite syncs the WAL before a checkpoint copies frames into the database file (and
        that file after), so frames a checkpoint already moved are durable too. The WAL is
        synced through one descriptor kept open (never the database file: closing any
        descriptor of it would drop SQLite's POSIX locks in this process).

        ``durable=False`` commits leave the audit head file to this method (written once the
        entries it names are on disk), and checkpoints: at most every
        CHECKPOINT_INTERVAL s it wakes a checkpoint thread (PASSIVE: writers never wait for
        it), so neither the committing thread nor the next sync() waits while the WAL is
        copied into the database."""
        wal = self.path + "-wal"
        with self._lock:
            head, self._unsynced_head = self._unsynced_head, None   # committed before this sync
            fd = self._wal_fd
            try:
                current = os.stat(wal).st_ino
            except FileNotFoundError:       # no WAL: everything is in the (synced) database file
                current = None
            if current is not None:
                if fd is None or os.fstat(fd).st_ino != current:
                    if fd is not None:
                        os.close(fd)
                    fd = self._wal_fd = os.open(wal, os.O_RDONLY)
                os.fdatasync(fd)
            now = time.monotonic()
            checkpoint = now - self._checkpointed_at >= self.CHECKPOINT_INTERVAL
            if checkpoint:
                self._checkpointed_at = now
        if head is not None:
            self._head_file.write(*head)
        if checkpoint:
            with self._lock:
                if self._checkpointer is None:
                    self._checkpointer = _Checkpointer(self)
            self._checkpointer.wake()

    def _committed_accounts(self, tx) -> None:
        """After COMMIT: the batch-account cache takes the accounts ``tx`` moved as written
        and drops the others it changed."""
        cache = getattr(self._local, "batch_accounts", None)
        if cache is None:
            return
        for name in tx.touched_accounts:
            cache.pop(name, None)
        for name, record in tx.updated_accounts.items():
            # only rows that exist (a verification decoy updates a name that has none)
            if name not in tx.touched_accounts and cache.get(name) is not None:
                cache[name] = record

    def _connection_cache(self, name: str, valid) -> dict:
        """This connection's cache ``name``, emptied when ``valid`` (what it was read under)
        changed since, or when it grew past SECRET_CACHE_SIZE."""
        local = self._local
        cache = getattr(local, name, None)
        if cache is None or getattr(local, name + "_valid") != valid or len(cache) > SECRET_CACHE_SIZE:
            cache = {}
            setattr(local, name, cache)
            setattr(local, name + "_valid", valid)
        return cache

    def _batch_clients(self, tx, names) -> dict:
        """``tx.clients(names)``: from a cache of this connection's client reads that holds
        while no other connection committed (``PRAGMA data_version``) and this one changed
        nothing but in committed transactions that wrote no client row (``total_changes``,
        see _committed_clients). Every verification batch asks for its clients (a session
        whose credential was rotated or deleted is refused)."""
        conn = tx._conn
        cache = self._connection_cache("clients", (tx.data_version(), conn.total_changes))
        out = {}
        for name in dict.fromkeys(names):
            record = cache.get(name, cache)
            if record is cache:
                record = cache[name] = self._select_client(conn, name)
            if record is not None:
                out[name] = record
        return out

    def _committed_clients(self, tx, conn) -> None:
        """After COMMIT: the client cache survives a transaction that wrote no client row."""
        if getattr(self._local, "clients", None) is None:
            return
        if any(tag == "c" for tag, _key in tx.written):
            self._local.clients = None
        else:
            self._local.clients_valid = (self._local.clients_valid[0], conn.total_changes)

    def _batch_accounts(self, tx, names) -> dict:
        """``tx.accounts(names)``: from a cache of this connection's account records, read
        anew when ``PRAGMA data_version`` says another connection committed since (it does
        not move for this connection's own commits: at COMMIT the accounts a batch moved
        (update_accounts) are cached as written, any other changed account is dropped; at
        ROLLBACK all are dropped). Inside the write transaction nobody
        else can commit, so what the cache returns is current. Saves the batch's account
        read while this process is the only writer."""
        cache = self._connection_cache("batch_accounts", tx.data_version())
        wanted = [name for name in dict.fromkeys(names) if isinstance(name, str)]
        missing = [name for name in wanted if name not in cache]
        if missing:
            found = self._select_accounts(tx._conn, missing)
            for name in missing:
                cache[name] = found.get(name)       # None: no such account (cached too)
        return {name: cache[name] for name in wanted if cache[name] is not None}

    # -- row decoding -----------------------------------------------------------------
    def _select_accounts(self, conn, names) -> dict:
        """The named accounts, read as ONE result row (a JSON array built by SQLite) when
        SQLite has JSON functions: every row fetched is a GIL hand-over in the sqlite3
        module, which costs the group-commit writer dearly while the event loop runs."""
        found = {}
        names = list(dict.fromkeys(n for n in names if isinstance(n, str)))
        for start in range(0, len(names), 500):     # SQLite < 3.32 allows 999 parameters
            chunk = names[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            if not _JSON:
                for row in conn.execute(f"SELECT {ACCOUNT_SELECT} FROM accounts"
                                        f" WHERE name IN ({marks})", chunk):
                    record = self._decoder.account(row)
                    if record is not None:      # a refused row: as if absent
                        found[row[0]] = record
                continue
            (packed,) = conn.execute(f"SELECT json_group_array(json_array({_ACCOUNT_JSON}))"
                                     f" FROM accounts WHERE name IN ({marks})", chunk).fetchone()
            for (name, type_, params, state, material, counter, last_step, chain_last,
                 failures, transcript, created_at, failed_at, locked_until, locks, ver,
                 mac) in json.loads(packed):
                record = self._decoder.account((
                    name, type_, params, state, _unhex(material), counter, last_step,
                    _unhex(chain_last), failures, _unhex(transcript), float(created_at),
                    failed_at, locked_until, locks, ver, _unhex(mac)))
                if record is not None:          # a refused row: as if absent
                    found[name] = record
        return found

    # -- reads ------------------------------------------------------------------------
    def accounts(self) -> list[AccountRecord]:
        rows = self._conn().execute(f"SELECT {ACCOUNT_SELECT} FROM accounts"
                                    " ORDER BY name").fetchall()
        return [record for record in map(self._decoder.account, rows) if record is not None]

    def clients(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT name FROM clients ORDER BY name")]

    def _entries(self, conn, upto: int | None = None) -> Iterator[AuditEntry]:
        cur = conn.execute("SELECT seq, time, event, account, client, source, outcome, hash,"
                           " rows FROM audit WHERE :upto IS NULL OR seq <= :upto ORDER BY seq",
                           {"upto": upto})
        for r in cur:
            yield AuditEntry(seq=r[0], time=r[1], event=r[2], account=r[3], client=r[4],
                             source=r[5], outcome=r[6], hash=bytes(r[7]), rows=r[8])

    def audit_entries(self) -> Iterator[AuditEntry]:
        return self._entries(self._conn())

    def verify_audit(self) -> AuditReport:
        head_file = self._head_file.read()     # before the snapshot: never ahead of it
        conn = self._conn()
        if conn.in_transaction:
            raise StoreError("transactions do not nest")
        # one read transaction (one WAL snapshot) for the head and every entry: a commit by
        # another process in between must not look like entries written behind otpfast's back
        conn.execute("BEGIN")
        try:
            return archive.verify(self, conn, head_file, self._entries(conn))
        finally:
            conn.execute("COMMIT")

    def archive_audit(self, before: float, path: str, now: float) -> archive.Archived:
        """Move the entries dated before ``before`` to the new file ``path``
        (otpfast.store.archive)."""
        head_file = self._head_file.read()

        def in_transaction():
            with self.transaction() as tx:
                return archive.archive(self, tx, before, path, head_file,
                                       lambda upto: self._entries(tx._conn, upto), now)
        return archive.run(self, path, in_transaction)


class _Checkpointer:
    """A daemon thread that runs a PASSIVE checkpoint on its own connection when woken."""

    def __init__(self, store):
        self._store = store
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="otpfast-checkpoint", daemon=True)
        self._thread.start()

    def wake(self):
        self._wake.set()

    def _run(self):
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                self._store._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:      # the next one retries; commits are unaffected
                _log.warning("WAL checkpoint failed: %s", exc)

    def stop(self):
        self._stopping = True
        self._wake.set()
        self._thread.join()


@functools.lru_cache(maxsize=None)
def _use_issued_sql(count: int) -> str:
    """use_issued_ids' UPDATE of ``count`` rows: ?1 now, ?2 the version, then the ids, then
    their new MACs (each id bound once, for its CASE and the IN list)."""
    ids = [f"?{k + 3}" for k in range(count)]
    return ("UPDATE issued SET used_at = ?1, ver = ?2, mac = CASE id"
            + "".join(f" WHEN {id_} THEN ?{k + 3 + count}" for k, id_ in enumerate(ids))
            + f" END WHERE id IN ({', '.join(ids)}) AND used_at IS NULL AND expires_at > ?1")


class _SQLiteTransaction(SqlTransaction):

    def __init__(self, store, conn):
        super().__init__(store, conn)
        self.updated_accounts: dict = {}     # name -> its record as update_accounts left it
        self._head = None                    # (seq, hash) of the audit head, once read
        self._data_version = None

    def accounts(self, names):
        return self._store._batch_accounts(self, names)

    def clients(self, names):
        return self._store._batch_clients(self, names)

    def data_version(self) -> int:
        """``PRAGMA data_version`` at this transaction's start (read once): it moves when
        another connection commits."""
        if self._data_version is None:
            (self._data_version,) = self._conn.execute("PRAGMA data_version").fetchone()
        return self._data_version

    def _head_seq(self) -> int:
        # the whole head, for _flush_audit: nobody else moves it while this transaction
        # holds the write lock (and its UPDATE checks the seq all the same)
        self._head = self._conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        return int(self._head[0])

    def update_accounts(self, changes):
        changes = list(changes)
        ver, sealed = self._moved_rows(changes)
        self._write_decoys(changes, sealed)
        updated = self.updated_accounts
        for (old, new), (values, _) in zip(changes, sealed):
            # what the rows hold after this update (cache at COMMIT)
            updated[old.name] = moved_record(old, new, (*values, ver))
        if not _UPDATE_FROM:
            cur = self._conn.executemany(
                "UPDATE accounts SET counter = ?1, last_step = ?2, chain_last = ?3,"
                " failures = ?4, failed_at = ?10, locked_until = ?11, locks = ?12,"
                " ver = ?14, mac = ?15 WHERE name = ?5 AND counter = ?6 AND last_step = ?7"
                " AND chain_last IS ?8 AND failures = ?9 AND locked_until = ?13"
                " AND ?2 >= last_step AND ?4 <= lockout",
                [(new.counter, new.last_step, new.chain_last, new.failures, old.name,
                  old.counter, old.last_step, old.chain_last, old.failures, new.failed_at,
                  new.locked_until, new.locks, old.locked_until, ver, mac)
                 for (old, new), (_, mac) in zip(changes, sealed)])
            return cur.rowcount
        changed = 0
        for start in range(0, len(changes), 500):      # 14 parameters a row, < 32766
            chunk = changes[start:start + 500]
            params = [ver]
            extend = params.extend
            for (old, new), (_, mac) in zip(chunk, sealed[start:start + 500]):
                extend((old.name, new.counter, new.last_step, new.chain_last, new.failures,
                        old.counter, old.last_step, old.chain_last, old.failures,
                        new.failed_at, new.locked_until, new.locks, old.locked_until, mac))
            # one statement; the names are distinct, so each row is changed at most once
            changed += self._conn.execute(
                "UPDATE accounts SET counter = c.column2, last_step = c.column3,"
                " chain_last = c.column4, failures = c.column5, failed_at = c.column10,"
                " locked_until = c.column11, locks = c.column12, ver = ?1, mac = c.column14"
                " FROM (VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk)) + ") AS c"
                " WHERE accounts.name = c.column1 AND accounts.counter = c.column6"
                " AND accounts.last_step = c.column7 AND accounts.chain_last IS c.column8"
                " AND accounts.failures = c.column9 AND accounts.locked_until = c.column13"
                " AND c.column3 >= accounts.last_step AND c.column5 <= accounts.lockout",
                params).rowcount
        return changed

    def issue(self, account, client, otp_digest, issued_at, expires_at):
        # lastrowid rather than RETURNING: works with SQLite < 3.35 (PostgreSQL: RETURNING id)
        cur = self._conn.execute("INSERT INTO issued (account, client, otp_digest, issued_at,"
                                 " expires_at) VALUES (:account, :client, :d, :at, :exp)",
                                 {"account": account, "client": client, "d": otp_digest,
                                  "at": issued_at, "exp": expires_at})
        self._seal("issued", int(cur.lastrowid))
        return int(cur.lastrowid)

    def find_issued(self, wanted, now):
        found: dict = {}
        wanted = list(dict.fromkeys(wanted))
        for start in range(0, len(wanted), 300):    # SQLite < 3.32 allows 999 parameters
            chunk = wanted[start:start + 300]
            params = [*itertools.chain.from_iterable(chunk), now]
            # rows as stored: the store runs on the event loop's thread (net.verifier), so
            # no writer thread waits for the GIL a fetched row releases; cheaper than one
            # JSON array whose text must be parsed (exact REALs, hex MACs)
            rows = self._conn.execute(
                "WITH wanted (account, otp_digest) AS (VALUES "
                + ", ".join(["(?, ?)"] * len(chunk)) + ") SELECT i.id, i.account,"
                " i.otp_digest, i.expires_at, i.ver, i.mac FROM wanted CROSS JOIN issued AS i"
                " ON i.account = wanted.account AND i.otp_digest = wanted.otp_digest"
                " WHERE i.used_at IS NULL AND i.expires_at > ?", params).fetchall()
            for id_, account, otp_digest, *_ in self._authentic_issued(rows, now):
                found.setdefault((account, otp_digest), []).append(id_)
        for ids in found.values():
            ids.sort()
        return found

    def use_issued_ids(self, ids, now):
        ver, sealed = self._used_rows(list(ids), now)
        marked = 0
        for start in range(0, len(sealed), 300):     # SQLite < 3.32 allows 999 parameters
            chunk = sealed[start:start + 300]
            # one statement (by primary key: UPDATE ... FROM would scan); every id is
            # distinct, so each row is marked at most once
            marked += self._conn.execute(
                _use_issued_sql(len(chunk)),
                [now, ver, *[id_ for id_, _ in chunk], *[mac for _, mac in chunk]]).rowcount
        return marked

    def _flush_audit(self) -> tuple[int, bytes] | None:
        """Chain and insert the transaction's audit entries and move the head (inside the
        transaction); returns the new head, None if nothing was audited."""
        records = self._audit_rows()
        if not self._pending_audit:
            return None
        row = self._head or self._conn.execute("SELECT seq, hash FROM audit_head"
                                               " WHERE id = 1").fetchone()
        old = int(row[0])
        rows = chain_entries(self._store.keys.audit_mac, (old, bytes(row[1])),
                             self._pending_audit, records)
        for start in range(0, len(rows), _AUDIT_ROWS):    # one statement per chunk
            chunk = rows[start:start + _AUDIT_ROWS]
            self._conn.execute("INSERT INTO audit (seq, time, event, account, client, source,"
                               " outcome, hash, rows) VALUES "
                               + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk)),
                               list(itertools.chain.from_iterable(chunk)))
        head = (rows[-1][0], rows[-1][7])
        if self._run("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1"
                     " AND seq = :old", {"seq": head[0], "hash": head[1], "old": old}) != 1:
            raise StoreError("the audit head moved during a transaction")
        return head
