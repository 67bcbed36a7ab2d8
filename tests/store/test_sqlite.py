import os
import sqlite3
import threading

import pytest

from otpfast.errors import StoreError
from otpfast.store import SCHEMA_VERSION, SQLiteStore, new_key
from otpfast.store.atrest import ENV_VAR, encode_key, load_key
from otpfast.store.sqlite import MIGRATIONS, ZERO_HASH, _audit_mac, connect, migrate

PARAMS = {"lockout": 3, "digits": 6, "ttl": 300}
SECRET = bytes(range(100, 132))


def add_account(store, name="alice", material=None, now=1000.0):
    with store.transaction() as tx:
        assert tx.add_account(name, "hotp", PARAMS, material or {"key": SECRET.hex()}, None, now)


def raw(store_path):
    conn = sqlite3.connect(store_path)
    conn.isolation_level = None
    return conn


def test_store_creates_current_schema(store):
    assert store.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)


def test_store_missing_file_is_refused(tmp_path, key):
    with pytest.raises(StoreError, match="no store"):
        SQLiteStore(str(tmp_path / "absent.db"), key)


def test_store_wal_and_synchronous_full(store):
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_store_insert_is_not_duplicated(store):
    add_account(store)
    with store.transaction() as tx:
        assert not tx.add_account("alice", "totp", PARAMS, None, None, 1.0)
    assert store.account("alice").type == "hotp"


def test_store_advance_counter_is_conditional(store):
    add_account(store)
    with store.transaction() as tx:
        assert tx.advance_counter("alice", 0, 1)
        assert not tx.advance_counter("alice", 0, 5)   # stale old value: no change
    assert store.account("alice").counter == 1


def test_store_advance_step_only_forward(store):
    add_account(store)
    with store.transaction() as tx:
        assert tx.advance_step("alice", -1, 10)
        assert not tx.advance_step("alice", 10, 9)
        assert not tx.advance_step("alice", -1, 11)
    assert store.account("alice").last_step == 10


def test_store_advance_chain_is_conditional(store):
    with store.transaction() as tx:
        tx.add_account("c", "hashchain", PARAMS, {"seed": "00"}, b"A" * 32, 1.0)
        assert not tx.advance_chain("c", b"B" * 32, b"C" * 32)
        assert tx.advance_chain("c", b"A" * 32, b"D" * 32)
    assert store.account("c").chain_last == b"D" * 32


def test_store_failures_stop_at_lockout_and_unlock(store):
    add_account(store)
    with store.transaction() as tx:
        assert [tx.record_failure("alice") for _ in range(5)] == [True, True, True, False, False]
        assert not tx.clear_failures("alice")           # locked: a success cannot unlock
    assert store.account("alice").locked
    with store.transaction() as tx:
        assert tx.unlock("alice")
    assert store.account("alice").failures == 0


def test_store_issued_used_once_and_expires(store):
    add_account(store)
    digest = store.keys.otp_digest("alice", "123456")
    with store.transaction() as tx:
        tx.issue("alice", "dev", digest, 1000.0, 1300.0)
        tx.issue("alice", "dev", store.keys.otp_digest("alice", "654321"), 1000.0, 1300.0)
    with store.transaction() as tx:
        assert tx.use_issued("alice", digest, 1100.0)
        assert not tx.use_issued("alice", digest, 1100.0)
        assert not tx.use_issued("alice", store.keys.otp_digest("alice", "654321"), 1300.0)
        assert not tx.use_issued("bob", store.keys.otp_digest("alice", "654321"), 1100.0)
        assert tx.purge_issued(1300.5) == 2


def test_store_same_value_issued_twice_is_two_uses(store):
    add_account(store)
    digest = store.keys.otp_digest("alice", "111111")
    with store.transaction() as tx:
        tx.issue("alice", "dev", digest, 1.0, 100.0)
        tx.issue("alice", "dev", digest, 2.0, 100.0)
    with store.transaction() as tx:
        assert [tx.use_issued("alice", digest, 50.0) for _ in range(3)] == [True, True, False]


def test_store_transaction_rolls_back_on_exception(store):
    add_account(store)
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.advance_counter("alice", 0, 7)
            tx.audit(1.0, "verify", "alice", "-", "-", "accepted")
            raise RuntimeError("boom")
    assert store.account("alice").counter == 0
    assert list(store.audit_entries()) == []
    assert store.verify_audit().ok


def test_store_concurrent_use_of_one_otp_accepts_once(store):
    add_account(store)
    digest = store.keys.otp_digest("alice", "424242")
    with store.transaction() as tx:
        tx.issue("alice", "dev", digest, 1.0, 100.0)
    results, barrier = [], threading.Barrier(16)

    def worker():
        barrier.wait()
        with store.transaction() as tx:
            results.append(tx.use_issued("alice", digest, 50.0))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True]


def test_store_concurrent_counter_advance_from_two_stores(store_path, store, key):
    """Two processes' worth of connections racing on one counter: each old value wins once."""
    add_account(store)
    other = SQLiteStore(store_path, key)
    wins = []

    def worker(s):
        for _ in range(50):
            with s.transaction() as tx:
                old = tx.account("alice").counter
                wins.append(tx.advance_counter("alice", old, old + 1))

    threads = [threading.Thread(target=worker, args=(s,)) for s in (store, other, store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert all(wins) and store.account("alice").counter == 200


# -- at-rest encryption -----------------------------------------------------------------
def test_store_secret_not_in_database_files(store, store_path):
    add_account(store)
    with store.transaction() as tx:
        tx.add_client("dev", "alice", False, b"h" * 32, b"M" * 32, 1.0)
        tx.add_contribution("alice", 1, b"s" * 16, b"D" * 32, b"c" * 32, 1.0)
    data = b""
    for suffix in ("", "-wal"):
        if os.path.exists(store_path + suffix):
            with open(store_path + suffix, "rb") as fh:
                data += fh.read()
    assert b"alice" in data                  # the file is the one written
    for secret in (SECRET, SECRET.hex().encode(), b"M" * 32, b"D" * 32):
        assert secret not in data
    assert store.account("alice").material == {"key": SECRET.hex()}
    assert store.client("dev").mask_key == b"M" * 32
    assert store.contributions("alice")[0].digest == b"D" * 32


def test_store_wrong_key_is_refused(store, store_path):
    add_account(store)
    with pytest.raises(StoreError, match="at-rest key does not match"):
        SQLiteStore(store_path, new_key())


def test_store_associated_data_binds_account(store, store_path):
    add_account(store, "alice")
    add_account(store, "bob", {"key": "ff" * 20})
    conn = raw(store_path)
    conn.execute("UPDATE accounts SET material_enc = (SELECT material_enc FROM accounts"
                 " WHERE name = 'alice') WHERE name = 'bob'")
    conn.close()
    assert store.account("alice").material == {"key": SECRET.hex()}
    with pytest.raises(StoreError, match="does not decrypt"):
        store.account("bob")


def test_store_key_file_mode_and_env(tmp_path, key, monkeypatch):
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


# -- migrations -------------------------------------------------------------------------
def test_store_upgrades_from_v1(store_path, key):
    conn = connect(store_path)
    assert migrate(conn, target=1) == 1
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("SELECT seq FROM audit_head")
    # a v1 store with an account and two audit entries written by the v1 code
    conn.execute("INSERT INTO accounts (name, type, params, state, counter, lockout, created_at)"
                 " VALUES ('old', 'totp', '{\"lockout\": 10}', 'pending', 3, 10, 1.0)")
    from otpfast.store.atrest import AtRestKeys
    audit_key = AtRestKeys(key).audit_key
    prev = ZERO_HASH
    for seq in (1, 2):
        mac = _audit_mac(audit_key, prev, seq, 5.0, "admin", "old", "-", "cli", "ok")
        conn.execute("INSERT INTO audit VALUES (?, 5.0, 'admin', 'old', '-', 'cli', 'ok', ?)",
                     (seq, mac))
        prev = mac
    conn.close()
    store = SQLiteStore(store_path, key)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        record = store.account("old")
        assert (record.counter, record.transcript, record.state) == (3, None, "pending")
        report = store.verify_audit()
        assert report.ok and report.head_seq == 2
        with store.transaction() as tx:
            tx.audit(6.0, "admin", "old", "-", "cli", "ok")
        assert store.verify_audit().ok
    finally:
        store.close()


def test_store_newer_schema_is_refused(store, store_path, key):
    conn = raw(store_path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(store_path, key)


# -- audit chain ------------------------------------------------------------------------
def fill_audit(store, n=6):
    for i in range(n):
        with store.transaction() as tx:
            tx.audit(100.0 + i, "verify", "alice", "rp", "net", "accepted")


def test_audit_chain_intact(store):
    fill_audit(store)
    report = store.verify_audit()
    assert report.ok and report.entries == 6 and report.head_seq == 6


def test_audit_detects_edited_row(store, store_path):
    fill_audit(store)
    conn = raw(store_path)
    conn.execute("UPDATE audit SET outcome = 'rejected:format' WHERE seq = 3")
    conn.close()
    report = store.verify_audit()
    assert report.first_bad == 3 and "altered" in report.reason


def test_audit_detects_deleted_middle_row(store, store_path):
    fill_audit(store)
    conn = raw(store_path)
    conn.execute("DELETE FROM audit WHERE seq = 4")
    conn.close()
    report = store.verify_audit()
    assert report.first_bad == 4 and "missing" in report.reason


def test_audit_detects_renumbered_rows_after_delete(store, store_path):
    fill_audit(store)
    conn = raw(store_path)
    conn.execute("DELETE FROM audit WHERE seq = 4")
    conn.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 4")
    conn.close()
    assert store.verify_audit().first_bad == 4


def test_audit_detects_truncated_tail(store, store_path):
    fill_audit(store)
    conn = raw(store_path)
    conn.execute("DELETE FROM audit WHERE seq > 4")
    conn.close()
    report = store.verify_audit()
    assert report.first_bad == 5 and "removed from the end" in report.reason


def test_audit_detects_truncated_tail_with_rewritten_db_head(store, store_path):
    fill_audit(store)
    conn = raw(store_path)
    conn.execute("DELETE FROM audit WHERE seq > 4")
    conn.execute("UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit WHERE seq = 4)")
    conn.close()
    report = store.verify_audit()      # the head file outside the database still says 6
    assert report.first_bad == 5 and "head file" in report.reason


def test_audit_cannot_be_rechained_without_the_key(store, store_path):
    """An attacker who recomputes the chain with a key of their own is still detected."""
    fill_audit(store)
    conn = raw(store_path)
    forged_key, prev = new_key(), ZERO_HASH
    rows = conn.execute("SELECT seq, time, event, account, client, source, outcome FROM audit"
                        " ORDER BY seq").fetchall()
    for seq, time_, event, account, client, source, outcome in rows:
        if seq == 2:
            outcome = "rejected:format"
        prev = _audit_mac(forged_key, prev, seq, time_, event, account, client, source, outcome)
        conn.execute("UPDATE audit SET outcome = ?, hash = ? WHERE seq = ?", (outcome, prev, seq))
    conn.close()
    assert store.verify_audit().first_bad == 1


def test_store_many_openers_migrate_once(store_path, key):
    """Several processes' worth of openers racing on a fresh file: one schema, no error."""
    errors, stores, barrier = [], [], threading.Barrier(6)

    def opener():
        barrier.wait()
        try:
            stores.append(SQLiteStore(store_path, key, create=True))
        except Exception as exc:   # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {s.schema_version() for s in stores} == {SCHEMA_VERSION}
    for s in stores:
        s.close()
