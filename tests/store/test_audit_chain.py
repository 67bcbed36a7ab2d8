"""The audit chain, in each backend: edits, deletions, truncation and re-chaining are detected;
concurrent writers from several stores keep one chain and never look like tampering."""
import os
import threading

import pytest

from otpfast.store import new_key
from otpfast.store.common import ZERO_HASH, HeadFile, audit_mac


def fill_audit(store, n=6):
    for i in range(n):
        with store.transaction() as tx:
            tx.audit(100.0 + i, "verify", "alice", "rp", "net", "accepted")


def test_audit_chain_intact(store):
    fill_audit(store)
    report = store.verify_audit()
    assert report.ok and report.entries == 6 and report.head_seq == 6
    assert [e.seq for e in store.audit_entries()] == [1, 2, 3, 4, 5, 6]


def test_audit_entries_keep_exact_times(store):
    with store.transaction() as tx:
        tx.audit(1763812345.123456789, "verify", "alice", "rp", "net", "accepted")
        tx.audit(0.1 + 0.2, "verify", "alice", "rp", "net", "accepted")
    assert [e.time for e in store.audit_entries()] == [1763812345.123456789, 0.1 + 0.2]
    assert store.verify_audit().ok


def test_audit_detects_edited_row(backend, store):
    fill_audit(store)
    backend.sql("UPDATE audit SET outcome = 'rejected:format' WHERE seq = 3")
    report = store.verify_audit()
    assert report.first_bad == 3 and "altered" in report.reason


def test_audit_detects_edited_time(backend, store):
    fill_audit(store)
    backend.sql("UPDATE audit SET time = time + 1 WHERE seq = 2")
    assert store.verify_audit().first_bad == 2


def test_audit_detects_deleted_middle_row(backend, store):
    fill_audit(store)
    backend.sql("DELETE FROM audit WHERE seq = 4")
    report = store.verify_audit()
    assert report.first_bad == 4 and "missing" in report.reason


def test_audit_detects_renumbered_rows_after_delete(backend, store):
    fill_audit(store)
    backend.sql("DELETE FROM audit WHERE seq = 4")
    backend.sql("UPDATE audit SET seq = seq - 1 WHERE seq > 4")
    assert store.verify_audit().first_bad == 4


def test_audit_detects_truncated_tail(backend, store):
    fill_audit(store)
    backend.sql("DELETE FROM audit WHERE seq > 4")
    report = store.verify_audit()
    assert report.first_bad == 5 and "removed from the end" in report.reason


def test_audit_detects_truncated_tail_with_rewritten_db_head(backend, store):
    fill_audit(store)
    backend.sql("DELETE FROM audit WHERE seq > 4")
    backend.sql("UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit WHERE seq = 4)")
    report = store.verify_audit()      # the head file outside the database still says 6
    assert report.first_bad == 5 and "head file" in report.reason


def test_audit_detects_rows_written_outside_otpfast(backend, store):
    fill_audit(store, 3)
    backend.sql("INSERT INTO audit SELECT 4, time, event, account, client, source, outcome,"
                " hash, rows FROM audit WHERE seq = 3")
    assert store.verify_audit().first_bad == 4


def test_audit_cannot_be_rechained_without_the_key(backend, store):
    """An attacker who recomputes the chain with a key of their own is still detected."""
    fill_audit(store)
    forged_key, prev = new_key(), ZERO_HASH
    rows = backend.sql("SELECT seq, time, event, account, client, source, outcome FROM audit"
                       " ORDER BY seq")
    for seq, time_, event, account, client, source, outcome in rows:
        if seq == 2:
            outcome = "rejected:format"
        prev = audit_mac(forged_key, prev, seq, time_, event, account, client, source, outcome)
        backend.sql("UPDATE audit SET outcome = %s, hash = %s WHERE seq = %s",
                    (outcome, prev, seq))
    backend.sql("UPDATE audit_head SET hash = %s", (prev,))
    assert store.verify_audit().first_bad == 1


def test_audit_concurrent_writers_keep_one_chain(backend, store):
    """Two stores (two server processes) append while a third checks: every check sees an
    intact chain (one snapshot), and the final chain has every entry exactly once."""
    others = [backend.open(head=True) for _ in range(2)]     # one data dir: one head file
    checks, stop = [], threading.Event()

    def writer(s, tag):
        for i in range(40):
            with s.transaction() as tx:
                tx.audit(float(i), "verify", tag, "rp", "net", "accepted")
                tx.audit(float(i), "verify", tag, "rp", "net", "rejected:no-match")

    def checker():
        while not stop.is_set():
            checks.append(store.verify_audit())

    threads = [threading.Thread(target=writer, args=(s, f"acct{n}"))
               for n, s in enumerate(others)]
    check = threading.Thread(target=checker)
    check.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    check.join()
    assert checks and all(r.ok for r in checks), [r.reason for r in checks if not r.ok][:3]
    report = store.verify_audit()
    assert report.ok and report.entries == 160
    entries = list(store.audit_entries())
    assert sum(e.account == "acct0" for e in entries) == 80
    for a, b in zip(entries[::2], entries[1::2]):       # a transaction's entries stay together
        assert (a.account, a.outcome, b.account, b.outcome) == \
            (b.account, "accepted", a.account, "rejected:no-match")


def test_head_file_survives_a_torn_slot(backend, store):
    """The head file has two slots written alternately: a write torn by a crash spoils one
    slot and the other still names an earlier committed entry (the check stays valid);
    spoiling both is reported."""
    fill_audit(store, 3)
    store.close()                     # flush and release the head file
    with open(backend.head_path, "rb") as fh:
        data = bytearray(fh.read())
    assert len(data) == 1024
    newest = 0 if data[:2] == b"3 " else 512
    assert data[newest:newest + 2] == b"3 " and data[512 - newest:514 - newest] == b"2 "
    torn = bytearray(data)
    torn[newest + 10] ^= 0x01         # one flipped hex digit: that slot's check fails
    with open(backend.head_path, "wb") as fh:
        fh.write(torn)
    reopened = backend.open(head=True)
    assert reopened._head_file.read()[0] == 2
    assert reopened.verify_audit().ok
    torn[512 - newest + 3] ^= 0x01
    with open(backend.head_path, "wb") as fh:
        fh.write(torn)
    report = reopened.verify_audit()
    assert not report.ok and "head file" in report.reason


def test_head_file_unkeyed_rewrite_is_refused(backend, store):
    """Finding 7: the head file's check is a MAC. Truncating the log and rewriting the head
    file (and the database head) to match, in the unkeyed format of earlier versions or
    with a forged check, is reported."""
    fill_audit(store, 4)
    store.close()
    backend.sql("DELETE FROM audit WHERE seq > 2")
    backend.sql("UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit WHERE seq = 2)")
    [(digest,)] = backend.sql("SELECT hash FROM audit WHERE seq = 2")
    reopened = backend.open(head=True)
    for text in (f"2 {bytes(digest).hex()}\n",                       # the one-line format
                 f"2 {bytes(digest).hex()} {HeadFile._unkeyed_check(2, bytes(digest).hex())}"
                 .ljust(511) + "\n" + " " * 512,                    # unkeyed slots
                 f"2 {bytes(digest).hex()} {'0' * 32}".ljust(511) + "\n" + " " * 512):
        with open(backend.head_path, "w") as fh:
            fh.write(text)
        report = reopened.verify_audit()
        assert not report.ok and "head file" in report.reason, text


def test_head_file_missing_with_entries_is_an_error(backend, store):
    """Finding 7: deleting audit.head no longer hides a truncation, even of the whole log."""
    fill_audit(store, 3)
    store.close()
    os.remove(backend.head_path)
    backend.sql("DELETE FROM audit")
    backend.sql("UPDATE audit_head SET seq = 0, hash = %s", (ZERO_HASH,))
    report = backend.open(head=True).verify_audit()
    assert not report.ok and "head file is missing" in report.reason
    assert backend.open().verify_audit().ok     # a store opened without a head file: no check


def test_head_file_is_rewritten_after_removal(backend, store):
    fill_audit(store, 2)
    os.remove(backend.head_path)
    fill_audit(store, 1)
    assert store._head_file.read()[0] == 3 and store.verify_audit().ok


def test_audit_archive_keeps_the_rest_provable(backend, store, tmp_path):
    """Deliver 3: entries before a date move to a file, the rest is proved from a MACed
    anchor, the file on its own and joined to the anchor; rows last written by archived
    entries stay covered; a forged anchor is reported."""
    from otpfast.errors import StoreError
    from otpfast.store import archive

    with store.transaction() as tx:
        tx.add_authority(1, b"h" * 32, 1.0)
        tx.audit(10.0, "admin", "-", "authority:1", "cli", "authority-added")
    fill_audit(store, 3)                     # times 100..102
    path = str(tmp_path / "a.jsonl")
    done = store.archive_audit(101.0, path, 500.0)
    assert (done.entries, done.first, done.last) == (2, 1, 2)
    report = store.verify_audit()
    assert report.ok and report.anchor_seq == 2 and report.entries == 3, report.reason
    assert archive.verify_files(store, [path])[0].endswith("entries 1..2 (2)")
    with pytest.raises(StoreError, match="exists"):
        store.archive_audit(1e12, path, 600.0)
    second = str(tmp_path / "b.jsonl")
    assert store.archive_audit(1e12, second, 600.0).entries == 3    # 3..5, archive entry too
    assert store.verify_audit().ok
    assert len(archive.verify_files(store, [second, path])) == 2     # joined, any order
    with pytest.raises(StoreError, match="anchor"):
        archive.verify_files(store, [path])                          # ends before the anchor
    backend.sql("UPDATE authorities SET credential_hash = %s", (b"x" * 32,))
    assert any("authorities row 1" in p for p in store.verify_audit().bad_rows)
    backend.sql("UPDATE authorities SET credential_hash = %s", (b"h" * 32,))
    assert store.verify_audit().ok
    backend.sql("UPDATE audit_anchor SET seq = seq + 1")
    report = store.verify_audit()
    assert not report.ok and "anchor was altered" in report.reason
    with pytest.raises(StoreError, match="does not verify"):
        store.archive_audit(1e12, str(tmp_path / "c.jsonl"), 700.0)
    assert not os.path.exists(tmp_path / "c.jsonl")
