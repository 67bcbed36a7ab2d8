"""A share server's own store (``shares.db`` in its data directory; tprf tokens).

Per account: this server's share k_j (AES-GCM under the data directory's at-rest key, bound to
the account, serial and index), the public result of the DKG (g^k and every g^{k_m}), the
transcript and every share server's signature on it; per (account, counter): whether this
server evaluated it for issuing and whether it consumed it for a verification. Per principal
(device, verifier, admin): the hash of its credential. The pinned peers' DKG key ids. Every
evaluation (time, account, counter, issue or verify, principal), written in the transaction
that marks it: who consumed which counter (a plain table, not hash-chained).

Exactly-once rests on this file: ``evaluate`` marks a counter in the same ``BEGIN IMMEDIATE``
transaction that reads it, and the commit (``synchronous=FULL``: the WAL is fsynced) returns
before the caller computes or sends the partial. The store never holds k, only k_j.
"""
import json
import os
import sqlite3
import threading

from ..errors import StoreError
from .atrest import AtRestKeys

SHARES_FILE = "shares.db"
DEVICE, VERIFIER, ADMIN = "device", "verifier", "admin"
ROLES = (DEVICE, VERIFIER, ADMIN)
ISSUE, VERIFY = 1, 2
# Counters this far below the watermark are forgotten (their rows pruned) and refused for
# verification: an issued OTP older than that many later ones is stale anyway.
VERIFY_WINDOW = 64
# The outstanding counters a status reports (the newest first).
OUTSTANDING_LIMIT = 16
MAX_COUNTER = 2**62          # SQLite integers are signed 64-bit; far beyond any real use

_SCHEMA = """
CREATE TABLE IF NOT EXISTS principals (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, account TEXT, credential_hash BLOB NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS shares (
    account TEXT PRIMARY KEY, serial TEXT NOT NULL, idx INTEGER NOT NULL, threshold INTEGER NOT NULL,
    share_enc BLOB NOT NULL, public TEXT NOT NULL, transcript BLOB NOT NULL, signatures TEXT,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    account TEXT NOT NULL, counter INTEGER NOT NULL, issued INTEGER NOT NULL, consumed INTEGER NOT NULL,
    PRIMARY KEY (account, counter)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watermarks (account TEXT PRIMARY KEY, watermark INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS peers (key_id TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, account TEXT NOT NULL, counter INTEGER NOT NULL,
    purpose INTEGER NOT NULL, principal TEXT NOT NULL);
"""


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


class ShareStore:
    """The share server's SQLite file; safe to call from one thread at a time (the server runs
    its calls on one executor thread; the lock guards the CLI's and tests' other uses)."""

    def __init__(self, path, key, *, synchronous="FULL"):
        self.path = path
        self._keys = AtRestKeys(key)
        self._lock = threading.Lock()
        fresh = not os.path.exists(path)
        if fresh:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the share store {path}: {exc}") from None

    def close(self):
        with self._lock:
            self._db.close()

    def _write(self, fn):
        """Run ``fn(db)`` in one BEGIN IMMEDIATE transaction; committed (durably) on return."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

    # -- principals -----------------------------------------------------------------------
    def add_principal(self, name, role, account, credential_hash, now):
        """False if ``name`` exists."""
        if role not in ROLES:
            raise ValueError("unknown role")

        def add(db):
            try:
                db.execute("INSERT INTO principals VALUES (?, ?, ?, ?, ?)",
                           (name, role, account, credential_hash, now))
            except sqlite3.IntegrityError:
                return False
            return True
        return self._write(add)

    def principal(self, name):
        """(role, account, credential_hash) or None."""
        with self._lock:
            row = self._db.execute("SELECT role, account, credential_hash FROM principals WHERE name = ?",
                                   (name,)).fetchone()
        return None if row is None else (row[0], row[1], bytes(row[2]))

    def principals(self):
        with self._lock:
            return [(r[0], r[1], r[2]) for r in self._db.execute(
                "SELECT name, role, account FROM principals ORDER BY name")]

    # -- peers ----------------------------------------------------------------------------
    def add_peer(self, key_id, now):
        self._write(lambda db: db.execute("INSERT OR IGNORE INTO peers VALUES (?, ?)", (key_id, now)))

    def peers(self):
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT key_id FROM peers")}

    # -- shares ---------------------------------------------------------------------------
    def add_share(self, account, serial, index, threshold, share, public, transcript, now):
        """Store a share from a finished DKG (not active until ``confirm``; it replaces a
        share a ceremony left unconfirmed); False if the account has an active one."""
        blob = self._keys.encrypt(share, _associated(account, serial, index))
        text = json.dumps(public, sort_keys=True, separators=(",", ":"))

        def add(db):
            db.execute("DELETE FROM shares WHERE account = ? AND signatures IS NULL", (account,))
            try:
                db.execute("INSERT INTO shares VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                           (account, serial, index, threshold, blob, text, transcript, now))
            except sqlite3.IntegrityError:
                return False
            db.execute("INSERT OR IGNORE INTO watermarks VALUES (?, 0)", (account,))
            return True
        return self._write(add)

    def confirm(self, account, transcript, signatures):
        """Activate the account's share with every share server's signature on its transcript;
        False unless a pending share with that transcript exists."""
        text = json.dumps(signatures, sort_keys=True, separators=(",", ":"))

        def update(db):
            cursor = db.execute("UPDATE shares SET signatures = ? WHERE account = ? AND transcript = ? "
                                "AND signatures IS NULL", (text, account, transcript))
            return cursor.rowcount == 1
        return self._write(update)

    def share(self, account):
        """The account's ShareRecord (pending or active), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT serial, idx, threshold, share_enc, public, transcript, signatures FROM shares "
                "WHERE account = ?", (account,)).fetchone()
        if row is None:
            return None
        serial, index, threshold, blob, public, transcript, signatures = row
        share = self._keys.decrypt(bytes(blob), _associated(account, serial, index))
        return ShareRecord(account, serial, index, threshold, share, json.loads(public), bytes(transcript),
                           None if signatures is None else json.loads(signatures))

    def accounts(self):
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT account FROM shares ORDER BY account")]

    # -- counters -------------------------------------------------------------------------
    def status(self, account):
        """(watermark, outstanding counters newest first): counters this server evaluated for
        issuing and nobody has consumed here."""
        with self._lock:
            row = self._db.execute("SELECT watermark FROM watermarks WHERE account = ?", (account,)).fetchone()
            watermark = 0 if row is None else row[0]
            outstanding = [r[0] for r in self._db.execute(
                "SELECT counter FROM counters WHERE account = ? AND issued = 1 AND consumed = 0 "
                "AND counter >= ? ORDER BY counter DESC LIMIT ?",
                (account, watermark - VERIFY_WINDOW, OUTSTANDING_LIMIT))]
        return watermark, outstanding

    def mark(self, account, counter, purpose, principal="-", now=0.0):
        """Record an evaluation of ``counter`` for ``purpose`` (ISSUE or VERIFY) by
        ``principal`` and commit it (with its event); False (nothing changed) if the rules
        forbid it: issuing only at or above the watermark, each counter consumed once,
        nothing below the verification window."""
        if not 0 <= counter < MAX_COUNTER:
            return False

        def mark(db):
            row = db.execute("SELECT watermark FROM watermarks WHERE account = ?", (account,)).fetchone()
            if row is None:
                return False
            watermark = row[0]
            if purpose == ISSUE:
                if counter < watermark:
                    return False
                db.execute("INSERT INTO counters VALUES (?, ?, 1, 0)", (account, counter))
            else:
                if counter < watermark - VERIFY_WINDOW:
                    return False
                seen = db.execute("SELECT consumed FROM counters WHERE account = ? AND counter = ?",
                                  (account, counter)).fetchone()
                if seen is None:
                    db.execute("INSERT INTO counters VALUES (?, ?, 0, 1)", (account, counter))
                elif seen[0]:
                    return False
                else:
                    db.execute("UPDATE counters SET consumed = 1 WHERE account = ? AND counter = ?",
                               (account, counter))
            if counter + 1 > watermark:
                db.execute("UPDATE watermarks SET watermark = ? WHERE account = ?", (counter + 1, account))
                db.execute("DELETE FROM counters WHERE account = ? AND counter < ?",
                           (account, counter + 1 - VERIFY_WINDOW))
            db.execute("INSERT INTO events (at, account, counter, purpose, principal) VALUES (?, ?, ?, ?, ?)",
                       (now, account, counter, purpose, principal))
            return True
        return self._write(mark)

    def events(self, account, limit=50):
        """The account's latest evaluations, newest first: (time, counter, purpose, principal)."""
        with self._lock:
            return [tuple(r) for r in self._db.execute(
                "SELECT at, counter, purpose, principal FROM events WHERE account = ? ORDER BY seq DESC LIMIT ?",
                (account, limit))]

    def consumed(self, account, counter):
        """True if this server consumed ``counter`` for a verification (or forgot it)."""
        with self._lock:
            row = self._db.execute("SELECT watermark FROM watermarks WHERE account = ?", (account,)).fetchone()
            if row is not None and counter < row[0] - VERIFY_WINDOW:
                return True
            seen = self._db.execute("SELECT consumed FROM counters WHERE account = ? AND counter = ?",
                                    (account, counter)).fetchone()
        return bool(seen and seen[0])

