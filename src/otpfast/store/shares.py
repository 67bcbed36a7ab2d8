"""A share server's own store (``shares.db`` in its data directory; tprf tokens).

Per account: this server's share k_j (AES-GCM under the data directory's at-rest key, bound to
the account, serial and index), the public result of the DKG (g^k and every g^{k_m}), the
transcript and every share server's signature on it; the account's counter state. Per
principal (device, verifier, admin): its role and the hash of its credential. The pinned
peers' DKG key ids. Every write (evaluation, principal, share, confirmation, peer) appends one
event (time, kind, account, principal, counter).

Exactly-once rests on this file: ``mark`` reads and writes a counter in one ``BEGIN IMMEDIATE``
transaction, and the commit (``synchronous=FULL``: the WAL is fsynced) returns before the
caller computes or sends the partial. The store never holds k, only k_j.

Integrity against someone who can write the file but does not hold the at-rest key (the same
scheme as the main store: otpfast.store.rows and otpfast.store.chain, reused):

* **Counter state in one row per account.** Every counter a share server still answers for
  lies in the window [watermark - VERIFY_WINDOW, watermark) (issuing moves the watermark past
  the counter; anything below the window is refused). So the ``state`` row holds the watermark
  and two 64-bit bitmaps of that window (issued, consumed; bit i is counter watermark-1-i).
  A consumed mark is a bit of a MACed row: it cannot be deleted alone, and "consumed" is
  monotone (a bit shifts out of the window only when it is refused anyway).
* **Row MACs.** Every row that decides issuing, consumption or access - ``state``,
  ``shares``, ``principals`` (role, account, credential hash), ``peers`` - carries ``ver`` and
  ``mac``: keyed BLAKE2b under the row key (AtRestKeys.row_key) over its table tag, every
  column and ``ver`` (rows.row_mac / the core's row_macs). The key column is covered, so a row
  copied under another key fails.
* **Event chain.** ``events`` is hash-chained with the main store's audit MAC
  (chain.chain_entries, HMAC-SHA256 under AtRestKeys.audit_key) of the fields (seq, time,
  kind, account, principal, "-", counter or "-", rows). Each write transaction appends one
  event whose ``rows`` field (rows.records_text) lists the rows it wrote or deleted; a row's
  ``ver`` is the seq of that event. The head of the chain (seq, hash) is mirrored after each
  commit in ``shares.head`` beside ``shares.db`` (chain.HeadFile: MACed with the head key).

What is caught, and where:

* When the store is opened with ``check=True`` (``share-server serve`` and every other
  command): the whole chain against the head file (chain.check_chain: an altered or missing
  event, events removed from the end - shares.db rolled back to an older copy - a missing head
  file with a non-empty log) -> StoreError, the share server does not start; and every row
  against its MAC and the last event that wrote it (rows.check_rows, plus rows the log
  wrote that are gone) -> logged, and those rows are refused from then on.
* At every read, in every process: a row failing its MAC, a row older than the version this
  process has seen or written (a row rolled back to an older valid copy: the versions of all
  rows are learnt from the chain at open), a row gone that the log wrote -> IntegrityError
  (logged); the share server refuses that account (or principal) and never answers.
* While serving: the same whole check every CHECKPOINT_EVENTS events this process writes
  (or 4 per row, if more); a failure is logged (the bad rows are refused already).
* ``otpfast share-server verify``: the same whole check, reported.

Checkpoints keep the whole check bounded: after a clean check that walked more than
CHECKPOINT_EVENTS events, one ``checkpoint`` event carries every row's version over (``=``
records, as the main store's archive does) and the ``anchor`` row - (seq, hash) of the chain
point just before it, MACed with the head key (archive.anchor_mac) - moves there; the check
then starts at the anchor. An anchor deleted or rolled back to an older one only makes the walk
longer; an altered one fails its MAC; a newer one copied into an older file leaves every row
unaccounted for (refused). The events themselves stay (``share-server events``).

Not caught: a rollback of shares.db *and* shares.head together to an older copy of both (keep
a copy of the head elsewhere, or back shares.db up only with its head); deleting rows or the
whole file only denies service. Files of the earlier, unauthenticated layout are refused
("re-create"): they were never released.
"""
import hmac
import json
import logging
import os
import sqlite3
import threading
import time

from ..errors import StoreError
from . import rows as row_auth
from .archive import anchor_mac
from .atrest import AtRestKeys
from .base import AuditEntry, AuditReport
from .chain import ZERO_HASH, HeadFile, chain_entries, check_chain

SHARES_FILE = "shares.db"
HEAD_FILE = "shares.head"
SCHEMA_VERSION = 2          # PRAGMA user_version; the unauthenticated layout had 0
DEVICE, VERIFIER, ADMIN = "device", "verifier", "admin"
ROLES = (DEVICE, VERIFIER, ADMIN)
ISSUE, VERIFY = 1, 2
_KINDS = {ISSUE: "issue", VERIFY: "verify"}
# Counters this far below the watermark are forgotten and refused for verification: an
# issued OTP older than that many later ones is stale anyway. The state row's bitmaps hold
# exactly this window.
VERIFY_WINDOW = 64
_WINDOW_MASK = (1 << VERIFY_WINDOW) - 1
# The outstanding counters a status reports (the newest first).
OUTSTANDING_LIMIT = 16
MAX_COUNTER = 2**62          # SQLite integers are signed 64-bit; far beyond any real use

_log = logging.getLogger("otpfast.store")

# table -> (tag in the MACs and event records, covered columns, key column)
TABLES = {
    "principals": ("p", ("name", "role", "account", "credential_hash", "created_at"), "name"),
    "shares": ("s", ("account", "serial", "idx", "threshold", "share_enc", "public", "transcript",
                     "signatures", "created_at"), "account"),
    "state": ("w", ("account", "watermark", "issued", "consumed"), "account"),
    "peers": ("e", ("key_id", "created_at"), "key_id"),
}

_SELECT = {table: f"SELECT {', '.join(columns)}, ver, mac FROM {table} WHERE {key} = ?"
           for table, (_, columns, key) in TABLES.items()}
_REPLACE = {table: f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}, ver, mac) VALUES "
                   f"({', '.join('?' * (len(columns) + 2))})"
            for table, (_, columns, _) in TABLES.items()}
_RECORDS_CACHE = 4096       # the records text of one written row, per (tag, key): the hot path's
# Verified share rows kept per account with their record (the row is large - the transcript - and
# read by every evaluation): a row equal to the kept one needs no MAC, decryption or parsing.
_SHARE_CACHE = 4096
# A check that walked more events than this (at open, or while serving once this process has
# written that many events, or 4 per row if more) appends a checkpoint (ShareStore._checkpoint):
# the next check walks the log from there. ~10 us per event walked.
CHECKPOINT_EVENTS = 20_000
_ANCHOR = "CREATE TABLE IF NOT EXISTS anchor (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, " \
          "hash BLOB NOT NULL, mac BLOB NOT NULL)"

_SCHEMA = """
CREATE TABLE principals (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, account TEXT, credential_hash BLOB NOT NULL,
    created_at REAL NOT NULL, ver INTEGER NOT NULL, mac BLOB NOT NULL);
CREATE TABLE shares (
    account TEXT PRIMARY KEY, serial TEXT NOT NULL, idx INTEGER NOT NULL, threshold INTEGER NOT NULL,
    share_enc BLOB NOT NULL, public TEXT NOT NULL, transcript BLOB NOT NULL, signatures TEXT,
    created_at REAL NOT NULL, ver INTEGER NOT NULL, mac BLOB NOT NULL);
CREATE TABLE state (
    account TEXT PRIMARY KEY, watermark INTEGER NOT NULL, issued BLOB NOT NULL, consumed BLOB NOT NULL,
    ver INTEGER NOT NULL, mac BLOB NOT NULL);
CREATE TABLE peers (key_id TEXT PRIMARY KEY, created_at REAL NOT NULL, ver INTEGER NOT NULL,
    mac BLOB NOT NULL);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, at REAL NOT NULL, event TEXT NOT NULL, account TEXT NOT NULL,
    principal TEXT NOT NULL, counter INTEGER, rows TEXT, hash BLOB NOT NULL);
"""


class IntegrityError(StoreError):
    """A row fails its check (edited, rolled back or deleted without the at-rest key)."""


class ShareRecord:
    """One account's share and public DKG result, as this server holds it."""

    __slots__ = ("account", "serial", "index", "threshold", "share", "public_key", "public_shares",
                 "transcript", "signatures", "active")

    def __init__(self, account, serial, index, threshold, share, public, transcript, signatures):
        self.account = account
        self.serial = serial
        self.index = index
        self.threshold = threshold
        self.share = share                       # k_j (32-byte scalar); never logged
        self.public_key = bytes.fromhex(public["key"])
        self.public_shares = {int(m): bytes.fromhex(v) for m, v in public["shares"].items()}
        self.transcript = transcript
        self.signatures = signatures             # None until the ceremony is confirmed
        self.active = signatures is not None

    def __repr__(self):
        return f"ShareRecord(account={self.account!r}, index={self.index}, active={self.active})"


def _associated(account, serial, index):
    return b"otpfast tprf share v1\0" + account.encode() + b"\0" + serial.encode() + b"\0" + b"%d" % index


def _bits(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _shift(bitmap: int, by: int) -> int:
    return 0 if by >= VERIFY_WINDOW else (bitmap << by) & _WINDOW_MASK


def _outcome(counter):
    return "-" if counter is None else str(counter)


def head_path(path: str) -> str:
    """The head file beside a share store: ``shares.head`` for ``shares.db``."""
    return os.path.join(os.path.dirname(path), HEAD_FILE) if os.path.basename(path) == SHARES_FILE \
        else os.path.splitext(path)[0] + ".head"


class ShareStore:
    """The share server's SQLite file; safe to call from one thread at a time (the server runs
    its calls on one executor thread; the lock guards the CLI's and tests' other uses).
    ``check``: run the whole check at open (StoreError if the chain or head is wrong)."""

    def __init__(self, path, key, *, synchronous="FULL", check=True):
        self.path = path
        self._keys = AtRestKeys(key)
        self._lock = threading.Lock()
        self._head = HeadFile(head_path(path), self._keys.head_mac)
        # (tag, key) -> the newest version of the row this process knows (negative: deleted
        # by the event of that seq): a row read older than that was rolled back
        self._seen = {}
        self._records = {}
        self._share_cache = {}
        self._since_check = 0       # events this process wrote since the last whole check
        if not os.path.exists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the share store {path}: {exc}") from None
        try:
            self._create()
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot open the share store {path}: {exc}") from None
        except StoreError:
            self._db.close()
            raise
        if check:
            report = self.verify()
            if report.first_bad is not None:
                self._db.close()
                raise StoreError(f"the share store {path} fails its check: {report.reason} "
                                 "(otpfast share-server verify); it is not used")
            self._since_check = report.entries
            if report.ok and report.entries > CHECKPOINT_EVENTS:
                self._checkpoint(time.time())

    def _create(self):
        db = self._db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            raise StoreError(f"the share store {self.path} was made by an earlier otpfast (no row MACs, no "
                             "event chain) and cannot be upgraded: re-create it (move it away, add the "
                             "principals and peers again, run the DKG of each account again)")
        if not tables:
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA.replace('CREATE TABLE', 'CREATE TABLE IF NOT EXISTS')} "
                             f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        db.execute(_ANCHOR)
        if self._head.read() == "missing" and db.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None:
            self._head.rewrite(0, ZERO_HASH)        # a new store (or one created by a crash midway)

    def close(self):
        with self._lock:
            self._db.close()
            self._head.close()

    # -- rows -----------------------------------------------------------------------------
    def _refuse(self, table, key, why):
        row_auth.refuse(table, key, why)
        return IntegrityError(f"the {table} row {key!r} {why}")

    def _checked(self, table, key, row):
        """The covered values of ``row`` (covered columns, ver, mac; or None) once its MAC and
        version pass; raises IntegrityError."""
        tag = TABLES[table][0]
        seen = self._seen.get((tag, key))
        if row is None:
            if seen is not None and seen > 0:
                raise self._refuse(table, key, "is missing (deleted outside otpfast)")
            return None
        *values, ver, mac = row
        if ver is None or mac is None or not hmac.compare_digest(
                row_auth.row_mac(self._keys.row_mac, tag, values, ver), bytes(mac)):
            raise self._refuse(table, key, "fails its integrity check")
        if seen is not None and (ver < seen if seen > 0 else ver <= -seen):
            raise self._refuse(table, key, f"was rolled back to an older copy (version {ver}, "
                                            f"last written by event {abs(seen)})")
        if seen is None or ver > seen:
            self._seen[tag, key] = ver
        return values

    def _row(self, db, table, key):
        return self._checked(table, key, db.execute(_SELECT[table], (key,)).fetchone())

    def _put(self, db, table, values, ver, written):
        tag, columns, key_column = TABLES[table]
        db.execute(_REPLACE[table], (*values, ver, row_auth.row_mac(self._keys.row_mac, tag, values, ver)))
        written[tag, values[columns.index(key_column)]] = None

    def _records_text(self, written):
        if len(written) != 1:
            return row_auth.records_text(written)
        item = next(iter(written.items()))      # ((tag, key), what)
        text = self._records.get(item)
        if text is None:
            text = row_auth.records_text(written)
            if len(self._records) >= _RECORDS_CACHE:
                self._records.clear()
            self._records[item] = text
        return text

    def _delete(self, db, table, key, written):
        tag, _, key_column = TABLES[table]
        db.execute(f"DELETE FROM {table} WHERE {key_column} = ?", (key,))
        written[tag, key] = "-"

    def _write(self, fn, now, kind, account="-", principal="-", counter=None):
        """Run ``fn(db, ver, written)`` in one BEGIN IMMEDIATE transaction; if it wrote rows
        (``written``: (tag, key) -> None written, "-" deleted, or a version carried over),
        append the event of seq ``ver`` recording them, commit (durably) and move the head
        file; then, when due, the whole check and a checkpoint. Returns fn's result."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                last = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
                head = (0, ZERO_HASH) if last is None else (last[0], bytes(last[1]))
                written = {}
                result = fn(db, head[0] + 1, written)
                if written:
                    (event,) = chain_entries(self._keys.audit_mac, head,
                                             [(now, kind, account, principal, "-", _outcome(counter))],
                                             self._records_text(written))
                    seq, at, _, _, _, _, _, digest, rows = event
                    db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (seq, at, kind, account, principal, counter, rows, digest))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            if written:
                self._head.write(seq, digest)
                for (tag, key), what in written.items():
                    if what is None or what == "-":
                        self._seen[tag, key] = seq if what is None else -seq
                self._since_check += 1
            due = kind != "checkpoint" and self._since_check > max(CHECKPOINT_EVENTS, 4 * len(self._seen))
        if due:
            self._since_check = 0
            report = self.verify()
            if report.ok:
                self._checkpoint(now)
            else:
                _log.warning("share store %s: the periodic check failed: %s", self.path, report.reason)
        return result

    def _checkpoint(self, now):
        """After a clean check: one event carrying every row's version over (rows.records_text
        "=" records) and the anchor (MACed with the head key, archive.anchor_mac) moved to the
        chain point just before it, so the next check starts there. A version carried is never
        older than the one this process learnt. An anchor rolled back to an older one only makes
        the walk longer; a newer one copied into an older file leaves every row unaccounted for."""
        def carry(db, ver, written):
            for table, (tag, _, key_column) in TABLES.items():
                for key, row_ver in db.execute(f"SELECT {key_column}, ver FROM {table}"):
                    written[tag, key] = max(row_ver, self._seen.get((tag, key), 0))
            if written:
                seq, digest = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
                db.execute("INSERT OR REPLACE INTO anchor VALUES (1, ?, ?, ?)",
                           (seq, digest, anchor_mac(self._keys, seq, bytes(digest))))
        self._write(carry, now, "checkpoint")
        self._since_check = 0

    def _anchor(self, db):
        """(seq, hash) where the check starts, or None if the anchor row was altered."""
        row = db.execute("SELECT seq, hash, mac FROM anchor WHERE id = 1").fetchone()
        if row is None:
            return (0, ZERO_HASH)
        seq, digest = int(row[0]), bytes(row[1])
        return (seq, digest) if hmac.compare_digest(anchor_mac(self._keys, seq, digest), bytes(row[2])) else None

    # -- the whole check ------------------------------------------------------------------
    def verify(self) -> AuditReport:
        """The event chain against the head file, then every row against its MAC and the
        last event that wrote it; learns every row's version (later reads refuse older ones).
        Problems with rows are logged and listed in ``bad_rows``."""
        head = self._head.read()            # before the snapshot: never ahead of it
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                latest = {}
                anchor = self._anchor(db)
                if anchor is None:
                    return AuditReport(0, 1, "the checkpoint anchor was altered (its MAC fails)", 0, ZERO_HASH)
                entries = (AuditEntry(seq, at, event, account, principal, "-", _outcome(counter), bytes(digest),
                                      rows)
                           for seq, at, event, account, principal, counter, rows, digest in db.execute(
                               "SELECT seq, at, event, account, principal, counter, rows, hash FROM events "
                               "WHERE seq > ? ORDER BY seq", (anchor[0],)))
                report = check_chain(self._keys.audit_key, entries, [("head file", head)], anchor=anchor,
                                     latest=latest)
                if report.first_bad is not None:
                    return report

                def rows_of(table, columns):
                    return db.execute(f"SELECT {', '.join(columns)}, ver, mac FROM {table}")

                problems = row_auth.check_rows(self._keys, TABLES, latest, rows_of, anchor[0])
                present = {(tag, r[0]) for table, (tag, _, key) in TABLES.items()
                           for r in db.execute(f"SELECT {key} FROM {table}")}
                problems += [f"{table} row {key!r} was deleted outside otpfast (the log wrote it in event {ver})"
                             for table, (tag, _, _) in TABLES.items()
                             for (t, key), ver in latest.items() if t == tag and ver != "-"
                             and (tag, key) not in present]
            finally:
                db.execute("COMMIT")
            for (tag, key), ver in latest.items():
                ver = -report.head_seq if ver == "-" else ver
                if abs(ver) > abs(self._seen.get((tag, key), 0)):
                    self._seen[tag, key] = ver
        for problem in problems:
            _log.warning("share store: %s: refused", problem)
        if problems:
            return AuditReport(report.entries, None, f"{len(problems)} row(s) refused: {problems[0]}",
                               report.head_seq, report.head_hash, bad_rows=tuple(problems))
        return report

    # -- principals -----------------------------------------------------------------------
    def add_principal(self, name, role, account, credential_hash, now):
        """False if ``name`` exists."""
        if role not in ROLES:
            raise ValueError("unknown role")

        def add(db, ver, written):
            if db.execute("SELECT 1 FROM principals WHERE name = ?", (name,)).fetchone():
                return False
            self._put(db, "principals", (name, role, account, credential_hash, now), ver, written)
            return True
        return self._write(add, now, "principal", account or "-", name)

    def principal(self, name):
        """(role, account, credential_hash) or None; IntegrityError if its row fails."""
        with self._lock:
            values = self._row(self._db, "principals", name)
        return None if values is None else (values[1], values[2], bytes(values[3]))

    def principals(self):
        """(name, role, account, intact) of every principal; a row failing its check is
        listed as stored with ``intact`` False (and refused by ``principal``)."""
        out = []
        with self._lock:
            for name, role, account in self._db.execute("SELECT name, role, account FROM principals ORDER BY name"):
                try:
                    self._row(self._db, "principals", name)
                except IntegrityError:
                    out.append((name, role, account, False))
                else:
                    out.append((name, role, account, True))
        return out

    # -- peers ----------------------------------------------------------------------------
    def add_peer(self, key_id, now):
        def add(db, ver, written):
            if self._row(db, "peers", key_id) is None:
                self._put(db, "peers", (key_id, now), ver, written)
        self._write(add, now, "peer", key_id)

    def peers(self):
        """The pinned peers' key ids; IntegrityError if any row fails or a pinned one is gone."""
        with self._lock:
            found = {r[0] for r in self._db.execute("SELECT key_id FROM peers")}
            for key_id in found | {key for (tag, key), ver in self._seen.items() if tag == "e" and ver > 0}:
                self._row(self._db, "peers", key_id)
        return found

    # -- shares ---------------------------------------------------------------------------
    def add_share(self, account, serial, index, threshold, share, public, transcript, now):
        """Store a share from a finished DKG (not active until ``confirm``; it replaces a
        share a ceremony left unconfirmed); False if the account has an active one."""
        blob = self._keys.encrypt(share, _associated(account, serial, index))
        text = json.dumps(public, sort_keys=True, separators=(",", ":"))

        def add(db, ver, written):
            existing = self._row(db, "shares", account)
            if existing is not None:
                if existing[7] is not None:
                    return False
                self._delete(db, "shares", account, written)
            self._put(db, "shares", (account, serial, index, threshold, blob, text, transcript, None, now),
                      ver, written)
            if self._row(db, "state", account) is None:
                self._put(db, "state", (account, 0, _bits(0), _bits(0)), ver, written)
            return True
        return self._write(add, now, "share", account)

    def confirm(self, account, transcript, signatures, now=0.0):
        """Activate the account's share with every share server's signature on its transcript;
        False unless a pending share with that transcript exists."""
        text = json.dumps(signatures, sort_keys=True, separators=(",", ":"))

        def update(db, ver, written):
            values = self._row(db, "shares", account)
            if values is None or values[7] is not None or bytes(values[6]) != transcript:
                return False
            values[7] = text
            self._put(db, "shares", tuple(values), ver, written)
            return True
        return self._write(update, now, "confirm", account)

    def share(self, account):
        """The account's ShareRecord (pending or active), or None; IntegrityError if its row
        fails."""
        with self._lock:
            row = self._db.execute(_SELECT["shares"], (account,)).fetchone()
            kept = self._share_cache.get(account)
            if kept is not None and kept[0] == row:
                seen = self._seen.get(("s", account), 0)
                if row[-2] >= seen > 0:
                    return kept[1]
            values = self._checked("shares", account, row)
        if values is None:
            return None
        _, serial, index, threshold, blob, public, transcript, signatures, _ = values
        share = self._keys.decrypt(bytes(blob), _associated(account, serial, index))
        record = ShareRecord(account, serial, index, threshold, share, json.loads(public), bytes(transcript),
                             None if signatures is None else json.loads(signatures))
        with self._lock:
            if len(self._share_cache) >= _SHARE_CACHE:
                self._share_cache.clear()
            self._share_cache[account] = (row, record)
        return record

    def accounts(self):
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT account FROM shares ORDER BY account")]

    # -- counters -------------------------------------------------------------------------
    def _state(self, db, account):
        """(watermark, issued bitmap, consumed bitmap) or None."""
        values = self._row(db, "state", account)
        if values is None:
            return None
        return values[1], int.from_bytes(values[2], "big"), int.from_bytes(values[3], "big")

    def status(self, account):
        """(watermark, outstanding counters newest first): counters this server evaluated for
        issuing and nobody has consumed here."""
        with self._lock:
            state = self._state(self._db, account)
        if state is None:
            return 0, []
        watermark, issued, consumed = state
        open_bits = issued & ~consumed
        outstanding = [watermark - 1 - i for i in range(VERIFY_WINDOW) if open_bits >> i & 1]
        return watermark, outstanding[:OUTSTANDING_LIMIT]

    def mark(self, account, counter, purpose, principal="-", now=0.0):
        """Record an evaluation of ``counter`` for ``purpose`` (ISSUE or VERIFY) by
        ``principal`` and commit it (with its event); False (nothing changed) if the rules
        forbid it: issuing only at or above the watermark, each counter consumed once,
        nothing below the verification window. IntegrityError if the account's state fails."""
        if not 0 <= counter < MAX_COUNTER or purpose not in _KINDS:
            return False

        def mark(db, ver, written):
            state = self._state(db, account)
            if state is None:
                return False
            watermark, issued, consumed = state
            if counter < watermark - VERIFY_WINDOW or (purpose == ISSUE and counter < watermark):
                return False
            if counter >= watermark:
                issued, consumed = _shift(issued, counter + 1 - watermark), _shift(consumed, counter + 1 - watermark)
                watermark = counter + 1
            bit = 1 << (watermark - 1 - counter)
            if purpose == ISSUE:
                issued |= bit
            elif consumed & bit:
                return False
            else:
                consumed |= bit
            self._put(db, "state", (account, watermark, _bits(issued), _bits(consumed)), ver, written)
            return True
        return self._write(mark, now, _KINDS[purpose], account, principal, counter)

    def events(self, account, limit=50):
        """The account's latest evaluations, newest first: (time, counter, purpose, principal)."""
        purposes = {kind: purpose for purpose, kind in _KINDS.items()}
        with self._lock:
            return [(r[0], r[1], purposes[r[2]], r[3]) for r in self._db.execute(
                "SELECT at, counter, event, principal FROM events WHERE account = ? AND event IN ('issue', 'verify') "
                "ORDER BY seq DESC LIMIT ?", (account, limit))]

    def consumed(self, account, counter):
        """True if this server consumed ``counter`` for a verification (or forgot it)."""
        with self._lock:
            state = self._state(self._db, account)
        if state is None:
            return False
        watermark, _, consumed = state
        if counter < watermark - VERIFY_WINDOW:
            return True
        return counter < watermark and bool(consumed >> (watermark - 1 - counter) & 1)
