"""Checking the whole store (``audit verify``) and archiving old audit entries.

The check: the archive anchor (MACed), the audit chain from it (every MAC, no gap), the
recorded heads (database head; head file outside the database: MACed, and required once
the log has entries), then every authenticated row against its MAC and the last entry that
wrote it (otpfast.store.rows).

Archiving (``otpfast audit archive --before DATE FILE``), in one write transaction and only
if the check passes: the longest run of entries after the anchor dated before DATE is
written to FILE (JSON lines: a header with the chain points it starts from and ends at,
then one object per entry, hashes in hex), deleted from the database, and the anchor moves
to the last of them, MACed with the head key: the remaining chain is then proved from the
anchor. Rows last written by archived entries keep their versions: an ``audit-archived``
entry carries them over (``[tag, key, ver]`` records), so the row check still covers them.
:func:`verify_file` proves an archive file on its own, and a run of them joins up with the
anchor.
"""
import contextlib
import dataclasses
import hmac
import json
import os

from otpfast.errors import StoreError

from .base import AuditEntry, AuditReport
from .chain import ZERO_HASH, check_chain, fold_records, record_version

FORMAT = "otpfast-audit-archive-1"


@dataclasses.dataclass(frozen=True, slots=True)
class Archived:
    entries: int              # how many entries moved to the file
    first: int                # their seqs (first..last); 0, 0 when none
    last: int


def anchor_mac(keys, seq: int, digest: bytes) -> bytes:
    return keys.head_mac(f"otpfast anchor {seq} {bytes(digest).hex()}".encode("ascii"))


def read_anchor(store, conn):
    """(seq, hash) where the chain starts, or a str saying why the anchor is refused."""
    row = conn.execute("SELECT seq, hash, mac FROM audit_anchor WHERE id = 1").fetchone()
    if row is None:
        return (0, ZERO_HASH)
    seq, digest, mac = int(row[0]), bytes(row[1]), bytes(row[2])
    if not hmac.compare_digest(anchor_mac(store.keys, seq, digest), mac):
        return "the archive anchor was altered (its MAC fails)"
    return (seq, digest)


def _walk(store, conn, head_file, entries):
    """(report, latest row records, anchor) of the whole check, in the caller's snapshot."""
    anchor = read_anchor(store, conn)
    if isinstance(anchor, str):
        return AuditReport(0, 1, anchor, 0, ZERO_HASH), ({}, []), (0, ZERO_HASH)
    db_head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    records: list = []
    report = check_chain(store.keys.audit_key, entries,
                         [("database head", db_head), ("head file", head_file)],
                         anchor=anchor, records=records)
    latest = fold_records(records)
    report = dataclasses.replace(report, anchor_seq=anchor[0])
    if report.first_bad is None:
        problems = store._check_rows(conn, latest, anchor[0])
        if problems:
            report = dataclasses.replace(report, bad_rows=tuple(problems),
                                         reason=f"{len(problems)} row(s) refused: {problems[0]}")
    return report, (latest, records), anchor


def verify(store, conn, head_file, entries) -> AuditReport:
    return _walk(store, conn, head_file, entries)[0]


def verify_chains(store, conn, head_files: dict, entries_of) -> AuditReport:
    """The whole check of a store with one chain per node process (PostgreSQL), in the
    caller's snapshot: every chain from where it starts (chain 1: the archive anchor; the
    others: their genesis, otpfast.store.chain.chain_genesis) against its database head
    and, for the chains whose head files this data dir keeps (``head_files``: chain ->
    HeadFile.read()), its head file; then every row against the last entry that wrote it,
    across chains (by version: fold_records). ``entries_of(chain)`` iterates a chain."""
    heads = conn.execute("SELECT id, node, seq, hash FROM audit_head ORDER BY id").fetchall()
    orphan = conn.execute("SELECT DISTINCT chain FROM audit WHERE chain NOT IN"
                          " (SELECT id FROM audit_head) ORDER BY chain LIMIT 1").fetchone()
    if orphan is not None:
        return AuditReport(0, 1, f"the head row of chain {orphan[0]} was removed (its "
                           "entries are still there)", 0, ZERO_HASH)
    known = {int(row[0]) for row in heads}
    for chain, head in sorted(head_files.items()):
        if chain not in known and isinstance(head, tuple) and head[0] > 0:
            return AuditReport(0, 1, f"chain {chain} (head file at entry {head[0]}) was "
                               "removed from the store", 0, ZERO_HASH)
    records: list = []
    total, anchor_seq, last = 0, 0, AuditReport(0, None, "ok", 0, ZERO_HASH)
    for chain, node, seq, digest in heads:
        start = store._chain_start(conn, chain)
        if isinstance(start, str):
            return AuditReport(total, 1, start, 0, ZERO_HASH)
        if chain == 1:
            anchor_seq = start[0]
        report = check_chain(store.keys.audit_key, entries_of(chain),
                             [("database head", (seq, bytes(digest))),
                              ("head file", head_files.get(chain))],
                             anchor=start, records=records)
        total += report.entries
        if report.first_bad is not None:
            where = "" if len(heads) == 1 else f"chain {chain}" + (
                f" (node {node})" if node else "") + ": "
            return dataclasses.replace(report, entries=total, reason=where + report.reason,
                                       anchor_seq=anchor_seq)
        if report.head_seq or chain == 1:
            last = report
    report = dataclasses.replace(last, entries=total, anchor_seq=anchor_seq)
    problems = store._check_rows(conn, fold_records(records), anchor_seq)
    if problems:
        report = dataclasses.replace(report, bad_rows=tuple(problems),
                                     reason=f"{len(problems)} row(s) refused: {problems[0]}")
    return report


def _entry_json(entry: AuditEntry) -> str:
    return json.dumps({"seq": entry.seq, "time": entry.time, "event": entry.event,
                       "account": entry.account, "client": entry.client,
                       "source": entry.source, "outcome": entry.outcome,
                       "hash": entry.hash.hex(), "rows": entry.rows},
                      sort_keys=True, separators=(",", ":"))


def archive(store, tx, before: float, path: str, head_file, entries_upto, now: float) -> Archived:
    """Inside the write transaction ``tx``: check, write ``path``, delete, move the anchor,
    carry the row versions over. ``entries_upto(seq or None)`` iterates the entries."""
    conn = tx._conn
    report, (latest, records), anchor = _walk(store, conn, head_file, entries_upto(None))
    if not report.ok:
        raise StoreError(f"the audit log does not verify ({report.reason}): nothing archived")
    moved = []
    for entry in entries_upto(None):
        if entry.time >= before:
            break
        moved.append(entry)
    if not moved:
        return Archived(0, 0, 0)
    last = moved[-1]
    header = {"format": FORMAT, "from": {"seq": anchor[0], "hash": bytes(anchor[1]).hex()},
              "to": {"seq": last.seq, "hash": last.hash.hex()}}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(header, sort_keys=True) + "\n")
        for entry in moved:
            fh.write(_entry_json(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    conn.execute(tx._sql("DELETE FROM audit WHERE seq <= :seq"), {"seq": last.seq})
    conn.execute("DELETE FROM audit_anchor")
    conn.execute(tx._sql("INSERT INTO audit_anchor (id, seq, hash, mac) VALUES (1, :seq, :hash,"
                         " :mac)"), {"seq": last.seq, "hash": last.hash,
                                     "mac": anchor_mac(store.keys, last.seq, last.hash)})
    kept = set()            # the versions the entries left in the log still name
    for seq, text in records:
        if seq > last.seq:
            kept.add(record_version(seq, text))
            kept.update(ver for _, _, ver in json.loads(text).get("=", ()))
    for record, ver in latest.items():          # rows last written by archived entries
        if ver != "-" and ver not in kept:
            tx.written[record] = ver
    tx.audit(now, "admin", "-", "-", "cli", f"audit-archived:{moved[0].seq}..{last.seq}")
    return Archived(len(moved), moved[0].seq, last.seq)


def run(store, path: str, archive_in_tx):
    """Run ``archive_in_tx()`` (which writes ``path`` inside a transaction and returns when
    the transaction committed); if it fails, the file it created is removed."""
    if os.path.lexists(path):
        raise StoreError(f"{path} exists already")
    try:
        return archive_in_tx()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        raise


def verify_file(keys, path: str) -> tuple[tuple[int, bytes], tuple[int, bytes], int]:
    """Prove one archive file: every entry's MAC chained from its ``from`` point and its
    last entry at its ``to`` point. Returns (from, to, entries); raises StoreError naming
    what is wrong."""
    try:
        with open(path, encoding="utf-8") as fh:
            header = json.loads(fh.readline())
            if header.get("format") != FORMAT:
                raise StoreError(f"{path} is not an otpfast audit archive")
            start = (int(header["from"]["seq"]), bytes.fromhex(header["from"]["hash"]))
            end = (int(header["to"]["seq"]), bytes.fromhex(header["to"]["hash"]))
            entries = []
            for line in fh:
                item = json.loads(line)
                entries.append(AuditEntry(seq=item["seq"], time=item["time"],
                                          event=item["event"], account=item["account"],
                                          client=item["client"], source=item["source"],
                                          outcome=item["outcome"],
                                          hash=bytes.fromhex(item["hash"]), rows=item["rows"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"cannot read the archive {path}: {exc}") from None
    report = check_chain(keys.audit_key, entries, [("archive's end", end)], anchor=start)
    if not report.ok:
        raise StoreError(f"archive {path} BROKEN at entry {report.first_bad}: {report.reason}")
    if report.head_seq != end[0]:
        raise StoreError(f"archive {path} ends at entry {report.head_seq}, its header says "
                         f"{end[0]}")
    return start, end, report.entries


def verify_files(store, paths) -> list[str]:
    """Prove archive files and that they join up, the last at the store's anchor."""
    lines, pieces = [], []
    for path in paths:
        start, end, count = verify_file(store.keys, path)
        pieces.append((start, end, path))
        lines.append(f"archive {path} intact: entries {start[0] + 1}..{end[0]} ({count})")
    pieces.sort(key=lambda piece: piece[0][0])
    for (_, end, path), (start, _, following) in zip(pieces, pieces[1:]):
        if end != start:
            raise StoreError(f"archive {following} does not continue {path}")
    anchor = read_anchor(store, store._conn())
    if isinstance(anchor, str):
        raise StoreError(anchor)
    if pieces and pieces[-1][1] != (anchor[0], bytes(anchor[1])):
        raise StoreError(f"the last archive ends at entry {pieces[-1][1][0]}, the store's "
                         f"anchor is at entry {anchor[0]}")
    return lines
