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
the busy timeout applies). Statements use named parameters (``:name``) and portable SQL
(``ON CONFLICT DO NOTHING`` needs SQLite >= 3.24) that a PostgreSQL backend can reuse.
"""
import contextlib
import hmac
import json
import os
import sqlite3
import struct
import threading
from typing import Iterator

from otpfast.errors import StoreError

from .atrest import AtRestKeys
from .base import (ACCOUNT_ACTIVE, ACCOUNT_PENDING, AccountRecord, AuditEntry, AuditReport,
                   AuthorityRecord, ClientRecord, ContributionRecord, Store, Transaction)

ZERO_HASH = bytes(32)
KEY_CHECK_LABEL = b"otpfast key check"

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
]
SCHEMA_VERSION = len(MIGRATIONS)


def _current_version(conn) -> int:
    row = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                       " AND name = 'schema_version'").fetchone()
    if row is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn, target: int = SCHEMA_VERSION) -> int:
    """Apply the migrations after the database's version up to ``target``, each in its own
    write transaction together with the version bump (the version is re-read under the
    write lock, so two processes opening a store at once do not both migrate it)."""
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
            cur = conn.execute("UPDATE schema_version SET version = :new WHERE version = :old",
                               {"new": version + 1, "old": version})
            if cur.rowcount != 1:
                raise StoreError("concurrent schema migration")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _audit_mac(key: bytes, prev: bytes, seq: int, time: float, event: str, account: str,
               client: str, source: str, outcome: str) -> bytes:
    parts = [prev]
    for field in (str(seq), repr(float(time)), event, account, client, source, outcome):
        data = field.encode("utf-8")
        parts.append(struct.pack(">I", len(data)))
        parts.append(data)
    return hmac.digest(key, b"".join(parts), "sha256")


def connect(path: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 10_000):
    """A connection with otpfast's pragmas (autocommit mode; transactions are explicit)."""
    if synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise StoreError("synchronous must be FULL, EXTRA or NORMAL")
    try:
        # one connection per thread (SQLiteStore._conn); check_same_thread=False only lets
        # close() release connections of threads that have finished
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                               timeout=busy_timeout_ms / 1000)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal" and path != ":memory:":
            raise StoreError(f"cannot put the store {path} in WAL mode")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path}: {exc}") from None
    return conn


class SQLiteStore(Store):
    """Store in one SQLite file. ``key`` is the 32-byte at-rest key; ``head_path`` (optional)
    is a file outside the database that mirrors the audit head, so a tail truncation that
    also rewrites the in-database head is still detected."""

    def __init__(self, path: str, key: bytes, *, head_path: str | None = None,
                 synchronous: str = "FULL", busy_timeout_ms: int = 10_000, create: bool = False):
        if not create and not os.path.exists(path):
            raise StoreError(f"no store at {path} (run `otpfast init`)")
        self.path = path
        self.keys = AtRestKeys(key)
        self.head_path = head_path
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list = []
        self._lock = threading.Lock()
        self._head_written = 0
        self._material_cache: dict = {}   # (name, ciphertext) -> decrypted material
        self._params_cache: dict = {}     # params JSON text -> dict
        try:
            conn = self._conn()
            migrate(conn)
            self._check_key(conn)
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
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def _check_key(self, conn) -> None:
        row = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        if row is None:
            blob = self.keys.encrypt(KEY_CHECK_LABEL, KEY_CHECK_LABEL)
            conn.execute("INSERT INTO meta (key, value) VALUES ('key_check', :v)"
                         " ON CONFLICT DO NOTHING", {"v": blob})
            row = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        try:
            ok = self.keys.decrypt(row[0], KEY_CHECK_LABEL) == KEY_CHECK_LABEL
        except StoreError:
            ok = False
        if not ok:
            raise StoreError("the at-rest key does not match this store")

    def schema_version(self) -> int:
        return _current_version(self._conn())

    # -- transactions -----------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        conn = self._conn()
        if conn.in_transaction:
            raise StoreError("transactions do not nest")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"the store is busy: {exc}") from None
        tx = _SQLiteTransaction(self, conn)
        try:
            yield tx
            tx._flush_audit_head()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if tx._head is not None and tx._head[0] != tx._head_start:
            self._write_head_file(*tx._head)

    def _write_head_file(self, seq: int, digest: bytes) -> None:
        if self.head_path is None:
            return
        with self._lock:
            if seq <= self._head_written:
                return
            tmp = f"{self.head_path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(f"{seq} {digest.hex()}\n")
            os.replace(tmp, self.head_path)
            self._head_written = seq

    def _read_head_file(self) -> tuple[int, bytes] | None:
        if self.head_path is None or not os.path.exists(self.head_path):
            return None
        with open(self.head_path, encoding="ascii") as fh:
            text = fh.read().split()
        try:
            return int(text[0]), bytes.fromhex(text[1])
        except (IndexError, ValueError):
            return (-1, b"")

    # -- row decoding -----------------------------------------------------------------
    _ACCOUNT_COLUMNS = ("name, type, params, state, material_enc, counter, last_step, chain_last,"
                        " failures, transcript, created_at")

    def _account_from_row(self, row) -> AccountRecord:
        (name, type_, params, state, material_enc, counter, last_step, chain_last, failures,
         transcript, created_at) = row
        material = None
        if material_enc is not None:
            material_enc = bytes(material_enc)
            cache_key = (name, material_enc)
            material = self._material_cache.get(cache_key)
            if material is None:
                plain = self.keys.decrypt(material_enc, b"account\0" + name.encode())
                material = json.loads(plain)
                if len(self._material_cache) > 4096:
                    self._material_cache.clear()
                self._material_cache[cache_key] = material
        parsed = self._params_cache.get(params)
        if parsed is None:
            parsed = json.loads(params)
            if len(self._params_cache) > 4096:
                self._params_cache.clear()
            self._params_cache[params] = parsed
        return AccountRecord(name=name, type=type_, params=parsed, state=state,
                             material=material, counter=counter, last_step=last_step,
                             chain_last=None if chain_last is None else bytes(chain_last),
                             failures=failures,
                             transcript=None if transcript is None else bytes(transcript),
                             created_at=created_at)

    def _select_account(self, conn, name):
        row = conn.execute(f"SELECT {self._ACCOUNT_COLUMNS} FROM accounts WHERE name = :name",
                           {"name": name}).fetchone()
        return None if row is None else self._account_from_row(row)

    def _select_contributions(self, conn, account):
        rows = conn.execute("SELECT account, authority_id, salt, digest_enc, ciphertext_hash,"
                            " created_at FROM contributions WHERE account = :account"
                            " ORDER BY authority_id", {"account": account}).fetchall()
        return [ContributionRecord(
            account=r[0], authority_id=r[1], salt=bytes(r[2]),
            digest=self.keys.decrypt(bytes(r[3]), _contribution_aad(r[0], r[1])),
            ciphertext_hash=bytes(r[4]), created_at=r[5]) for r in rows]

    # -- reads ------------------------------------------------------------------------
    def account(self, name: str) -> AccountRecord | None:
        return self._select_account(self._conn(), name)

    def accounts(self) -> list[AccountRecord]:
        rows = self._conn().execute(f"SELECT {self._ACCOUNT_COLUMNS} FROM accounts"
                                    " ORDER BY name").fetchall()
        return [self._account_from_row(r) for r in rows]

    def client(self, name: str) -> ClientRecord | None:
        row = self._conn().execute(
            "SELECT name, account, verifier, credential_hash, mask_key_enc, created_at"
            " FROM clients WHERE name = :name", {"name": name}).fetchone()
        if row is None:
            return None
        mask_key = self.keys.decrypt(bytes(row[4]), b"client\0" + row[0].encode())
        return ClientRecord(name=row[0], account=row[1], verifier=bool(row[2]),
                            credential_hash=bytes(row[3]), mask_key=mask_key,
                            created_at=row[5])

    def clients(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT name FROM clients ORDER BY name")]

    def authority(self, authority_id: int) -> AuthorityRecord | None:
        row = self._conn().execute("SELECT id, credential_hash, created_at FROM authorities"
                                   " WHERE id = :id", {"id": authority_id}).fetchone()
        if row is None:
            return None
        return AuthorityRecord(id=row[0], credential_hash=bytes(row[1]), created_at=row[2])

    def contributions(self, account: str) -> list[ContributionRecord]:
        return self._select_contributions(self._conn(), account)

    def audit_entries(self) -> Iterator[AuditEntry]:
        cur = self._conn().execute("SELECT seq, time, event, account, client, source, outcome,"
                                   " hash FROM audit ORDER BY seq")
        for r in cur:
            yield AuditEntry(seq=r[0], time=r[1], event=r[2], account=r[3], client=r[4],
                             source=r[5], outcome=r[6], hash=bytes(r[7]))

    def verify_audit(self) -> AuditReport:
        key = self.keys.audit_key
        db_head = self._conn().execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        heads = [("database head", db_head), ("head file", self._read_head_file())]
        wanted = {int(head[0]) for _, head in heads if head is not None}
        prev, last, count = ZERO_HASH, 0, 0
        hashes = {0: ZERO_HASH}      # the chain's hash at the seqs the heads name
        for entry in self.audit_entries():
            count += 1
            if entry.seq != last + 1:
                return AuditReport(count, last + 1, f"entry {last + 1} is missing", last, prev)
            mac = _audit_mac(key, prev, entry.seq, entry.time, entry.event, entry.account,
                             entry.client, entry.source, entry.outcome)
            if not hmac.compare_digest(mac, entry.hash):
                return AuditReport(count, entry.seq, f"entry {entry.seq} was altered", last, prev)
            prev, last = entry.hash, entry.seq
            if last in wanted:
                hashes[last] = prev
        for what, head in heads:
            if head is None:
                continue
            head_seq, head_hash = int(head[0]), bytes(head[1])
            if head_seq > last:
                return AuditReport(count, last + 1, f"entries {last + 1}..{head_seq} were removed "
                                   f"from the end (the {what} is at {head_seq})", last, prev)
            if head_seq < 0 or not hmac.compare_digest(hashes[head_seq], head_hash):
                return AuditReport(count, max(head_seq, 1), f"the {what} does not match entry "
                                   f"{head_seq}", last, prev)
            if what == "database head" and head_seq < last:
                return AuditReport(count, head_seq + 1, f"entries after {head_seq} were written "
                                   "outside otpfast (the database head was not moved)", last, prev)
        return AuditReport(count, None, "ok", last, prev)


def _contribution_aad(account: str, authority_id: int) -> bytes:
    return b"contribution\0" + account.encode() + b"\0" + str(authority_id).encode()


class _SQLiteTransaction(Transaction):
    def __init__(self, store: SQLiteStore, conn):
        self._store = store
        self._conn = conn
        self._head: tuple[int, bytes] | None = None
        self._head_start: int | None = None
        self._pending_audit: list[tuple] = []   # written at commit, in one executemany

    def _run(self, sql: str, params: dict) -> int:
        return self._conn.execute(sql, params).rowcount

    def account(self, name):
        return self._store._select_account(self._conn, name)

    def contributions(self, account):
        return self._store._select_contributions(self._conn, account)

    def add_authority(self, authority_id, credential_hash, now):
        return self._run("INSERT INTO authorities (id, credential_hash, created_at)"
                         " VALUES (:id, :h, :now) ON CONFLICT DO NOTHING",
                         {"id": authority_id, "h": credential_hash, "now": now}) == 1

    def add_client(self, name, account, verifier, credential_hash, mask_key, now):
        enc = self._store.keys.encrypt(mask_key, b"client\0" + name.encode())
        return self._run("INSERT INTO clients (name, account, verifier, credential_hash,"
                         " mask_key_enc, created_at) VALUES (:name, :account, :verifier, :h,"
                         " :mask, :now) ON CONFLICT DO NOTHING",
                         {"name": name, "account": account, "verifier": int(verifier),
                          "h": credential_hash, "mask": enc, "now": now}) == 1

    def _encrypt_material(self, name, material):
        plain = json.dumps(material, sort_keys=True).encode()
        return self._store.keys.encrypt(plain, b"account\0" + name.encode())

    def add_account(self, name, type, params, material, chain_last, now, *, counter=0):
        state = ACCOUNT_PENDING if material is None else ACCOUNT_ACTIVE
        enc = None if material is None else self._encrypt_material(name, material)
        return self._run("INSERT INTO accounts (name, type, params, state, material_enc,"
                         " chain_last, lockout, counter, created_at) VALUES (:name, :type, :params,"
                         " :state, :enc, :chain, :lockout, :counter, :now) ON CONFLICT DO NOTHING",
                         {"name": name, "type": type, "params": json.dumps(params, sort_keys=True),
                          "state": state, "enc": enc, "chain": chain_last,
                          "lockout": int(params["lockout"]), "counter": counter, "now": now}) == 1

    def delete_account(self, name):
        deleted = self._run("DELETE FROM accounts WHERE name = :name", {"name": name}) == 1
        if deleted:
            for table in ("contributions", "issued"):
                self._run(f"DELETE FROM {table} WHERE account = :name", {"name": name})
        return deleted

    def activate_account(self, name, material, chain_last, transcript, *, counter=0):
        return self._run("UPDATE accounts SET state = :active, material_enc = :enc,"
                         " chain_last = :chain, transcript = :t, counter = :counter"
                         " WHERE name = :name AND state = :pending",
                         {"active": ACCOUNT_ACTIVE, "pending": ACCOUNT_PENDING, "name": name,
                          "enc": self._encrypt_material(name, material), "chain": chain_last,
                          "t": transcript, "counter": counter}) == 1

    def advance_counter(self, name, old, new):
        return self._run("UPDATE accounts SET counter = :new WHERE name = :name"
                         " AND counter = :old", {"name": name, "old": old, "new": new}) == 1

    def advance_step(self, name, old, new):
        return self._run("UPDATE accounts SET last_step = :new WHERE name = :name"
                         " AND last_step = :old AND :new > :old",
                         {"name": name, "old": old, "new": new}) == 1

    def advance_chain(self, name, old, new):
        return self._run("UPDATE accounts SET chain_last = :new WHERE name = :name"
                         " AND chain_last = :old", {"name": name, "old": old, "new": new}) == 1

    def record_failure(self, name):
        return self._run("UPDATE accounts SET failures = failures + 1 WHERE name = :name"
                         " AND failures < lockout",
                         {"name": name}) == 1

    def clear_failures(self, name):
        return self._run("UPDATE accounts SET failures = 0 WHERE name = :name"
                         " AND failures < lockout",
                         {"name": name}) == 1

    def unlock(self, name):
        return self._run("UPDATE accounts SET failures = 0 WHERE name = :name",
                         {"name": name}) == 1

    def add_contribution(self, account, authority_id, salt, digest, ciphertext_hash, now):
        enc = self._store.keys.encrypt(digest, _contribution_aad(account, authority_id))
        return self._run("INSERT INTO contributions (account, authority_id, salt, digest_enc,"
                         " ciphertext_hash, created_at) VALUES (:account, :id, :salt, :enc,"
                         " :ch, :now) ON CONFLICT DO NOTHING",
                         {"account": account, "id": authority_id, "salt": salt, "enc": enc,
                          "ch": ciphertext_hash, "now": now}) == 1

    def issue(self, account, client, otp_digest, issued_at, expires_at):
        # lastrowid rather than RETURNING: works with SQLite < 3.35 (PostgreSQL: RETURNING id)
        cur = self._conn.execute("INSERT INTO issued (account, client, otp_digest, issued_at,"
                                 " expires_at) VALUES (:account, :client, :d, :at, :exp)",
                                 {"account": account, "client": client, "d": otp_digest,
                                  "at": issued_at, "exp": expires_at})
        return int(cur.lastrowid)

    def use_issued(self, account, otp_digest, now):
        return self._run("UPDATE issued SET used_at = :now WHERE used_at IS NULL AND id ="
                         " (SELECT id FROM issued WHERE account = :account AND otp_digest = :d"
                         " AND used_at IS NULL AND expires_at > :now ORDER BY id LIMIT 1)",
                         {"now": now, "account": account, "d": otp_digest}) == 1

    def purge_issued(self, before):
        return self._run("DELETE FROM issued WHERE expires_at < :before", {"before": before})

    def audit(self, now, event, account, client, source, outcome):
        if self._head is None:
            row = self._conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            self._head = (int(row[0]), bytes(row[1]))
            self._head_start = self._head[0]
        seq = self._head[0] + 1
        mac = _audit_mac(self._store.keys.audit_key, self._head[1], seq, now, event, account,
                         client, source, outcome)
        self._pending_audit.append({"seq": seq, "time": float(now), "event": event,
                                    "account": account, "client": client, "source": source,
                                    "outcome": outcome, "hash": mac})
        self._head = (seq, mac)

    def _flush_audit_head(self):
        if self._head is None or self._head[0] == self._head_start:
            return
        self._conn.executemany("INSERT INTO audit (seq, time, event, account, client, source,"
                               " outcome, hash) VALUES (:seq, :time, :event, :account, :client,"
                               " :source, :outcome, :hash)", self._pending_audit)
        if self._run("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1"
                     " AND seq = :old", {"seq": self._head[0], "hash": self._head[1],
                                         "old": self._head_start}) != 1:
            raise StoreError("the audit head moved during a transaction")
