"""What only the SQLite backend has: its file, its pragmas, the at-rest key file. Everything
else about the store runs against both backends (test_store_behaviour.py, test_audit_chain.py)."""
import dataclasses
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from otpfast.errors import StoreError
from otpfast.store import SQLiteStore
from otpfast.store.atrest import ENV_VAR, encode_key, load_key

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

PARAMS = {"lockout": 3, "digits": 6, "ttl": 300}
SECRET = bytes(range(100, 132))


def add_account(store, name="alice", material=None, now=1000.0):
    with store.transaction() as tx:
        assert tx.add_account(name, "hotp", PARAMS, material or {"key": SECRET.hex()}, None, now)


def test_store_missing_file_is_refused(backend, tmp_path, key):
    with pytest.raises(StoreError, match="no store"):
        SQLiteStore(str(tmp_path / "absent.db"), key)


def test_store_wal_and_synchronous_full(store):
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_store_secret_not_in_database_files(backend, store):
    add_account(store)
    with store.transaction() as tx:
        tx.add_client("dev", "alice", False, b"h" * 32, 1.0)
        tx.add_contribution("alice", 1, b"s" * 16, b"D" * 32, b"c" * 32, 1.0)
    data = b""
    for suffix in ("", "-wal"):
        if os.path.exists(backend.target + suffix):
            with open(backend.target + suffix, "rb") as fh:
                data += fh.read()
    assert b"alice" in data                  # the file is the one written
    for secret in (SECRET, SECRET.hex().encode(), b"M" * 32, b"D" * 32):
        assert secret not in data
    assert store.account("alice").material == {"key": SECRET.hex()}
    assert store.contributions("alice")[0].digest == b"D" * 32


def test_store_key_file_mode_and_env(backend, tmp_path, key, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    path = tmp_path / "k"
    path.write_text(encode_key(key))
    os.chmod(path, 0o644)
    with pytest.raises(StoreError, match="0600"):
        load_key(str(path))
    os.chmod(path, 0o600)
    assert load_key(str(path)) == key
    monkeypatch.setenv(ENV_VAR, key.hex())
    assert load_key(None) == key
    monkeypatch.setenv(ENV_VAR, "not a key")
    with pytest.raises(StoreError):
        load_key(None)


def test_store_batch_accounts_cached_while_no_other_connection_writes(backend, store):
    """tx.accounts() reads an account once while this connection is the only writer; its own
    changes, a rollback, and another connection's commit (PRAGMA data_version) are all seen."""
    add_account(store, "alice")
    add_account(store, "bob")
    statements = []
    store._conn().set_trace_callback(statements.append)

    def batch_read(names=("alice", "bob", "nobody")):
        statements.clear()
        with store.transaction() as tx:
            found = tx.accounts(list(names))
        return found, sum("FROM accounts" in sql for sql in statements)

    found, reads = batch_read()
    assert set(found) == {"alice", "bob"} and reads == 1
    assert batch_read() == (found, 0)                      # from the cache

    with store.transaction() as tx:                        # this connection's own change
        assert tx.record_failure("alice")
    found, reads = batch_read()
    assert (found["alice"].failures, found["bob"]) == (1, found["bob"]) and reads == 1

    with store.transaction() as tx:                        # a batch moved alice: cached as written
        before = tx.accounts(["alice"])["alice"]
        moved = dataclasses.replace(before, counter=before.counter + 5, failures=0)
        assert tx.update_accounts([(before, moved)]) == 1
    found, reads = batch_read()
    assert (found["alice"].counter, found["alice"].failures, reads) == (before.counter + 5, 0, 0)
    assert found["alice"] == store.account("alice")        # exactly what the row holds

    with pytest.raises(RuntimeError):                      # a rolled-back change
        with store.transaction() as tx:
            tx.record_failure("bob")
            raise RuntimeError("abandon")
    found, reads = batch_read()
    assert found["bob"].failures == 0 and reads == 1

    other = backend.open()                                 # another connection's commit
    with other.transaction() as tx:
        assert tx.record_failure("bob") and tx.record_failure("bob")
    add_account(other, "nobody")
    found, reads = batch_read()
    assert found["bob"].failures == 2 and "nobody" in found and reads == 1


def test_store_commit_without_fsync_then_sync_keeps_sqlite_locks(backend, store):
    """durable=False commits (visible at once) become durable with sync(), which fsyncs the
    WAL through its own descriptor: SQLite's locks in this process must survive it (closing a
    descriptor of the database file would silently drop them)."""
    add_account(store, "alice")
    with store.transaction(durable=False) as tx:
        assert tx.record_failure("alice")
    store.sync()
    store.sync()
    other = backend.connect()
    try:
        assert backend.execute(other, "SELECT failures FROM accounts WHERE name = %s", ("alice",)) == [(1,)]
        other.execute("PRAGMA busy_timeout = 0")
        with store.transaction() as tx:               # holds the write lock ...
            tx.record_failure("alice")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")      # ... and another connection sees it held
    finally:
        other.close()
    assert store.account("alice").failures == 2
    # another process opening and closing the store must still see this process as a user
    # of the WAL (else it checkpoints and deletes it, and later commits here are lost to it)
    read = [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
            " print(c.execute('SELECT failures FROM accounts').fetchone()[0]); c.close()", store.path]
    assert subprocess.run(read, capture_output=True, text=True, check=True).stdout.split() == ["2"]
    with store.transaction() as tx:
        assert tx.record_failure("alice")
    assert subprocess.run(read, capture_output=True, text=True, check=True).stdout.split() == ["3"]


def test_store_deferred_commits_leave_checkpoints_to_sync(backend, store, monkeypatch):
    """durable=False commits never checkpoint inline (the committing thread is the server's
    event loop); sync(), in its helper thread, does it."""
    size = os.path.getsize(store.path)
    for i in range(1200):                                  # > SQLite's 1000-page autocheckpoint
        with store.transaction(durable=False) as tx:
            tx.audit(float(i), "verify", "alice", "-", "t", "x" * 3000)
    assert os.path.getsize(store.path) == size             # everything still in the WAL
    monkeypatch.setattr(store, "CHECKPOINT_INTERVAL", 0.0)
    store.sync()                                           # wakes the checkpoint thread
    deadline = time.monotonic() + 20
    while os.path.getsize(store.path) <= size + 3_000_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.path.getsize(store.path) > size + 3_000_000  # copied into the database file
    assert store.verify_audit().ok


def test_store_head_file_never_ahead_of_deferred_commits(backend, key):
    """The audit head file names only entries on disk: after a durable=False commit it moves
    when sync() has made the entries durable, not before."""
    store = backend.open(create=True, head=True)
    with store.transaction() as tx:
        tx.audit(1.0, "admin", "-", "-", "cli", "ok")
    assert store._head_file.read()[0] == 1
    with store.transaction(durable=False) as tx:
        tx.audit(2.0, "verify", "alice", "-", "t", "ok")
    assert store._head_file.read()[0] == 1                  # entry 2 is not on disk yet
    store.sync()
    assert store._head_file.read()[0] == 2
    with store.transaction(durable=False) as tx:
        tx.audit(3.0, "verify", "alice", "-", "t", "ok")
    store.close()                                           # closing syncs what is pending
    assert backend.open(head=True).verify_audit().ok and store._head_file.read()[0] == 3
