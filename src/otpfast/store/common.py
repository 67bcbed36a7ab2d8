"""What both backends share: the audit chain (MAC, check), the head file outside the
database, the associated data of encrypted records and the decoding of account rows.

Backends differ only in SQL dialect and locking; everything that decides whether data is
intact or secret lives here once.
"""
import collections
import hashlib
import hmac
import json
import os
import struct
import threading
import time

from otpfast.errors import StoreError

from .atrest import AtRestKeys, HmacSha256
from .base import (ACCOUNT_ACTIVE, ACCOUNT_PENDING, LOCKED_FOR_GOOD, AccountRecord, AuditReport,
                   AuthorityRecord, ClientRecord, ContributionRecord, Transaction)

ZERO_HASH = bytes(32)
KEY_CHECK_LABEL = b"otpfast key check"
SECRET_CACHE_SIZE = 4096

# the columns of an account row, in the order account_from_row reads them
ACCOUNT_COLUMNS = ("name, type, params, state, material_enc, counter, last_step, chain_last,"
                   " failures, transcript, created_at"
                   ", failed_at, locked_until, locks")     # v3: throttling (services.policy)
AUDIT_COLUMNS = ("seq", "time", "event", "account", "client", "source", "outcome", "hash")


_LENGTH = struct.Struct(">I").pack
_FIELDS: dict[str, bytes] = {}      # length-prefixed UTF-8 of recurring field values


def _field(text: str) -> bytes:
    data = _FIELDS.get(text)
    if data is None:
        raw = text.encode("utf-8")
        data = _LENGTH(len(raw)) + raw
        if len(_FIELDS) < SECRET_CACHE_SIZE:      # names and outcome words, never secrets
            _FIELDS[text] = data
    return data


def audit_mac(key: bytes, prev: bytes, seq: int, time: float, event: str, account: str,
              client: str, source: str, outcome: str) -> bytes:
    """HMAC-SHA256 of one audit entry chained onto the previous entry's MAC: the MAC input
    is ``prev`` then each field (seq, repr(time), event, account, client, source, outcome)
    as a 4-byte big-endian length and its UTF-8 bytes."""
    return hmac.digest(key, b"".join((prev, _field(str(seq)), _field(repr(float(time))),
                                      _field(event), _field(account), _field(client),
                                      _field(source), _field(outcome))), "sha256")


def chain_entries(key, head: tuple[int, bytes], entries: list[tuple]) -> list[tuple]:
    """Audit rows (seq, time, event, account, client, source, outcome, hash) of ``entries`` =
    [(time, event, account, client, source, outcome)], chained onto ``head`` = (seq, hash),
    in one pass. ``key``: the audit key, or its precomputed HmacSha256 (AtRestKeys.audit_mac)."""
    mac = key if isinstance(key, HmacSha256) else HmacSha256(key)
    inner_state, outer_state = mac.inner, mac.outer
    seq, prev = head
    rows = []
    append, join, field, length = rows.append, b"".join, _field, _LENGTH
    # a batch's entries share time and event, and mostly client, source and outcome: their
    # encoded fields are built once per distinct value
    heads: dict = {}
    tails: dict = {}
    for when, event, account, client, source, outcome in entries:
        seq += 1
        seq_text = str(seq).encode("ascii")
        when = float(when)
        middle = heads.get((when, event))
        if middle is None:
            middle = heads[when, event] = field(repr(when)) + field(event)
        tail = tails.get((client, source, outcome))
        if tail is None:
            tail = tails[client, source, outcome] = field(client) + field(source) + field(outcome)
        inner = inner_state.copy()
        inner.update(join((prev, length(len(seq_text)), seq_text, middle, field(account), tail)))
        outer = outer_state.copy()
        outer.update(inner.digest())
        prev = outer.digest()
        append((seq, when, event, account, client, source, outcome, prev))
    return rows


def account_aad(name: str) -> bytes:
    return b"account\0" + name.encode()


def client_aad(name: str) -> bytes:
    return b"client\0" + name.encode()


def contribution_aad(account: str, authority_id: int) -> bytes:
    return b"contribution\0" + account.encode() + b"\0" + str(authority_id).encode()


def encrypt_material(keys: AtRestKeys, name: str, material: dict) -> bytes:
    return keys.encrypt(json.dumps(material, sort_keys=True).encode(), account_aad(name))


def check_chain(audit_key: bytes, entries, heads) -> AuditReport:
    """Walk the audit chain (every MAC, no gap) and compare it with the recorded heads:
    ``heads`` is [(what, (seq, hash) or None)], the database head first. The caller reads
    the database head and the entries in one snapshot, and the head file before it."""
    wanted = {int(head[0]) for _, head in heads if head is not None}
    prev, last, count = ZERO_HASH, 0, 0
    hashes = {0: ZERO_HASH}      # the chain's hash at the seqs the heads name
    for entry in entries:
        count += 1
        if entry.seq != last + 1:
            return AuditReport(count, last + 1, f"entry {last + 1} is missing", last, prev)
        mac = audit_mac(audit_key, prev, entry.seq, entry.time, entry.event, entry.account,
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


class HeadFile:
    """The head of the audit chain (seq and hash of the last entry this process committed),
    kept in a file outside the database: it detects a tail truncation that also rewrites
    the database head.

    Written after each COMMIT that added entries (once per transaction, so once per
    verify_many batch), never moved backwards by this process, and never ahead of the
    database (the COMMIT is durable before the write). Cheap and crash-safe without a
    rename or an fsync per batch: the file holds two fixed slots (bytes 0 and 512, in
    different sectors), each a text line ``<seq> <hash hex> <check>``; writes alternate
    between the slots with one pwrite on a descriptor kept open, and a reader takes the
    valid slot with the highest seq. A write torn by a crash spoils at most one slot, whose
    check then fails, and the other still holds an earlier committed head. A process crash
    loses nothing (the page cache survives); the file is fdatasync'ed at most once per
    ``SYNC_INTERVAL`` seconds and on close, so after a power loss it lags the database by at
    most that much - it is a lower bound on the chain, which is all the check needs. The
    one-line format of earlier versions (``<seq> <hash hex>``) is still read."""

    SLOT = 512
    SYNC_INTERVAL = 1.0

    def __init__(self, path: str | None):
        self.path = path
        self._lock = threading.Lock()
        self._written = 0
        self._fd: int | None = None
        self._slot = 0
        self._synced_at = 0.0
        self._dirty = False

    @staticmethod
    def _check(seq: int, hex_hash: str) -> str:
        return hashlib.sha256(f"{seq} {hex_hash}".encode("ascii")).hexdigest()[:16]

    def _open(self) -> int:
        if self._fd is not None and os.fstat(self._fd).st_nlink > 0:
            return self._fd
        if self._fd is not None:           # the file was removed or replaced: start anew
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._slot = 0
        return self._fd

    def write(self, seq: int, digest: bytes) -> None:
        if self.path is None:
            return
        with self._lock:
            if seq <= self._written:
                return
            fd = self._open()
            hex_hash = digest.hex()
            line = f"{seq} {hex_hash} {self._check(seq, hex_hash)}\n".encode("ascii")
            os.pwrite(fd, line.ljust(self.SLOT - 1, b" ") + b"\n", self._slot * self.SLOT)
            self._slot ^= 1
            self._written = seq
            self._dirty = True
            now = time.monotonic()
            if now - self._synced_at >= self.SYNC_INTERVAL:
                os.fdatasync(fd)
                self._synced_at, self._dirty = now, False

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                if self._dirty:
                    os.fdatasync(self._fd)
                    self._dirty = False
                os.close(self._fd)
                self._fd = None

    def read(self) -> tuple[int, bytes] | None:
        """(seq, hash) of the newest valid slot; None without a file; (-1, b"") when no
        slot is valid."""
        if self.path is None:
            return None
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(2 * self.SLOT)
        except FileNotFoundError:
            return None
        best = None
        for start in (0, self.SLOT):
            fields = data[start:start + self.SLOT].split()
            try:
                seq, hex_hash = int(fields[0]), fields[1].decode("ascii")
                digest = bytes.fromhex(hex_hash)
                legacy = len(data) < self.SLOT and len(fields) == 2
                if not legacy and fields[2].decode("ascii") != self._check(seq, hex_hash):
                    continue
            except (IndexError, ValueError):
                continue
            if best is None or seq > best[0]:
                best = (seq, digest)
        return (-1, b"") if best is None else best


class AccountDecoder:
    """Turns account rows into AccountRecords. Decrypted material is kept in a small LRU in
    memory (never on disk), keyed by (name, ciphertext): a re-encrypted or replaced secret
    has a new ciphertext (fresh nonce), so a stale entry can never be returned. Whole
    records are kept too, keyed by the complete row (any change to the row is a miss), and
    the decoded fixed part of a row (params, material, transcript), keyed by every column
    but the four a verification moves, so a moved counter costs no decoding."""

    def __init__(self, keys: AtRestKeys, size: int = SECRET_CACHE_SIZE):
        self._keys = keys
        self._size = size
        self._material: collections.OrderedDict = collections.OrderedDict()
        self._records: collections.OrderedDict = collections.OrderedDict()  # row -> record
        self._fixed: collections.OrderedDict = collections.OrderedDict()    # fixed part -> decoded
        self._params: dict = {}            # params JSON text -> dict (not secret)
        self._lock = threading.Lock()

    def _material_of(self, name: str, material_enc: bytes) -> dict:
        cache_key = (name, material_enc)
        with self._lock:
            material = self._material.get(cache_key)
            if material is not None:
                self._material.move_to_end(cache_key)
                return material
        material = json.loads(self._keys.decrypt(material_enc, account_aad(name)))
        with self._lock:
            self._material[cache_key] = material
            while len(self._material) > self._size:
                self._material.popitem(last=False)
        return material

    def account(self, row) -> AccountRecord:
        row = tuple(row)
        record = self._records.get(row)
        if record is not None:
            return record
        (name, type_, params, state, material_enc, counter, last_step, chain_last, failures,
         transcript, created_at, failed_at, locked_until, locks) = row
        # the row's fixed part (all but the verification state a decision moves): decoded once
        fixed_key = (name, type_, params, state, material_enc, transcript, created_at)
        fixed = self._fixed.get(fixed_key)
        if fixed is None:
            material = (None if material_enc is None
                        else self._material_of(name, bytes(material_enc)))
            parsed = self._params.get(params)
            if parsed is None:
                parsed = json.loads(params)
                if len(self._params) > self._size:
                    self._params.clear()
                self._params[params] = parsed
            fixed = (parsed, material, None if transcript is None else bytes(transcript))
            with self._lock:
                self._fixed[fixed_key] = fixed
                while len(self._fixed) > self._size:
                    self._fixed.popitem(last=False)
        parsed, material, transcript = fixed
        record = AccountRecord(name=name, type=type_, params=parsed, state=state,
                               material=material, counter=counter, last_step=last_step,
                               chain_last=None if chain_last is None else bytes(chain_last),
                               failures=failures, transcript=transcript,
                               created_at=created_at, failed_at=failed_at,
                               locked_until=locked_until, locks=locks)
        with self._lock:
            self._records[row] = record
            while len(self._records) > self._size:
                self._records.popitem(last=False)
        return record

    def forget(self, name: str) -> None:
        """Drop the cached material and records of an account (deleted or replaced)."""
        with self._lock:
            for cache_key in [k for k in self._material if k[0] == name]:
                del self._material[cache_key]
            for row in [r for r in self._records if r[0] == name]:
                del self._records[row]
            for fixed_key in [k for k in self._fixed if k[0] == name]:
                del self._fixed[fixed_key]


def check_key(keys: AtRestKeys, blob) -> None:
    """Raise StoreError unless ``blob`` (the store's key_check value) opens with ``keys``."""
    try:
        ok = keys.decrypt(bytes(blob), KEY_CHECK_LABEL) == KEY_CHECK_LABEL
    except StoreError:
        ok = False
    if not ok:
        raise StoreError("the at-rest key does not match this store")


class SqlReads:
    """The Store reads whose SQL is the same on every backend (``:name`` parameters;
    ``_sql`` converts them for the driver). Mixed into SQLiteStore and PostgresStore."""

    @staticmethod
    def _sql(sql: str) -> str:
        return sql

    def _select_account(self, conn, name):
        row = conn.execute(self._sql(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = :name"),
                           {"name": name}).fetchone()
        return None if row is None else self._decoder.account(row)

    def _select_contributions(self, conn, account):
        rows = conn.execute(self._sql("SELECT account, authority_id, salt, digest_enc, ciphertext_hash,"
                                      " created_at FROM contributions WHERE account = :account"
                                      " ORDER BY authority_id"), {"account": account}).fetchall()
        return [ContributionRecord(
            account=r[0], authority_id=r[1], salt=bytes(r[2]),
            digest=self.keys.decrypt(bytes(r[3]), contribution_aad(r[0], r[1])),
            ciphertext_hash=bytes(r[4]), created_at=r[5]) for r in rows]
    def account(self, name: str) -> AccountRecord | None:
        return self._select_account(self._conn(), name)

    def client(self, name: str) -> ClientRecord | None:
        row = self._conn().execute(self._sql(
            "SELECT name, account, verifier, credential_hash, mask_key_enc, created_at"
            " FROM clients WHERE name = :name"), {"name": name}).fetchone()
        if row is None:
            return None
        mask_key = self.keys.decrypt(bytes(row[4]), client_aad(row[0]))
        return ClientRecord(name=row[0], account=row[1], verifier=bool(row[2]),
                            credential_hash=bytes(row[3]), mask_key=mask_key,
                            created_at=row[5])

    def authority(self, authority_id: int) -> AuthorityRecord | None:
        row = self._conn().execute(self._sql("SELECT id, credential_hash, created_at FROM authorities"
                                             " WHERE id = :id"), {"id": authority_id}).fetchone()
        if row is None:
            return None
        return AuthorityRecord(id=row[0], credential_hash=bytes(row[1]), created_at=row[2])

    def contributions(self, account: str) -> list[ContributionRecord]:
        return self._select_contributions(self._conn(), account)


class SqlTransaction(Transaction):
    """The Transaction methods whose SQL is the same on every backend, written once with
    ``:name`` parameters; a backend whose driver wants another style overrides ``_sql``.
    Backend-specific statements (batched updates, RETURNING, casts) live in the subclasses."""

    def __init__(self, store, conn):
        self._store = store
        self._conn = conn
        self._pending_audit: list[tuple] = []   # chained and written at commit
        self.touched_accounts: set[str] = set()  # accounts this transaction may have changed

    def _sql(self, sql: str) -> str:
        return sql

    def _run(self, sql: str, params: dict) -> int:
        return self._conn.execute(self._sql(sql), params).rowcount

    def account(self, name):
        return self._store._select_account(self._conn, name)

    def accounts(self, names):
        return self._store._select_accounts(self._conn, names)

    def contributions(self, account):
        return self._store._select_contributions(self._conn, account)

    def add_authority(self, authority_id, credential_hash, now):
        return self._run("INSERT INTO authorities (id, credential_hash, created_at)"
                         " VALUES (:id, :h, :now) ON CONFLICT DO NOTHING",
                         {"id": authority_id, "h": credential_hash, "now": now}) == 1

    def delete_account(self, name):
        self.touched_accounts.add(name)
        deleted = self._run("DELETE FROM accounts WHERE name = :name", {"name": name}) == 1
        if deleted:
            for table in ("contributions", "issued"):
                self._run(f"DELETE FROM {table} WHERE account = :name", {"name": name})
            self._store._decoder.forget(name)
        return deleted

    def activate_account(self, name, material, chain_last, transcript, *, counter=0):
        self.touched_accounts.add(name)
        return self._run("UPDATE accounts SET state = :active, material_enc = :enc,"
                         " chain_last = :chain, transcript = :t, counter = :counter"
                         " WHERE name = :name AND state = :pending",
                         {"active": ACCOUNT_ACTIVE, "pending": ACCOUNT_PENDING, "name": name,
                          "enc": encrypt_material(self._store.keys, name, material),
                          "chain": chain_last, "t": transcript, "counter": counter}) == 1

    def advance_counter(self, name, old, new):
        self.touched_accounts.add(name)
        return self._run("UPDATE accounts SET counter = :new WHERE name = :name"
                         " AND counter = :old", {"name": name, "old": old, "new": new}) == 1

    def advance_chain(self, name, old, new):
        self.touched_accounts.add(name)
        return self._run("UPDATE accounts SET chain_last = :new WHERE name = :name"
                         " AND chain_last = :old", {"name": name, "old": old, "new": new}) == 1

    def record_failure(self, name):
        self.touched_accounts.add(name)
        return self._run("UPDATE accounts SET failures = failures + 1 WHERE name = :name"
                         " AND failures < lockout",
                         {"name": name}) == 1

    def clear_failures(self, name):
        self.touched_accounts.add(name)
        return self._run("UPDATE accounts SET failures = 0 WHERE name = :name"
                         " AND failures < lockout",
                         {"name": name}) == 1

    def unlock(self, name):
        self.touched_accounts.add(name)
        return self._run("UPDATE accounts SET failures = 0, failed_at = 0, locked_until = 0,"
                         " locks = 0 WHERE name = :name", {"name": name}) == 1

    def lock(self, name):
        self.touched_accounts.add(name)
        return self._run("UPDATE accounts SET locked_until = :forever WHERE name = :name",
                         {"name": name, "forever": LOCKED_FOR_GOOD}) == 1

    def purge_issued(self, before):
        return self._run("DELETE FROM issued WHERE expires_at < :before", {"before": before})

    def audit(self, now, event, account, client, source, outcome):
        self._pending_audit.append((now, event, account, client, source, outcome))

    def audit_many(self, entries):
        self._pending_audit.extend(entries)

    def add_account(self, name, type, params, material, chain_last, now, *, counter=0):
        self.touched_accounts.add(name)
        state = ACCOUNT_PENDING if material is None else ACCOUNT_ACTIVE
        enc = None if material is None else encrypt_material(self._store.keys, name, material)
        return self._run("INSERT INTO accounts (name, type, params, state, material_enc,"
                         " chain_last, lockout, counter, created_at) VALUES (:name, :type, :params,"
                         " :state, :enc, :chain, :lockout, :counter, :now) ON CONFLICT DO NOTHING",
                         {"name": name, "type": type, "params": json.dumps(params, sort_keys=True),
                          "state": state, "enc": enc, "chain": chain_last,
                          "lockout": int(params["lockout"]), "counter": counter, "now": now}) == 1

    def add_contribution(self, account, authority_id, salt, digest, ciphertext_hash, now):
        enc = self._store.keys.encrypt(digest, contribution_aad(account, authority_id))
        return self._run("INSERT INTO contributions (account, authority_id, salt, digest_enc,"
                         " ciphertext_hash, created_at) VALUES (:account, :id, :salt, :enc,"
                         " :ch, :now) ON CONFLICT DO NOTHING",
                         {"account": account, "id": authority_id, "salt": salt, "enc": enc,
                          "ch": ciphertext_hash, "now": now}) == 1

    def use_issued(self, account, otp_digest, now):
        return self._run("UPDATE issued SET used_at = :now WHERE used_at IS NULL AND id ="
                         " (SELECT id FROM issued WHERE account = :account AND otp_digest = :d"
                         " AND used_at IS NULL AND expires_at > :now ORDER BY id LIMIT 1)",
                         {"now": now, "account": account, "d": otp_digest}) == 1

    def add_client(self, name, account, verifier, credential_hash, mask_key, now):
        enc = self._store.keys.encrypt(mask_key, client_aad(name))
        return self._run("INSERT INTO clients (name, account, verifier, credential_hash,"
                         " mask_key_enc, created_at) VALUES (:name, :account, :verifier, :h,"
                         " :mask, :now) ON CONFLICT DO NOTHING",
                         {"name": name, "account": account, "verifier": bool(verifier),
                          "h": credential_hash, "mask": enc, "now": now}) == 1
