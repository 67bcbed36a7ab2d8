"""The audit chain: the MAC of each entry chained onto the previous one, the check of a
chain against its recorded heads, and the head file kept outside the database."""
import hashlib
import hmac
import itertools
import json
import os
import struct
import threading
import time

from otpfast.core import audit_chain_macs

from . import rows as row_auth
from .atrest import HmacSha256
from .base import AuditReport

ZERO_HASH = bytes(32)
_FIELD_CACHE_SIZE = 4096

_LENGTH = struct.Struct(">I").pack
_FIELDS: dict[str, bytes] = {}      # length-prefixed UTF-8 of recurring field values


def _field(text: str) -> bytes:
    data = _FIELDS.get(text)
    if data is None:
        raw = text.encode("utf-8")
        data = _LENGTH(len(raw)) + raw
        if len(_FIELDS) < _FIELD_CACHE_SIZE:      # names and outcome words, never secrets
            _FIELDS[text] = data
    return data


def audit_mac(key: bytes, prev: bytes, seq: int, time: float, event: str, account: str,
              client: str, source: str, outcome: str, rows: str | None = None) -> bytes:
    """HMAC-SHA256 of one audit entry chained onto the previous entry's MAC: the MAC input
    is ``prev`` then each field (seq, repr(time), event, account, client, source, outcome,
    and ``rows`` when the entry records written rows) as a 4-byte big-endian length and its
    UTF-8 bytes."""
    return hmac.digest(key, b"".join((prev, _field(str(seq)), _field(repr(float(time))),
                                      _field(event), _field(account), _field(client),
                                      _field(source), _field(outcome),
                                      b"" if rows is None else _rows_field(rows))), "sha256")


def _rows_field(rows: str) -> bytes:
    raw = rows.encode("utf-8")
    return _LENGTH(len(raw)) + raw


def chain_entries(key, head: tuple[int, bytes], entries: list[tuple],
                  rows: str | None = None) -> list[tuple]:
    """Audit rows (seq, time, event, account, client, source, outcome, hash, rows) of
    ``entries`` = [(time, event, account, client, source, outcome)], chained onto ``head`` =
    (seq, hash), in one core call (the MACs are audit_mac's); ``rows`` (the records of the
    rows the transaction wrote) goes into the first entry. ``key``: the audit key, or its
    HmacSha256 (AtRestKeys.audit_mac)."""
    seq, prev = head
    entries = list(entries)
    macs = audit_chain_macs(key.key if isinstance(key, HmacSha256) else key, seq, prev,
                            entries, rows)
    out = [(number, float(when), event, account, client, source, outcome, mac, None)
           for number, (when, event, account, client, source, outcome), mac
           in zip(itertools.count(seq + 1), entries, macs)]
    if out and rows is not None:
        out[0] = (*out[0][:8], rows)
    return out


def chain_genesis(audit_mac: HmacSha256, chain: int) -> bytes:
    """Where a node's chain (PostgreSQL, ``chain`` > 1) starts: bound to its number, so an
    entry moved from one chain into another fails its MAC. Chain 1 starts at ZERO_HASH."""
    return ZERO_HASH if chain == 1 else audit_mac(b"otpfast chain %d" % chain)


def fold_records(records) -> dict:
    """The ``latest`` row records (otpfast.store.rows.note_records) of several chains:
    ``records`` = [(seq, rows text)] of every chain; an entry's rows take the version its
    text names ("v", drawn from one sequence, so it orders the writes of one row across
    chains), else its seq (a single chain). A version an archive carried over ("=") counts
    at that version, not at the archive's entry: a write of the row made on another chain
    while the archive ran is newer, and stays the latest."""
    writes = []
    for seq, text in records:
        if not text:
            continue
        fields = json.loads(text)
        version = fields.pop("v", seq)
        for tag, key, ver in fields.pop("=", ()):
            writes.append((ver, tag, key, ver))
        for tag, keys in fields.items():
            deleted = tag.startswith("-")
            for key in keys:
                writes.append((version, tag[1:] if deleted else tag, key,
                               "-" if deleted else version))
    writes.sort(key=lambda write: write[0])
    return {(tag, key): what for _, tag, key, what in writes}


def record_version(seq: int, text: str) -> int:
    """The version of the rows an entry (``seq``, rows field ``text``) records."""
    return json.loads(text).get("v", seq)


def check_chain(audit_key: bytes, entries, heads, *, anchor=(0, ZERO_HASH),
                latest: dict | None = None, records: list | None = None) -> AuditReport:
    """Walk the audit chain (every MAC, no gap) from ``anchor`` (seq, hash: where the
    archived part ended) and compare it with the recorded heads: ``heads`` is [(what,
    (seq, hash) or None or "missing")], the database head first. The caller reads the
    database head and the entries in one snapshot, and the head file before it. ``latest``
    (a dict) receives the row records of the entries (otpfast.store.rows.note_records);
    ``records`` (a list) their (seq, rows text) instead, for fold_records."""
    wanted = {int(head[0]) for _, head in heads if isinstance(head, tuple)}
    prev, last, count = bytes(anchor[1]), int(anchor[0]), 0
    hashes = {last: prev}        # the chain's hash at the seqs the heads name
    for entry in entries:
        count += 1
        if entry.seq != last + 1:
            return AuditReport(count, last + 1, f"entry {last + 1} is missing", last, prev)
        mac = audit_mac(audit_key, prev, entry.seq, entry.time, entry.event, entry.account,
                        entry.client, entry.source, entry.outcome, entry.rows)
        if not hmac.compare_digest(mac, entry.hash):
            return AuditReport(count, entry.seq, f"entry {entry.seq} was altered", last, prev)
        prev, last = entry.hash, entry.seq
        if last in wanted:
            hashes[last] = prev
        if latest is not None and entry.rows is not None:
            row_auth.note_records(latest, last, entry.rows)
        if records is not None and entry.rows is not None:
            records.append((last, entry.rows))
    for what, head in heads:
        if head is None:
            continue
        if head == "missing":       # written when the store is created: never absent
            return AuditReport(count, max(last, 1), f"the {what} is missing (the log has "
                               f"entries up to {last})", last, prev)
        if head == "unkeyed":
            return AuditReport(count, max(last, 1), f"the {what} is in the unkeyed format "
                               "of an earlier otpfast (not accepted: anyone could write it)",
                               last, prev)
        head_seq, head_hash = int(head[0]), bytes(head[1])
        if 0 <= head_seq < int(anchor[0]):      # a lower bound inside the archived part
            continue
        if head_seq > last:
            return AuditReport(count, last + 1, f"entries {last + 1}..{head_seq} were removed "
                               f"from the end (the {what} is at {head_seq})", last, prev)
        if head_seq < 0 or head_seq not in hashes \
                or not hmac.compare_digest(hashes[head_seq], head_hash):
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
    most that much - it is a lower bound on the chain, which is all the check needs.

    The check value is an HMAC under the head key (AtRestKeys.head_mac), so someone without
    the at-rest key can neither rewrite the head nor recompute a torn slot. The unkeyed
    formats of earlier versions (a SHA-256 check, or the one-line ``<seq> <hash hex>``) are
    read only by the schema migration that introduced the key (:meth:`read_unkeyed`), which
    rewrites the file keyed; afterwards they are reported as "unkeyed", never trusted."""

    SLOT = 512
    SYNC_INTERVAL = 1.0

    def __init__(self, path: str | None, mac: HmacSha256 | None = None):
        self.path = path
        self._mac = mac
        self._lock = threading.Lock()
        self._written = 0
        self._fd: int | None = None
        self._slot = 0
        self._synced_at = 0.0
        self._dirty = False

    def _check(self, seq: int, hex_hash: str) -> str:
        return self._mac(f"otpfast head {seq} {hex_hash}".encode("ascii")).hex()[:32]

    @staticmethod
    def _unkeyed_check(seq: int, hex_hash: str) -> str:
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

    def _slots(self, keyed: bool):
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
                if keyed:
                    valid = hmac.compare_digest(fields[2].decode("ascii"),
                                                self._check(seq, hex_hash))
                else:
                    valid = ((len(data) < self.SLOT and len(fields) == 2)
                             or fields[2].decode("ascii") == self._unkeyed_check(seq, hex_hash))
            except (IndexError, ValueError, UnicodeDecodeError):
                continue
            if valid and (best is None or seq > best[0]):
                best = (seq, digest)
        return best if best is not None else (-1, b"")

    def read(self):
        """(seq, hash) of the newest valid slot; None without a path; "missing" without a
        file; "unkeyed" when only an earlier version's unkeyed slot is there; (-1, b"")
        when no slot is valid."""
        if self.path is None:
            return None
        best = self._slots(keyed=True)
        if best is None:
            return "missing"
        if best[0] < 0 and self._slots(keyed=False)[0] >= 0:
            return "unkeyed"
        return best

    def read_unkeyed(self) -> tuple[int, bytes] | None:
        """The head an earlier version wrote (unkeyed), for the migration only."""
        if self.path is None:
            return None
        best = self._slots(keyed=False)
        return None if best is None or best[0] < 0 else best

    def rewrite(self, seq: int, digest: bytes) -> None:
        """Replace the file by one keyed slot naming (seq, digest) (the migration)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            hex_hash = digest.hex()
            line = f"{seq} {hex_hash} {self._check(seq, hex_hash)}\n".encode("ascii")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, line.ljust(self.SLOT - 1, b" ") + b"\n" + b" " * self.SLOT)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._written = max(self._written, seq)
