"""What both backends share: the associated data of encrypted records, the decoding of
account rows, the SQL both dialects accept, and the row MACs (written and checked here; the
rules are in otpfast.store.rows; the audit chain is in otpfast.store.chain).

Backends differ only in SQL dialect and locking; everything that decides whether data is
intact or secret lives here once.
"""
import abc
import collections
import hmac
import json
import operator
import secrets
import threading
import time

from otpfast.errors import StoreError

from . import rows as row_auth
from .archive import read_anchor
from .atrest import AtRestKeys
from .base import (ACCOUNT_ACTIVE, ACCOUNT_PENDING, LOCKED_FOR_GOOD, AccountRecord,
                   AuthorityRecord, ClientRecord, ContributionRecord, TokenRecord, Transaction)
# the audit chain lives in .chain; its names stay importable from here
from .chain import ZERO_HASH, HeadFile, audit_mac, chain_entries, check_chain  # noqa: F401
from .rows import ROW_COLUMNS, TOKEN_NAMES, issued_used_macs, refuse, row_mac, row_macs, row_ok

KEY_CHECK_LABEL = b"otpfast key check"
SECRET_CACHE_SIZE = 4096

# the columns of an account row, in the order account_from_row reads them
ACCOUNT_COLUMNS = ("name, type, params, state, material_enc, counter, last_step, chain_last,"
                   " failures, transcript, created_at"
                   ", failed_at, locked_until, locks")     # throttling (services.policy)
AUDIT_COLUMNS = ("seq", "time", "event", "account", "client", "source", "outcome", "hash",
                 "rows")
# row authentication (otpfast.store.rows): every ACCOUNT_COLUMNS column is covered
ACCOUNT_NAMES = tuple(name.strip() for name in ACCOUNT_COLUMNS.split(","))
ACCOUNT_SELECT = f"{ACCOUNT_COLUMNS}, {ROW_COLUMNS}"
TABLES = row_auth.tables(ACCOUNT_NAMES)
TOKEN_SELECT = f"{', '.join(TOKEN_NAMES)}, {ROW_COLUMNS}"
SERIAL_PREFIX = "OTPF"          # generated serials: OTPF + 8 random digits
# the tables the row-authentication migration (v4) sealed; later tables seal themselves
V4_TABLES = ("clients", "authorities", "accounts", "issued")


def new_serial() -> str:
    return "%s%08d" % (SERIAL_PREFIX, secrets.randbelow(10**8))


def token_aad(serial: str) -> bytes:
    return b"token\0" + serial.encode()


def account_aad(name: str) -> bytes:
    return b"account\0" + name.encode()


def contribution_aad(account: str, authority_id: int) -> bytes:
    return b"contribution\0" + account.encode() + b"\0" + str(authority_id).encode()


def encrypt_material(keys: AtRestKeys, name: str, material: dict) -> bytes:
    return keys.encrypt(json.dumps(material, sort_keys=True).encode(), account_aad(name))


class AccountDecoder:
    """Turns account rows into AccountRecords. Decrypted material is kept in a small LRU in
    memory (never on disk), keyed by (name, ciphertext): a re-encrypted or replaced secret
    has a new ciphertext (fresh nonce), so a stale entry can never be returned. Whole
    records are kept too, keyed by the complete row (any change to the row is a miss), and
    the decoded fixed part of a row (params, material, transcript), keyed by every column
    but the four a verification moves, so a moved counter costs no decoding.

    Rows are (ACCOUNT_COLUMNS..., ver, mac). A row whose MAC fails, whose material does not
    decrypt, or whose version is older than one this decoder has already returned for the
    account (a rollback, see otpfast.store.rows) is refused: :meth:`account` logs it and
    returns None. The MAC is checked once per distinct row (the record cache)."""

    def __init__(self, keys: AtRestKeys, size: int = SECRET_CACHE_SIZE):
        self._keys = keys
        self._versions: dict = {}          # name -> newest row version returned
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

    def account(self, row) -> AccountRecord | None:
        row = tuple(row)
        record = self._records.get(row)
        if record is None:
            try:
                record = self._decode(row)
            except (StoreError, ValueError, TypeError):
                record = None
            if record is None:
                refuse("accounts", row[0])
                return None
        return self._not_rolled_back(record)

    def _not_rolled_back(self, record: AccountRecord) -> AccountRecord | None:
        ver = record.row[-1]
        seen = self._versions.get(record.name)
        if seen is not None and ver < seen:
            refuse("accounts", record.name, f"is an older copy (version {ver}) than one "
                   f"already read (version {seen})")
            return None
        if seen is None and len(self._versions) >= row_auth.HIGH_WATER_SIZE:
            self._versions.clear()
        self._versions[record.name] = ver
        return record

    def written(self, name: str, ver: int) -> None:
        """This process committed version ``ver`` of the account's row."""
        self._versions[name] = max(ver, self._versions.get(name, 0))

    def _decode(self, row) -> AccountRecord | None:
        values, ver, mac = row[:-2], row[-2], row[-1]
        if not row_ok(self._keys.row_mac, "a", values, ver, mac):
            return None
        (name, type_, params, state, material_enc, counter, last_step, chain_last, failures,
         transcript, created_at, failed_at, locked_until, locks) = values
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
                               locked_until=locked_until, locks=locks, row=(*values, ver))
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
            self._versions.pop(name, None)


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
    ``_sql`` converts them for the driver). Mixed into SQLiteStore and PostgresStore.
    Rows that fail their MAC are refused (None, logged): otpfast.store.rows."""

    @staticmethod
    def _sql(sql: str) -> str:
        return sql

    def _select_account(self, conn, name):
        row = conn.execute(self._sql(f"SELECT {ACCOUNT_SELECT} FROM accounts WHERE name = :name"),
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

    _FOR_UPDATE = ""        # PostgreSQL: " FOR UPDATE" (SQLite's write lock covers the file)

    def _authentic_row(self, conn, table: str, key, *, lock: bool = False):
        """The row ``key`` of ``table`` (covered columns, ver, mac) if it passes its MAC;
        None if it is absent or refused (logged). ``lock``: keep the row locked until the
        transaction ends (no other writer can change it between this check and a write)."""
        tag, columns, key_column = TABLES[table]
        row = conn.execute(self._sql(f"SELECT {', '.join(columns)}, {ROW_COLUMNS} FROM {table}"
                                     f" WHERE {key_column} = :key"
                                     + (self._FOR_UPDATE if lock else "")),
                           {"key": key}).fetchone()
        if row is None:
            return None
        if not row_ok(self.keys.row_mac, tag, row[:-2], row[-2], row[-1]):
            refuse(table, key)
            return None
        return row

    def account(self, name: str) -> AccountRecord | None:
        return self._select_account(self._conn(), name)

    def _token_from_row(self, row) -> TokenRecord | None:
        """A tokens row (TOKEN_NAMES..., ver, mac) as a TokenRecord; None if it fails its
        MAC or its material does not decrypt (refused, logged)."""
        row = tuple(row)
        values, ver, mac = row[:-2], row[-2], row[-1]
        try:
            if not row_ok(self.keys.row_mac, "t", values, ver, mac):
                raise StoreError("MAC")
            (serial, user, type_, params, description, enabled, main, material_enc, counter,
             last_step, chain_last, created_at) = values
            material = None
            if material_enc is not None:
                material = json.loads(self.keys.decrypt(bytes(material_enc), token_aad(serial)))
        except (StoreError, ValueError, TypeError):
            refuse("tokens", row[0])
            return None
        seen = self._token_seen()
        if ver < seen.get(serial, 0):
            refuse("tokens", serial, f"is an older copy (version {ver}) than one already "
                   f"read (version {seen[serial]})")
            return None
        seen[serial] = ver
        return TokenRecord(serial=serial, user=user, type=type_, params=json.loads(params),
                           description=description, enabled=bool(enabled), main=bool(main),
                           material=material, counter=counter, last_step=last_step,
                           chain_last=None if chain_last is None else bytes(chain_last),
                           created_at=created_at, row=(*values, ver))

    def _select_tokens(self, conn, where: str = "", params: dict | None = None) -> list:
        rows = conn.execute(self._sql(f"SELECT {TOKEN_SELECT} FROM tokens {where}"
                                      " ORDER BY user_name, serial"), params or {}).fetchall()
        return [token for token in map(self._token_from_row, rows) if token is not None]

    def token(self, serial: str) -> TokenRecord | None:
        found = self._select_tokens(self._conn(), "WHERE serial = :serial", {"serial": serial})
        return found[0] if found else None

    def tokens(self, user: str | None = None) -> list[TokenRecord]:
        if user is None:
            return self._select_tokens(self._conn())
        return self._select_tokens(self._conn(), "WHERE user_name = :user", {"user": user})

    def client(self, name: str) -> ClientRecord | None:
        return self._select_client(self._conn(), name)

    def _select_client(self, conn, name: str) -> ClientRecord | None:
        row = self._authentic_row(conn, "clients", name)
        if row is None:
            return None
        return ClientRecord(name=row[0], account=row[1], verifier=bool(row[2]),
                            credential_hash=bytes(row[3]), created_at=row[5],
                            admin=bool(row[6]))

    def authority(self, authority_id: int) -> AuthorityRecord | None:
        row = self._authentic_row(self._conn(), "authorities", authority_id)
        if row is None:
            return None
        return AuthorityRecord(id=row[0], credential_hash=bytes(row[1]), created_at=row[2])

    def contributions(self, account: str) -> list[ContributionRecord]:
        return self._select_contributions(self._conn(), account)

    def _authentic_rows(self, table: str, order: str):
        """Every row of ``table`` that passes its MAC (the others refused: logged)."""
        tag, columns, key_column = TABLES[table]
        rows = self._conn().execute(f"SELECT {', '.join(columns)}, {ROW_COLUMNS} FROM {table}"
                                    f" ORDER BY {order}").fetchall()
        key_index = columns.index(key_column)
        kept = []
        for row in rows:
            if row_ok(self.keys.row_mac, tag, row[:-2], row[-2], row[-1]):
                kept.append(row)
            else:
                refuse(table, row[key_index])
        return kept

    def client_list(self) -> list[ClientRecord]:
        return [ClientRecord(name=row[0], account=row[1], verifier=bool(row[2]),
                             credential_hash=bytes(row[3]), created_at=row[5],
                             admin=bool(row[6]))
                for row in self._authentic_rows("clients", "name")]

    def authority_list(self) -> list[AuthorityRecord]:
        return [AuthorityRecord(id=row[0], credential_hash=bytes(row[1]), created_at=row[2])
                for row in self._authentic_rows("authorities", "id")]

    def checked_audit_entries(self):
        anchor = read_anchor(self, self._conn())
        prev = None if isinstance(anchor, str) else (int(anchor[0]), bytes(anchor[1]))
        key = self.keys.audit_key
        for entry in self.audit_entries():
            intact = (prev is not None and prev[0] == entry.seq - 1 and hmac.compare_digest(
                audit_mac(key, prev[1], entry.seq, entry.time, entry.event, entry.account,
                          entry.client, entry.source, entry.outcome, entry.rows), entry.hash))
            prev = (entry.seq, entry.hash)
            yield entry, intact

    def _check_rows(self, conn, latest: dict, anchor_seq: int) -> list[str]:
        """Every authenticated row against its MAC and the audit log (``audit verify``)."""
        def rows_of(table, columns):
            return conn.execute(f"SELECT {', '.join(columns)}, {ROW_COLUMNS} FROM {table}"
                                ).fetchall()
        return row_auth.check_rows(self.keys, TABLES, latest, rows_of, anchor_seq)

    def _after_commit(self, tx) -> None:
        """What a committed transaction wrote becomes this process's high-water mark: the
        issued rows it marked used and the versions of the accounts it moved; a later
        read of an older copy is a rollback (otpfast.store.rows)."""
        if tx.used_ids:
            used = self._issued_marked()
            if len(used) + len(tx.used_ids) > row_auth.HIGH_WATER_SIZE:
                used.clear()
            used.update(dict.fromkeys(tx.used_ids, tx.version))
        for name in tx.moved:
            self._decoder.written(name, tx.version)
        seen = self._token_seen()
        for (tag, key), what in tx.written.items():
            if tag == "t" and what is None:
                seen[key] = max(tx.version, seen.get(key, 0))
            elif tag == "t" and what == "-":
                seen.pop(key, None)

    def _issued_marked(self) -> dict:
        """issued id -> the version with which this process marked its row used: a copy
        of that row read as unused with an older version is a rollback (a row with a newer
        one is a later OTP that got the same id after the first expired and was purged)."""
        marked = self.__dict__.get("_issued_marks")
        if marked is None:
            marked = self.__dict__["_issued_marks"] = {}
        return marked

    def _token_seen(self) -> dict:
        """serial -> the newest version of its row this process has read or written (the
        tokens' high-water mark, as AccountDecoder keeps the accounts')."""
        seen = self.__dict__.get("_token_versions")
        if seen is None or len(seen) >= row_auth.HIGH_WATER_SIZE:
            seen = self.__dict__["_token_versions"] = {}
        return seen


# the account columns a verification batch moves (Transaction.update_accounts): each is an
# attribute of the new state handed to update_accounts
def _decoy_values(record: AccountRecord) -> list:
    """Column values of the shape a real account row has, for a decoy's MAC (equal work)."""
    values = [getattr(record, column, None) for column in ACCOUNT_NAMES]
    values[ACCOUNT_NAMES.index("params")] = json.dumps(record.params, sort_keys=True)
    values[ACCOUNT_NAMES.index("material_enc")] = bytes(72)
    return values


MOVED_COLUMNS = ("counter", "last_step", "chain_last", "failures", "failed_at", "locked_until",
                 "locks")
_moved_values = operator.attrgetter(*MOVED_COLUMNS)
# a moved row's MAC input from (covered values as read) + moved values + (version,): each
# ACCOUNT_NAMES column from the first part unless it moves, then the version
_moved_row = operator.itemgetter(*(
    len(ACCOUNT_NAMES) + MOVED_COLUMNS.index(column) if column in MOVED_COLUMNS else index
    for index, column in enumerate(ACCOUNT_NAMES)), len(ACCOUNT_NAMES) + len(MOVED_COLUMNS))


def moved_record(old: AccountRecord, new, row: tuple) -> AccountRecord:
    """``old`` with the MOVED_COLUMNS of ``new`` and the stored ``row``: what an account
    row holds after update_accounts (dataclasses.replace, written out: a verification
    batch builds one per account it moves)."""
    return AccountRecord(
        name=old.name, type=old.type, params=old.params, state=old.state,
        material=old.material, counter=new.counter, last_step=new.last_step,
        chain_last=new.chain_last, failures=new.failures, transcript=old.transcript,
        created_at=old.created_at, failed_at=new.failed_at, locked_until=new.locked_until,
        locks=new.locks, row=row)


class SqlTransaction(Transaction):
    """The Transaction methods whose SQL is the same on every backend, written once with
    ``:name`` parameters; a backend whose driver wants another style overrides ``_sql``.
    Backend-specific statements (batched updates, RETURNING, casts) live in the subclasses.

    Row authentication (otpfast.store.rows): a write first checks the row's MAC (a refused
    row is not changed: False), then the row is re-sealed with this transaction's version
    (the seq of its first audit entry) and recorded in that entry."""

    def __init__(self, store, conn):
        self._store = store
        self._conn = conn
        self._pending_audit: list[tuple] = []   # chained and written at commit
        self.touched_accounts: set[str] = set()  # accounts this transaction may have changed
        self.written: dict = {}                  # (tag, key) -> None | "-" (audit records)
        self.used_ids: list[int] = []            # issued rows marked used
        self.moved: list[str] = []               # accounts update_accounts moved
        self._version: int | None = None
        self._issued_macs: dict = {}             # id -> (now, its MAC once used at now)
        self._decoy_row = 1                      # the decoy row it writes (one per chain)

    def _sql(self, sql: str) -> str:
        return sql

    def _run(self, sql: str, params: dict) -> int:
        return self._conn.execute(self._sql(sql), params).rowcount

    @property
    def version(self) -> int:
        """The seq this transaction's first audit entry gets: the version of its rows."""
        if self._version is None:
            self._version = self._head_seq() + 1
        return self._version

    @abc.abstractmethod
    def _head_seq(self) -> int:
        """The audit head's seq, read inside this transaction (backend SQL)."""

    def _audit_rows(self, version: int | None = None):
        """The pending entries and the ``rows`` field of the first: a transaction that
        wrote rows and audited nothing gets one entry recording them. ``version``: the
        rows' version when it is not the first entry's seq (see rows.records_text)."""
        rows = row_auth.records_text(self.written, version)
        if rows is not None and not self._pending_audit:
            # the store never reads the clock for decisions; this only dates the record
            self._pending_audit.append((time.time(), "store", "-", "-", "-", "rows-written"))
        return rows

    def _seal(self, table: str, key) -> None:
        """Re-MAC one row as it now is, with this transaction's version."""
        tag, columns, key_column = TABLES[table]
        row = self._conn.execute(self._sql(f"SELECT {', '.join(columns)} FROM {table}"
                                           f" WHERE {key_column} = :key"),
                                 {"key": key}).fetchone()
        ver = self.version
        # versions of one row only grow (a concurrent writer on another node that drew a
        # later version first: this transaction fails and nothing is written)
        if self._run(f"UPDATE {table} SET ver = :ver, mac = :mac WHERE {key_column} = :key"
                     " AND (ver IS NULL OR ver <= :ver)",
                     {"ver": ver, "mac": row_mac(self._store.keys.row_mac, tag, row, ver),
                      "key": key}) != 1:
            raise StoreError(f"the {table} row {key!r} was written concurrently: try again")
        self.written[tag, key] = None

    def _change(self, table: str, key, sql: str, params: dict) -> bool:
        """One conditional UPDATE of one row, only if the row is authentic; then re-seal."""
        if self._store._authentic_row(self._conn, table, key, lock=True) is None:
            return False
        if self._run(sql, params) != 1:
            return False
        self._seal(table, key)
        return True

    def account(self, name):
        return self._store._select_account(self._conn, name)

    def accounts(self, names):
        return self._store._select_accounts(self._conn, names)

    def contributions(self, account):
        return self._store._select_contributions(self._conn, account)

    def clients(self, names):
        found = {name: self._store._select_client(self._conn, name) for name in dict.fromkeys(names)}
        return {name: record for name, record in found.items() if record is not None}

    def add_authority(self, authority_id, credential_hash, now):
        added = self._run("INSERT INTO authorities (id, credential_hash, created_at)"
                          " VALUES (:id, :h, :now) ON CONFLICT DO NOTHING",
                          {"id": authority_id, "h": credential_hash, "now": now}) == 1
        if added:
            self._seal("authorities", authority_id)
        return added

    def delete_client(self, name):
        row = self._store._authentic_row(self._conn, "clients", name, lock=True)
        if row is None or self._run("DELETE FROM clients WHERE name = :name",
                                    {"name": name}) != 1:
            return None
        self.written["c", name] = "-"
        return ClientRecord(name=row[0], account=row[1], verifier=bool(row[2]),
                            credential_hash=bytes(row[3]), created_at=row[5],
                            admin=bool(row[6]))

    def delete_clients_of(self, account):
        names = [row[0] for row in self._conn.execute(
            self._sql("SELECT name FROM clients WHERE account = :account ORDER BY name"),
            {"account": account}).fetchall()]
        for name in names:
            self._run("DELETE FROM clients WHERE name = :name", {"name": name})
            self.written["c", name] = "-"
        return names

    def delete_authority(self, authority_id):
        if self._store._authentic_row(self._conn, "authorities", authority_id,
                                      lock=True) is None:
            return False
        if self._run("DELETE FROM authorities WHERE id = :id", {"id": authority_id}) != 1:
            return False
        self.written["u", authority_id] = "-"
        return True

    def delete_account(self, name):
        self.touched_accounts.add(name)
        deleted = self._run("DELETE FROM accounts WHERE name = :name", {"name": name}) == 1
        if deleted:
            for table in ("contributions", "issued"):
                self._run(f"DELETE FROM {table} WHERE account = :name", {"name": name})
            for (serial,) in self._conn.execute(
                    self._sql("SELECT serial FROM tokens WHERE user_name = :name"),
                    {"name": name}).fetchall():
                self.written["t", serial] = "-"
            self._run("DELETE FROM tokens WHERE user_name = :name", {"name": name})
            self._store._decoder.forget(name)
            self.written["a", name] = "-"
        return deleted

    def activate_account(self, name, material, chain_last, transcript, *, counter=0):
        self.touched_accounts.add(name)
        return self._change("accounts", name,
                            "UPDATE accounts SET state = :active, material_enc = :enc,"
                            " chain_last = :chain, transcript = :t, counter = :counter"
                            " WHERE name = :name AND state = :pending",
                            {"active": ACCOUNT_ACTIVE, "pending": ACCOUNT_PENDING, "name": name,
                             "enc": encrypt_material(self._store.keys, name, material),
                             "chain": chain_last, "t": transcript, "counter": counter})

    def advance_counter(self, name, old, new):
        self.touched_accounts.add(name)
        return self._change("accounts", name,
                            "UPDATE accounts SET counter = :new WHERE name = :name"
                            " AND counter = :old", {"name": name, "old": old, "new": new})

    def advance_chain(self, name, old, new):
        self.touched_accounts.add(name)
        return self._change("accounts", name,
                            "UPDATE accounts SET chain_last = :new WHERE name = :name"
                            " AND chain_last = :old", {"name": name, "old": old, "new": new})

    def advance_step(self, name, old, new):
        self.touched_accounts.add(name)
        if not new > old:
            return False
        return self._change("accounts", name,
                            "UPDATE accounts SET last_step = :new WHERE name = :name"
                            " AND last_step = :old", {"name": name, "old": old, "new": new})

    def record_failure(self, name):
        self.touched_accounts.add(name)
        return self._change("accounts", name,
                            "UPDATE accounts SET failures = failures + 1 WHERE name = :name"
                            " AND failures < lockout", {"name": name})

    def clear_failures(self, name):
        self.touched_accounts.add(name)
        return self._change("accounts", name,
                            "UPDATE accounts SET failures = 0 WHERE name = :name"
                            " AND failures < lockout", {"name": name})

    def unlock(self, name):
        self.touched_accounts.add(name)
        return self._change("accounts", name,
                            "UPDATE accounts SET failures = 0, failed_at = 0, locked_until = 0,"
                            " locks = 0 WHERE name = :name", {"name": name})

    def lock(self, name):
        self.touched_accounts.add(name)
        return self._change("accounts", name,
                            "UPDATE accounts SET locked_until = :forever WHERE name = :name",
                            {"name": name, "forever": LOCKED_FOR_GOOD})

    def _write_decoys(self, changes, sealed) -> None:
        """Verification decoys (unknown accounts, see services.distribution) write a row as
        a real account's failure does, so that the store's work does not tell them apart;
        the decoy table's one row holds nothing of value."""
        macs = [mac for (old, _), (_, mac) in zip(changes, sealed) if not old.row]
        if macs:
            self._run("UPDATE decoy SET writes = writes + :n, mac = :mac WHERE id = :id",
                      {"n": len(macs), "mac": macs[-1], "id": self._decoy_row})

    def _moved_rows(self, changes):
        """For update_accounts: per (old, new), the new row's covered values and its MAC
        (version: this transaction's; one core call for the batch)."""
        ver = self.version
        rows, written, moved = [], self.written, self.moved
        for old, new in changes:
            # a record without a row is a verification decoy (an unknown account): its MAC
            # is computed all the same (equal cost), but its UPDATE matches no row
            read = old.row[:-1] if old.row else tuple(_decoy_values(old))
            rows.append(_moved_row(read + _moved_values(new) + (ver,)))
            if old.row:
                written["a", old.name] = None
                moved.append(old.name)
            else:
                written["decoy", old.name] = None     # a tag no table has
        macs = row_macs(self._store.keys, "a", rows)
        return ver, [(row[:-1], mac) for row, mac in zip(rows, macs)]

    def _request_mac(self, client: str, request_id: str, accepted: bool, at: float) -> bytes:
        # keyed like a row (no version: a row copied under another pair fails; a deleted
        # one only makes a retry be decided afresh)
        return row_mac(self._store.keys.row_mac, "r", (client, request_id, int(accepted), at), 0)

    def request_outcomes(self, keys):
        found = {}
        for client, request_id in dict.fromkeys(keys):
            row = self._conn.execute(self._sql(
                "SELECT accepted, at, mac FROM verify_requests WHERE client = :client"
                " AND request_id = :id"), {"client": client, "id": request_id}).fetchone()
            if row is None:
                continue
            accepted, at = bool(row[0]), row[1]
            if hmac.compare_digest(self._request_mac(client, request_id, accepted, at),
                                   bytes(row[2])):
                found[client, request_id] = accepted
            else:
                refuse("verify_requests", (client, request_id))
        return found

    def record_outcomes(self, outcomes, now):
        rows = [{"client": client, "id": request_id, "ok": bool(accepted), "at": now,
                 "mac": self._request_mac(client, request_id, bool(accepted), now)}
                for (client, request_id), accepted in outcomes]
        if rows:
            self._executemany("INSERT INTO verify_requests (client, request_id, accepted, at,"
                              " mac) VALUES (:client, :id, :ok, :at, :mac)"
                              " ON CONFLICT DO NOTHING", rows)

    def purge_requests(self, before):
        return self._run("DELETE FROM verify_requests WHERE at < :before", {"before": before})

    def purge_issued(self, before):
        return self._run("DELETE FROM issued WHERE expires_at < :before", {"before": before})

    def audit(self, now, event, account, client, source, outcome):
        self._pending_audit.append((now, event, account, client, source, outcome))

    def audit_many(self, entries):
        self._pending_audit.extend(entries)

    def add_account(self, name, type, params, material, chain_last, now, *, counter=0,
                    serial=None):
        self.touched_accounts.add(name)
        state = ACCOUNT_PENDING if material is None else ACCOUNT_ACTIVE
        enc = None if material is None else encrypt_material(self._store.keys, name, material)
        added = self._run("INSERT INTO accounts (name, type, params, state, material_enc,"
                          " chain_last, lockout, counter, created_at) VALUES (:name, :type, :params,"
                          " :state, :enc, :chain, :lockout, :counter, :now) ON CONFLICT DO NOTHING",
                          {"name": name, "type": type, "params": json.dumps(params, sort_keys=True),
                           "state": state, "enc": enc, "chain": chain_last,
                           "lockout": int(params["lockout"]), "counter": counter, "now": now}) == 1
        if added:
            self._seal("accounts", name)
            if serial is None:
                self._add_main_token(name, type, now)
            elif not self._insert_token(serial, name, type, {}, None, now, main=True):
                raise StoreError(f"token {serial} exists already")
        return added

    def _executemany(self, sql: str, rows) -> int:
        cursor = self._conn.cursor()
        cursor.executemany(self._sql(sql), rows)
        return cursor.rowcount

    def existing(self, table: str, names) -> set:
        """Which of ``names`` are keys of ``table`` (accounts or tokens) already."""
        key = TABLES[table][2]
        names = list(names)
        found: set = set()
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            marks = ", ".join(f":k{i}" for i in range(len(chunk)))
            found.update(row[0] for row in self._conn.execute(
                self._sql(f"SELECT {key} FROM {table} WHERE {key} IN ({marks})"),
                {f"k{i}": name for i, name in enumerate(chunk)}).fetchall())
        return found

    def add_accounts(self, accounts, now) -> list[str]:
        """Bulk ``add_account`` of new active accounts (``accounts``: (name, type, params,
        material) tuples; callers check the names are new, see :meth:`existing`): two
        executemany INSERTs of rows sealed here (one core call per table for their MACs).
        Returns the main-token serials."""
        keys, ver = self._store.keys, self.version
        account_tag, token_tag = TABLES["accounts"][0], TABLES["tokens"][0]
        names = [account[0] for account in accounts]
        serials = self._new_serials(len(names))
        # (type, id(params)) -> account row template, token row template, and params itself
        # (kept alive so its id is not reused)
        groups: dict = {}
        account_rows, token_rows = [], []
        for (name, type, params, material), serial in zip(accounts, serials):
            group = groups.get((type, id(params)))
            if group is None:
                columns = {"name": None, "type": type,
                           "params": json.dumps(params, sort_keys=True),
                           "state": ACCOUNT_ACTIVE, "material_enc": None, "counter": 0,
                           "last_step": -1, "chain_last": None, "failures": 0,
                           "transcript": None, "created_at": now, "failed_at": 0,
                           "locked_until": 0, "locks": 0}
                token = (None, None, type, "{}", "", 1, 1, None, 0, -1, None, now)
                group = groups[type, id(params)] = (
                    {**columns, "lockout": int(params["lockout"]), "ver": ver},
                    {**dict(zip(TOKEN_NAMES, token)), "ver": ver}, params)
            account, token, _ = group
            enc = keys.encrypt(json.dumps(material, sort_keys=True).encode(), account_aad(name))
            account_rows.append({**account, "name": name, "material_enc": enc})
            token_rows.append({**token, "serial": serial, "user_name": name})
        for tag, covered, rows in ((account_tag, ACCOUNT_NAMES, account_rows),
                                   (token_tag, TOKEN_NAMES, token_rows)):
            for row, mac in zip(rows, row_macs(keys, tag, map(
                    operator.itemgetter(*covered, "ver"), rows))):
                row["mac"] = mac
        account_columns = (*ACCOUNT_NAMES, "lockout", "ver", "mac")
        token_columns = (*TOKEN_NAMES, "ver", "mac")
        for table, columns, rows in (("accounts", account_columns, account_rows),
                                     ("tokens", token_columns, token_rows)):
            added = self._executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
                f" ({', '.join(':' + column for column in columns)}) ON CONFLICT DO NOTHING",
                rows)
            if added != len(rows):
                raise StoreError(f"{len(rows) - added} of the new {table} exist already")
        self.touched_accounts.update(names)
        written = self.written
        for name, serial in zip(names, serials):
            written[account_tag, name] = None
            written[token_tag, serial] = None
        return serials

    def _new_serials(self, count: int) -> list[str]:
        """``count`` fresh main-token serials, none in the store or drawn twice."""
        serials: dict = {}
        while len(serials) < count:
            drawn = {new_serial() for _ in range(count - len(serials))} - serials.keys()
            for serial in drawn - self.existing("tokens", drawn):
                serials[serial] = None
        return list(serials)[:count]

    def add_contribution(self, account, authority_id, salt, digest, ciphertext_hash, now):
        enc = self._store.keys.encrypt(digest, contribution_aad(account, authority_id))
        return self._run("INSERT INTO contributions (account, authority_id, salt, digest_enc,"
                         " ciphertext_hash, created_at) VALUES (:account, :id, :salt, :enc,"
                         " :ch, :now) ON CONFLICT DO NOTHING",
                         {"account": account, "id": authority_id, "salt": salt, "enc": enc,
                          "ch": ciphertext_hash, "now": now}) == 1

    def delete_contributions(self, account):
        return self._run("DELETE FROM contributions WHERE account = :account", {"account": account})

    def use_issued(self, account, otp_digest, now):
        ids = self.find_issued([(account, otp_digest)], now).get((account, otp_digest))
        return bool(ids) and self.use_issued_ids(ids[:1], now) == 1

    def _authentic_issued(self, rows, now) -> list:
        """Of issued rows (id, account, otp_digest, expires_at, ver, mac) read as unused:
        those that pass their MAC and that this process has not marked used before (a
        rolled-back copy); the others are refused (logged). For the kept ones the MAC they
        get when use_issued_ids marks them used at ``now`` is computed here too (one core
        call for the whole batch)."""
        marked = self._store._issued_marked().get
        used_macs = issued_used_macs(self._store.keys, rows, now, self.version)
        kept, new_macs = [], self._issued_macs
        for row, used_mac in zip(rows, used_macs):
            id_ = row[0]
            if used_mac is None:
                refuse("issued", id_)
            elif (marked(id_) or 0) > row[4]:
                refuse("issued", id_, "is an older copy (unused) of an OTP this process "
                       "marked used")
            else:
                new_macs[id_] = (now, used_mac)
                kept.append(row)
        return kept

    def _used_rows(self, ids, now):
        """For use_issued_ids: per id, the new MAC with ``used_at = now`` (ids find_issued
        did not read at this ``now`` are read here)."""
        ver, new_macs, out = self.version, self._issued_macs, []
        for id_ in ids:
            known = new_macs.get(id_)
            if known is None or known[0] != now:
                row = self._store._authentic_row(self._conn, "issued", id_)
                if row is None or row[-3] is not None:
                    continue
                known = (now, row_mac(self._store.keys.row_mac, "i", (*row[:-3], now), ver))
            out.append((id_, known[1]))
        used = [id_ for id_, _ in out]
        self.written.update(dict.fromkeys([("i", id_) for id_ in used]))
        self.used_ids.extend(used)
        return ver, out

    def add_client(self, name, account, verifier, credential_hash, now, *, admin=False):
        # mask_key_enc: unused since protocol v2 (masks are per connection); kept empty
        added = self._run("INSERT INTO clients (name, account, verifier, credential_hash,"
                          " mask_key_enc, created_at, admin) VALUES (:name, :account, :verifier,"
                          " :h, :mask, :now, :admin) ON CONFLICT DO NOTHING",
                          {"name": name, "account": account, "verifier": bool(verifier),
                           "h": credential_hash, "mask": b"", "now": now,
                           "admin": bool(admin)}) == 1
        if added:
            self._seal("clients", name)
        return added

    # -- tokens
    def _insert_token(self, serial, user, type, params, material, now, *, description="",
                      main=False, counter=0, chain_last=None) -> bool:
        enc = (None if material is None
               else self._store.keys.encrypt(json.dumps(material, sort_keys=True).encode(),
                                             token_aad(serial)))
        added = self._run("INSERT INTO tokens (serial, user_name, type, params, description,"
                          " enabled, main, material_enc, counter, last_step, chain_last,"
                          " created_at) VALUES (:serial, :user, :type, :params, :description,"
                          " 1, :main, :enc, :counter, -1, :chain, :now) ON CONFLICT DO NOTHING",
                          {"serial": serial, "user": user, "type": type,
                           "params": json.dumps(params, sort_keys=True),
                           "description": description, "main": int(main), "enc": enc,
                           "counter": counter, "chain": chain_last, "now": now}) == 1
        if added:
            self._seal("tokens", serial)
        return added

    def add_token(self, serial, user, type, params, material, now, *, description="",
                  main=False, counter=0, chain_last=None):
        return self._insert_token(serial, user, type, params, material, now,
                                  description=description, main=main, counter=counter,
                                  chain_last=chain_last)

    def _add_main_token(self, user, type, now) -> str:
        while True:     # a generated serial that exists already: draw again
            serial = new_serial()
            if self._insert_token(serial, user, type, {}, None, now, main=True):
                return serial

    def token(self, serial):
        found = self._store._select_tokens(self._conn, "WHERE serial = :serial",
                                           {"serial": serial})
        return found[0] if found else None

    def tokens_of(self, users):
        users = list(dict.fromkeys(u for u in users if isinstance(u, str)))
        out: dict = {}
        for start in range(0, len(users), 500):
            chunk = users[start:start + 500]
            marks = ", ".join(f":u{k}" for k in range(len(chunk)))
            for token in self._store._select_tokens(
                    self._conn, f"WHERE user_name IN ({marks})",
                    {f"u{k}": user for k, user in enumerate(chunk)}):
                out.setdefault(token.user, []).append(token)
        return out

    _TOKEN_SETTABLE = ("enabled", "description", "params", "counter", "last_step", "chain_last")

    def change_token(self, serial, **columns):
        if not columns or set(columns) - set(self._TOKEN_SETTABLE):
            raise StoreError(f"cannot set {sorted(columns)} of a token")
        values = {name: (json.dumps(value, sort_keys=True) if name == "params"
                         else int(value) if name == "enabled" else value)
                  for name, value in columns.items()}
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        return self._change("tokens", serial,
                            f"UPDATE tokens SET {assignments} WHERE serial = :serial",
                            {**values, "serial": serial})

    def delete_token(self, serial):
        deleted = self._run("DELETE FROM tokens WHERE serial = :serial",
                            {"serial": serial}) == 1
        if deleted:
            self.written["t", serial] = "-"
        return deleted

    def update_tokens(self, changes):
        changed = 0
        for old, new in changes:
            changed += self._change(
                "tokens", old.serial,
                "UPDATE tokens SET counter = :counter, last_step = :last_step"
                " WHERE serial = :serial AND counter = :old_counter AND last_step = :old_step"
                " AND :last_step >= last_step",
                {"serial": old.serial, "counter": new.counter, "last_step": new.last_step,
                 "old_counter": old.counter, "old_step": old.last_step})
        return changed

    def set_account_params(self, name, params):
        self.touched_accounts.add(name)
        return self._change("accounts", name,
                            "UPDATE accounts SET params = :params WHERE name = :name",
                            {"name": name, "params": json.dumps(params, sort_keys=True)})


def add_main_tokens(conn, keys: AtRestKeys, sql, now: float) -> int:
    """The migration step that introduces tokens (v5): each existing account becomes a user
    whose main token (the account row's secret and state) gets a tokens row with a fresh
    serial; the new rows are sealed (one audit entry records them). Returns how many."""
    accounts = conn.execute(sql("SELECT name, type, created_at FROM accounts"
                                " ORDER BY name")).fetchall()
    for name, type_, created_at in accounts:
        while True:
            cur = conn.execute(sql("INSERT INTO tokens (serial, user_name, type, params,"
                                   " description, enabled, main, counter, last_step,"
                                   " created_at) VALUES (:serial, :user, :type, '{}', '', 1, 1,"
                                   " 0, -1, :now) ON CONFLICT DO NOTHING"),
                               {"serial": new_serial(), "user": name, "type": type_,
                                "now": created_at})
            if cur.rowcount == 1:
                break
    return seal_existing_rows(conn, keys, sql, now, tables=("tokens",))


def seal_existing_rows(conn, keys: AtRestKeys, sql, now: float, *,
                       tables=V4_TABLES, covered_before: dict | None = None) -> int:
    """The migration step that introduces row authentication: MAC every existing row with
    the version of one new audit entry that records them all (inside the migration's
    transaction, which holds the write lock). ``sql`` converts ``:name`` parameters.
    ``covered_before`` (table -> the columns its MAC covered until now: a migration that
    covers a new column): only rows that pass their old MAC are re-sealed, so a row edited
    before the upgrade stays refused. Returns how many rows were sealed."""
    seq, prev = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    ver = int(seq) + 1
    written = {}
    for table in tables:
        tag, columns, key_column = TABLES[table]
        if covered_before is None and table == "clients":
            columns = row_auth.CLIENT_NAMES_V5      # v4: the admin flag comes with v6
        before = (covered_before or {}).get(table)
        select = ", ".join(columns) + (f", {', '.join(before)}, {ROW_COLUMNS}" if before else "")
        for row in conn.execute(f"SELECT {select} FROM {table}").fetchall():
            if before:
                old = row[len(columns):]
                if not row_ok(keys.row_mac, tag, old[:-2], old[-2], old[-1]):
                    continue
                row = row[:len(columns)]
            key = row[columns.index(key_column)]
            conn.execute(sql(f"UPDATE {table} SET ver = :ver, mac = :mac"
                             f" WHERE {key_column} = :key"),
                         {"ver": ver, "mac": row_mac(keys.row_mac, tag, row, ver), "key": key})
            written[tag, key] = None
    if not written:
        return 0
    rows = chain_entries(keys.audit_mac, (int(seq), bytes(prev)),
                         [(now, "store", "-", "-", "-", "rows-sealed")],
                         row_auth.records_text(written))
    insert_audit(conn, sql, rows)
    conn.execute(sql("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1"),
                 {"seq": rows[-1][0], "hash": rows[-1][7]})
    return len(written)


def cover_client_admin(conn, keys: AtRestKeys, sql, now: float) -> int:
    """The migration step that adds the clients' admin flag (v6) to their row MAC."""
    return seal_existing_rows(conn, keys, sql, now, tables=("clients",),
                              covered_before={"clients": row_auth.CLIENT_NAMES_V5})


def insert_audit(conn, sql, rows) -> None:
    for row in rows:
        conn.execute(sql("INSERT INTO audit (seq, time, event, account, client, source, outcome,"
                         " hash, rows) VALUES (:seq, :time, :event, :account, :client, :source,"
                         " :outcome, :hash, :rows)"), dict(zip(AUDIT_COLUMNS, row)))
