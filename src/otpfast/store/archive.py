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

Several chains (PostgreSQL: one per node process, otpfast.store.postgres): each chain has an
anchor of its own (``audit_anchor`` row ``id`` = the chain; chains other than 1 MAC their
number in too), and :func:`archive_chains` moves the run dated before DATE of every chain
in one transaction, in one snapshot (REPEATABLE READ: nodes go on writing meanwhile; what
they commit after it is neither checked nor moved). The file is then format 2: the header
names each chain's from/to points, each entry its chain. A carried-over version is folded
in at its own version (otpfast.store.chain.fold_records), so a node that writes the row
again while the archive runs still wins.
"""
import contextlib
import dataclasses
import hmac
import json
import os

from otpfast.errors import StoreError

from .base import AuditEntry, AuditReport
from .chain import ZERO_HASH, chain_genesis, check_chain, fold_records, record_version

FORMAT = "otpfast-audit-archive-1"
FORMAT_CHAINS = "otpfast-audit-archive-2"     # several chains (PostgreSQL)


@dataclasses.dataclass(frozen=True, slots=True)
class Archived:
    entries: int              # how many entries moved to the file
    first: int                # their seqs (first..last); 0, 0 when none
    last: int                 # (several chains: those of the first chain moved)
    chains: tuple = ()        # several chains: (chain, first, last) of each chain moved


def anchor_mac(keys, seq: int, digest: bytes, chain: int = 1) -> bytes:
    name = "anchor" if chain == 1 else f"anchor of chain {chain}"
    return keys.head_mac(f"otpfast {name} {seq} {bytes(digest).hex()}".encode("ascii"))


def read_anchor(store, conn, chain: int = 1):
    """(seq, hash) where ``chain`` starts (its archive anchor, else its genesis), or a str
    saying why the anchor is refused."""
    row = conn.execute(store._sql("SELECT seq, hash, mac FROM audit_anchor WHERE id = :id"),
                       {"id": chain}).fetchone()
    if row is None:
        return (0, chain_genesis(store.keys.audit_mac, chain))
    seq, digest, mac = int(row[0]), bytes(row[1]), bytes(row[2])
    if not hmac.compare_digest(anchor_mac(store.keys, seq, digest, chain), mac):
        which = "the archive anchor" if chain == 1 else f"the archive anchor of chain {chain}"
        return f"{which} was altered (its MAC fails)"
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
    caller's snapshot: every chain from where it starts (its archive anchor, else its
    genesis, otpfast.store.chain.chain_genesis) against its database head and, for the
    chains whose head files this data dir keeps (``head_files``: chain -> HeadFile.read()),
    its head file; then every row against the last entry that wrote it, across chains (by
    version: fold_records). ``entries_of(chain)`` iterates a chain."""
    return _walk_chains(store, conn, head_files, entries_of)[0]


def _walk_chains(store, conn, head_files: dict, entries_of):
    """(report, chain -> [(seq, rows text)], chain -> (seq, hash) where it starts)."""
    heads = conn.execute("SELECT id, node, seq, hash FROM audit_head ORDER BY id").fetchall()
    orphan = conn.execute("SELECT DISTINCT chain FROM audit WHERE chain NOT IN"
                          " (SELECT id FROM audit_head) ORDER BY chain LIMIT 1").fetchone()
    if orphan is not None:
        return AuditReport(0, 1, f"the head row of chain {orphan[0]} was removed (its "
                           "entries are still there)", 0, ZERO_HASH), {}, {}
    known = {int(row[0]) for row in heads}
    for chain, head in sorted(head_files.items()):
        if chain not in known and isinstance(head, tuple) and head[0] > 0:
            return AuditReport(0, 1, f"chain {chain} (head file at entry {head[0]}) was "
                               "removed from the store", 0, ZERO_HASH), {}, {}
    records_of: dict = {}
    starts: dict = {}
    total, anchor_seq, last = 0, 0, AuditReport(0, None, "ok", 0, ZERO_HASH)
    for chain, node, seq, digest in heads:
        where = "" if len(heads) == 1 else f"chain {chain}" + (
            f" (node {node})" if node else "") + ": "
        start = starts[chain] = read_anchor(store, conn, chain)
        if isinstance(start, str):
            return AuditReport(total, 1, where + start, 0, ZERO_HASH), {}, {}
        if chain == 1:
            anchor_seq = start[0]
        records = records_of[chain] = []
        report = check_chain(store.keys.audit_key, entries_of(chain),
                             [("database head", (seq, bytes(digest))),
                              ("head file", head_files.get(chain))],
                             anchor=start, records=records)
        total += report.entries
        if report.first_bad is not None:
            return dataclasses.replace(report, entries=total, reason=where + report.reason,
                                       anchor_seq=anchor_seq), {}, {}
        if report.head_seq or chain == 1:
            last = report
    report = dataclasses.replace(last, entries=total, anchor_seq=anchor_seq)
    problems = store._check_rows(conn, fold_records(
        [record for records in records_of.values() for record in records]), anchor_seq)
    if problems:
        report = dataclasses.replace(report, bad_rows=tuple(problems),
                                     reason=f"{len(problems)} row(s) refused: {problems[0]}")
    return report, records_of, starts


def _entry_json(entry: AuditEntry, chain: bool = False) -> str:
    item = {"seq": entry.seq, "time": entry.time, "event": entry.event,
            "account": entry.account, "client": entry.client, "source": entry.source,
            "outcome": entry.outcome, "hash": entry.hash.hex(), "rows": entry.rows}
    if chain:
        item["chain"] = entry.chain
    return json.dumps(item, sort_keys=True, separators=(",", ":"))


def _point(seq: int, digest: bytes) -> dict:
    return {"seq": seq, "hash": bytes(digest).hex()}


def _run_before(entries, before: float) -> list:
    """The entries up to the first dated at or after ``before``."""
    moved = []
    for entry in entries:
        if entry.time >= before:
            break
        moved.append(entry)
    return moved


def _write_file(path: str, header: dict, lines) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(header, sort_keys=True) + "\n")
        for line in lines:
            fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _carry_over(tx, latest: dict, kept_records) -> None:
    """Rows last written by archived entries keep their versions: recorded ("=") in the
    archive's own entry. ``kept_records``: the (seq, rows text) of the entries left."""
    kept = set()            # the versions the entries left in the log still name
    for seq, text in kept_records:
        kept.add(record_version(seq, text))
        kept.update(ver for _, _, ver in json.loads(text).get("=", ()))
    for record, ver in latest.items():
        if ver != "-" and ver not in kept:
            tx.written[record] = ver


def archive(store, tx, before: float, path: str, head_file, entries_upto, now: float) -> Archived:
    """Inside the write transaction ``tx``: check, write ``path``, delete, move the anchor,
    carry the row versions over. ``entries_upto(seq or None)`` iterates the entries."""
    conn = tx._conn
    report, (latest, records), anchor = _walk(store, conn, head_file, entries_upto(None))
    if not report.ok:
        raise StoreError(f"the audit log does not verify ({report.reason}): nothing archived")
    moved = _run_before(entries_upto(None), before)
    if not moved:
        return Archived(0, 0, 0)
    last = moved[-1]
    header = {"format": FORMAT, "from": _point(*anchor), "to": _point(last.seq, last.hash)}
    _write_file(path, header, map(_entry_json, moved))
    conn.execute(tx._sql("DELETE FROM audit WHERE seq <= :seq"), {"seq": last.seq})
    conn.execute("DELETE FROM audit_anchor")
    conn.execute(tx._sql("INSERT INTO audit_anchor (id, seq, hash, mac) VALUES (1, :seq, :hash,"
                         " :mac)"), {"seq": last.seq, "hash": last.hash,
                                     "mac": anchor_mac(store.keys, last.seq, last.hash)})
    _carry_over(tx, latest, [(seq, text) for seq, text in records if seq > last.seq])
    tx.audit(now, "admin", "-", "-", "cli", f"audit-archived:{moved[0].seq}..{last.seq}")
    return Archived(len(moved), moved[0].seq, last.seq)


def archive_chains(store, tx, before: float, path: str, head_files: dict, entries_of,
                   now: float) -> Archived:
    """:func:`archive` for a store with several chains (PostgreSQL), inside the write
    transaction ``tx`` whose snapshot holds for all its statements: the whole check
    (verify_chains), then of each chain the run after its anchor dated before ``before``
    written to ``path`` (format 2), deleted, and the chain's anchor moved to its end."""
    conn = tx._conn
    report, records_of, starts = _walk_chains(store, conn, head_files, entries_of)
    if not report.ok:
        raise StoreError(f"the audit log does not verify ({report.reason}): nothing archived")
    moved = {chain: run for chain in starts if (run := _run_before(entries_of(chain), before))}
    if not moved:
        return Archived(0, 0, 0)
    header = {"format": FORMAT_CHAINS, "chains": [
        {"chain": chain, "from": _point(*starts[chain]), "to": _point(run[-1].seq, run[-1].hash)}
        for chain, run in moved.items()]}
    _write_file(path, header, (_entry_json(entry, chain=True)
                               for run in moved.values() for entry in run))
    for chain, run in moved.items():
        last = run[-1]
        conn.execute(tx._sql("DELETE FROM audit WHERE chain = :chain AND seq <= :seq"),
                     {"chain": chain, "seq": last.seq})
        conn.execute(tx._sql("DELETE FROM audit_anchor WHERE id = :chain"), {"chain": chain})
        conn.execute(tx._sql("INSERT INTO audit_anchor (id, seq, hash, mac) VALUES (:chain, :seq,"
                             " :hash, :mac)"),
                     {"chain": chain, "seq": last.seq, "hash": last.hash,
                      "mac": anchor_mac(store.keys, last.seq, last.hash, chain)})
    all_records = [record for records in records_of.values() for record in records]
    edges = {chain: run[-1].seq for chain, run in moved.items()}
    _carry_over(tx, fold_records(all_records),
                [(seq, text) for chain, records in records_of.items()
                 for seq, text in records if seq > edges.get(chain, -1)])
    spans = tuple((chain, run[0].seq, run[-1].seq) for chain, run in moved.items())
    tx.audit(now, "admin", "-", "-", "cli", "audit-archived:" + ",".join(
        f"{chain}:{first}..{last}" for chain, first, last in spans))
    first = spans[0]
    return Archived(sum(len(run) for run in moved.values()), first[1], first[2], spans)


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


def verify_file(keys, path: str) -> dict:
    """Prove one archive file: every entry's MAC chained from its ``from`` point and its
    last entry at its ``to`` point, per chain (format 1: chain 1 alone). Returns chain ->
    (from, to, entries); raises StoreError naming what is wrong."""
    try:
        with open(path, encoding="utf-8") as fh:
            header = json.loads(fh.readline())
            if header.get("format") == FORMAT:
                spans = [{"chain": 1, "from": header["from"], "to": header["to"]}]
            elif header.get("format") == FORMAT_CHAINS:
                spans = header["chains"]
            else:
                raise StoreError(f"{path} is not an otpfast audit archive")
            points = {int(span["chain"]): tuple((int(span[end]["seq"]),
                                                 bytes.fromhex(span[end]["hash"]))
                                                for end in ("from", "to")) for span in spans}
            entries: dict = {chain: [] for chain in points}
            for line in fh:
                item = json.loads(line)
                chain = int(item.get("chain", 1))
                if chain not in entries:
                    raise StoreError(f"archive {path} holds an entry of chain {chain}, which "
                                     "its header does not name")
                entries[chain].append(AuditEntry(
                    seq=item["seq"], time=item["time"], event=item["event"],
                    account=item["account"], client=item["client"], source=item["source"],
                    outcome=item["outcome"], hash=bytes.fromhex(item["hash"]),
                    rows=item["rows"], chain=chain))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreError(f"cannot read the archive {path}: {exc}") from None
    proved = {}
    for chain, (start, end) in points.items():
        where = "" if header["format"] == FORMAT else f" chain {chain}"
        report = check_chain(keys.audit_key, entries[chain], [("archive's end", end)],
                             anchor=start)
        if not report.ok:
            raise StoreError(f"archive {path}{where} BROKEN at entry {report.first_bad}: "
                             f"{report.reason}")
        if report.head_seq != end[0]:
            raise StoreError(f"archive {path}{where} ends at entry {report.head_seq}, its "
                             f"header says {end[0]}")
        proved[chain] = (start, end, report.entries)
    return proved


def verify_files(store, paths) -> list[str]:
    """Prove archive files and that they join up, per chain, the last at the chain's
    anchor."""
    lines, pieces = [], {}
    for path in paths:
        proved = verify_file(store.keys, path)
        for chain, (start, end, count) in sorted(proved.items()):
            pieces.setdefault(chain, []).append((start, end, path))
            where = f"chain {chain}: " if set(proved) != {1} else ""
            lines.append(f"archive {path} intact: {where}entries {start[0] + 1}..{end[0]} "
                         f"({count})")
    conn = store._conn()
    for chain, runs in sorted(pieces.items()):
        runs.sort(key=lambda piece: piece[0][0])
        which = "" if chain == 1 else f" of chain {chain}"
        for (_, end, path), (start, _, following) in zip(runs, runs[1:]):
            if end != start:
                raise StoreError(f"archive {following} does not continue {path}{which}")
        anchor = read_anchor(store, conn, chain)
        if isinstance(anchor, str):
            raise StoreError(anchor)
        if runs[-1][1] != (anchor[0], bytes(anchor[1])):
            raise StoreError(f"the last archive{which} ends at entry {runs[-1][1][0]}, the "
                             f"store's anchor{which} is at entry {anchor[0]}")
    return lines
