"""The store's behaviour, run against each backend (SQLite and PostgreSQL): conditional
updates, single use under concurrency, two stores on one database, at-rest encryption,
migrations."""
import dataclasses
import threading

import pytest

from otpfast.errors import StoreBusy, StoreError
from otpfast.store import SCHEMA_VERSION, new_key
from otpfast.store.atrest import AtRestKeys
from otpfast.store.common import ZERO_HASH, audit_mac

PARAMS = {"lockout": 3, "digits": 6, "ttl": 300}
SECRET = bytes(range(100, 132))


def add_account(store, name="alice", material=None, now=1000.0):
    with store.transaction() as tx:
        assert tx.add_account(name, "hotp", PARAMS, material or {"key": SECRET.hex()}, None, now)


# -- opening ----------------------------------------------------------------------------
def test_store_creates_current_schema(backend, store):
    assert store.schema_version() == SCHEMA_VERSION == len(backend.module.MIGRATIONS)
    assert backend.sql("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert backend.sql("SELECT seq, hash FROM audit_head") == [(0, ZERO_HASH)]


def test_store_absent_store_is_refused_without_create(backend):
    with pytest.raises(StoreError, match="no (otpfast )?store"):
        backend.open()


def test_store_wrong_key_is_refused(backend, store):
    add_account(store)
    with pytest.raises(StoreError, match="at-rest key does not match"):
        backend.open(new_key())


def test_store_newer_schema_is_refused(backend, store):
    backend.sql("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        backend.open()


# -- conditional updates ----------------------------------------------------------------
def test_store_insert_is_not_duplicated(store):
    add_account(store)
    with store.transaction() as tx:
        assert not tx.add_account("alice", "totp", PARAMS, None, None, 1.0)
        assert tx.add_authority(1, b"h" * 32, 1.0)
        assert not tx.add_authority(1, b"x" * 32, 2.0)
        assert tx.add_client("dev", "alice", False, b"h" * 32, 1.0)
        assert not tx.add_client("dev", None, True, b"x" * 32, 1.0)
    assert store.account("alice").type == "hotp"
    assert store.authority(1).credential_hash == b"h" * 32
    client = store.client("dev")
    assert (client.verifier, client.account) == (False, "alice")
    assert store.client("nobody") is None and store.authority(2) is None
    assert store.account("nobody") is None


def test_store_accounts_sorted_bytewise(store):
    for name in ("b", "B", "a", "A"):
        add_account(store, name)
    assert [a.name for a in store.accounts()] == ["A", "B", "a", "b"]


def test_store_advance_counter_is_conditional(store):
    add_account(store)
    with store.transaction() as tx:
        assert tx.advance_counter("alice", 0, 1)
        assert not tx.advance_counter("alice", 0, 5)   # stale old value: no change
        assert not tx.advance_counter("nobody", 0, 1)
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
        assert not tx.clear_failures("alice")           # at the lockout: cannot be cleared
        assert tx.lock("alice") and not tx.lock("nobody")
    alice = store.account("alice")
    assert alice.failures == 3 and alice.locked and alice.locked_at(1e12)
    with store.transaction() as tx:
        assert tx.unlock("alice")
    alice = store.account("alice")
    assert (alice.failures, alice.failed_at, alice.locked_until, alice.locks) == (0, 0, 0, 0)
    assert not alice.locked


def test_store_pending_account_activates_once(store):
    with store.transaction() as tx:
        assert tx.add_account("p", "hotp", PARAMS, None, None, 1.0)
        assert tx.add_contribution("p", 1, b"s" * 16, b"D" * 32, b"c" * 32, 1.0)
        assert not tx.add_contribution("p", 1, b"t" * 16, b"E" * 32, b"e" * 32, 2.0)
        assert tx.add_contribution("p", 2, b"u" * 16, b"F" * 32, b"f" * 32, 2.0)
    assert store.account("p").state == "pending" and store.account("p").material is None
    with store.transaction() as tx:
        assert [c.digest for c in tx.contributions("p")] == [b"D" * 32, b"F" * 32]
        assert tx.activate_account("p", {"key": "ab"}, None, b"T" * 32, counter=4)
        assert not tx.activate_account("p", {"key": "cd"}, None, b"U" * 32)
    record = store.account("p")
    assert (record.state, record.material, record.transcript, record.counter) == \
        ("active", {"key": "ab"}, b"T" * 32, 4)


def test_store_delete_account_removes_its_rows(backend, store):
    add_account(store)
    with store.transaction() as tx:
        tx.add_contribution("alice", 1, b"s" * 16, b"D" * 32, b"c" * 32, 1.0)
        tx.issue("alice", "dev", b"d" * 32, 1.0, 100.0)
    with store.transaction() as tx:
        assert tx.delete_account("alice")
        assert not tx.delete_account("alice")
    assert store.account("alice") is None
    for table in ("contributions", "issued"):
        assert backend.sql(f"SELECT count(*) FROM {table}") == [(0,)]


def test_store_issued_used_once_and_expires(store):
    add_account(store)
    digest = store.keys.otp_digest("alice", "123456")
    with store.transaction() as tx:
        first = tx.issue("alice", "dev", digest, 1000.0, 1300.0)
        second = tx.issue("alice", "dev", store.keys.otp_digest("alice", "654321"), 1000.0,
                          1300.0)
        assert second > first
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


def test_store_batch_reads_accounts_and_issued_in_one_go(store):
    add_account(store, "alice")
    add_account(store, "bob", {"key": "ff" * 20})
    d1, d2 = store.keys.otp_digest("alice", "111111"), store.keys.otp_digest("bob", "222222")
    with store.transaction() as tx:
        ids = [tx.issue("alice", "dev", d1, 1.0, 100.0), tx.issue("alice", "dev", d1, 2.0, 100.0),
               tx.issue("bob", "dev", d2, 1.0, 10.0), tx.issue("bob", "dev", d1, 1.0, 100.0)]
    with store.transaction() as tx:
        found = tx.accounts(["alice", "nobody", "bob", "alice", None])
        assert sorted(found) == ["alice", "bob"] and found["bob"].material == {"key": "ff" * 20}
        assert tx.accounts([]) == {}
        wanted = [("alice", d1), ("bob", d2), ("bob", d1), ("alice", d2), ("alice", d1)]
        assert tx.find_issued(wanted, 50.0) == {("alice", d1): ids[:2], ("bob", d1): [ids[3]]}
        assert tx.find_issued([], 50.0) == {}
        # each id only once, only unused and unexpired: ids[2] expired at 10
        assert tx.use_issued_ids([ids[0], ids[2]], 50.0) == 1
        assert tx.use_issued_ids([ids[0], ids[1]], 50.0) == 1
        assert tx.find_issued(wanted, 50.0) == {("bob", d1): [ids[3]]}


def test_store_update_accounts_is_compare_and_set(store):
    add_account(store, "alice")
    add_account(store, "bob")
    alice, bob = store.account("alice"), store.account("bob")

    def moved(record, **changes):
        return dataclasses.replace(record, **changes)

    with store.transaction() as tx:
        assert tx.update_accounts([(alice, moved(alice, counter=5, failures=2)),
                                   (bob, moved(bob, last_step=7, chain_last=b"x"))]) == 2
        # from a stale state: no row matches
        assert tx.update_accounts([(alice, moved(alice, counter=9))]) == 0
        now_alice = tx.account("alice")
        # last_step never goes back; failures never beyond the lockout (3)
        assert tx.update_accounts([(now_alice, moved(now_alice, last_step=-5))]) == 0
        assert tx.update_accounts([(now_alice, moved(now_alice, failures=4))]) == 0
        now_bob = tx.account("bob")
        assert tx.update_accounts([(now_bob, moved(now_bob, chain_last=b"y", failures=3,
                                                   failed_at=2, locked_until=9,
                                                   locks=1))]) == 1
        # the lock is part of the compare: a stale locked_until matches no row
        assert tx.update_accounts([(now_bob, moved(now_bob, locks=2))]) == 0
    alice, bob = store.account("alice"), store.account("bob")
    assert (alice.counter, alice.failures, alice.last_step) == (5, 2, -1)
    assert (bob.last_step, bob.chain_last, bob.failures) == (7, b"y", 3)
    assert (bob.failed_at, bob.locked_until, bob.locks) == (2, 9, 1)


def test_store_transaction_rolls_back_on_exception(store):
    add_account(store)
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.advance_counter("alice", 0, 7)
            tx.audit(1.0, "verify", "alice", "-", "-", "accepted")
            raise RuntimeError("boom")
    assert store.account("alice").counter == 0
    assert [e.event for e in store.audit_entries()] == ["store"]    # add_account's record
    assert store.verify_audit().ok
    with store.transaction() as tx:     # the connection is usable again
        assert tx.advance_counter("alice", 0, 1)


def test_store_transactions_do_not_nest(store):
    with store.transaction():
        with pytest.raises(StoreError, match="do not nest"):
            with store.transaction():
                pass


# -- concurrency; two stores = two server processes --------------------------------------
def test_store_transaction_without_waiting_is_busy_while_another_writer_writes(backend, store):
    other = backend.open()
    with other.transaction() as tx:
        tx.audit(1.0, "admin", "-", "-", "cli", "ok")
        with pytest.raises(StoreBusy, match="busy"):
            with store.transaction(wait=False) as mine:
                mine.audit(1.5, "admin", "-", "-", "cli", "never written")
    with store.transaction(wait=False) as tx:      # free again: no waiting needed
        tx.audit(2.0, "admin", "-", "-", "cli", "ok")
    assert [e.outcome for e in store.audit_entries()] == ["ok", "ok"]
    assert store.verify_audit().ok


def test_two_stores_see_each_others_changes(backend, store):
    other = backend.open()
    add_account(store)
    assert other.account("alice").material == {"key": SECRET.hex()}
    with other.transaction() as tx:
        assert tx.advance_counter("alice", 0, 3)
        assert tx.record_failure("alice")
        tx.audit(1.0, "verify", "alice", "-", "net", "rejected")
    record = store.account("alice")
    assert (record.counter, record.failures) == (3, 1)
    with store.transaction() as tx:
        assert not tx.advance_counter("alice", 0, 1)     # the other's change is current
        tx.audit(2.0, "verify", "alice", "-", "net", "accepted")
    assert [e.seq for e in other.audit_entries()] == [1, 2, 3]   # 1: add_account's record
    assert store.verify_audit().ok and other.verify_audit().ok


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


def test_store_concurrent_counter_advance_from_two_stores(backend, store):
    """Read, then conditional update, from two stores' threads: the read stays current
    inside the transaction (one write lock), so every advance wins and none is lost."""
    add_account(store)
    other = backend.open()
    wins = []

    def worker(s):
        for _ in range(25):
            with s.transaction() as tx:
                old = tx.account("alice").counter
                wins.append(tx.advance_counter("alice", old, old + 1))
                tx.audit(1.0, "request", "alice", "dev", "-", "issued")

    threads = [threading.Thread(target=worker, args=(s,)) for s in (store, other, store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 100 and all(wins) and store.account("alice").counter == 100
    report = store.verify_audit()
    assert report.ok and report.entries == 101      # and add_account's record


def test_store_many_openers_migrate_once(backend):
    """Several processes' worth of openers racing on an empty database: one schema."""
    errors, stores, barrier = [], [], threading.Barrier(6)

    def opener():
        barrier.wait()
        try:
            stores.append(backend.open(create=True))
        except Exception as exc:   # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {s.schema_version() for s in stores} == {SCHEMA_VERSION}


# -- at-rest encryption -----------------------------------------------------------------
def test_store_secret_not_in_tables(backend, store):
    add_account(store)
    with store.transaction() as tx:
        tx.add_client("dev", "alice", False, b"h" * 32, 1.0)
        tx.add_contribution("alice", 1, b"s" * 16, b"D" * 32, b"c" * 32, 1.0)
    data = b""
    for table in ("accounts", "clients", "contributions", "meta"):
        for row in backend.sql(f"SELECT * FROM {table}"):
            for value in row:
                data += value if isinstance(value, bytes) else str(value).encode()
    assert b"alice" in data and b"h" * 32 in data     # the rows are the ones written
    for secret in (SECRET, SECRET.hex().encode(), b"M" * 32, b"D" * 32):
        assert secret not in data
    assert store.account("alice").material == {"key": SECRET.hex()}
    assert store.contributions("alice")[0].digest == b"D" * 32


def test_store_encryption_format_is_shared(backend, store, key):
    """AES-GCM under AtRestKeys with the record's identity as associated data, the same
    bytes layout in both backends."""
    add_account(store)
    [(blob,)] = backend.sql("SELECT material_enc FROM accounts")
    assert AtRestKeys(key).decrypt(bytes(blob), b"account\0alice") == \
        b'{"key": "' + SECRET.hex().encode() + b'"}'


def test_store_associated_data_binds_account(backend, store):
    add_account(store, "alice")
    add_account(store, "bob", {"key": "ff" * 20})
    backend.sql("UPDATE accounts SET material_enc = (SELECT material_enc FROM accounts"
                " WHERE name = 'alice') WHERE name = 'bob'")
    assert store.account("alice").material == {"key": SECRET.hex()}
    assert store.account("bob") is None     # refused (its MAC fails; it would not decrypt)


# -- migrations -------------------------------------------------------------------------
def test_store_upgrades_from_v1(backend, key):
    conn = backend.module.connect(backend.target)
    try:
        assert backend.module.migrate(conn, target=1) == 1
        with pytest.raises(backend.error):
            backend.execute(conn, "SELECT seq FROM audit_head")
        # a v1 store with an account and two audit entries written by the v1 code
        backend.execute(conn, "INSERT INTO accounts (name, type, params, state, counter,"
                        " lockout, created_at) VALUES ('old', 'totp', '{\"lockout\": 10}',"
                        " 'pending', 3, 10, 1.0)")
        audit_key = AtRestKeys(key).audit_key
        prev = ZERO_HASH
        for seq in (1, 2):
            mac = audit_mac(audit_key, prev, seq, 5.0, "admin", "old", "-", "cli", "ok")
            backend.execute(conn, "INSERT INTO audit VALUES (%s, 5.0, 'admin', 'old', '-',"
                            " 'cli', 'ok', %s)", (seq, mac))
            prev = mac
        assert backend.execute(conn, "SELECT version FROM schema_version") == [(1,)]
    finally:
        conn.close()
    store = backend.open()
    assert store.schema_version() == SCHEMA_VERSION
    record = store.account("old")
    assert (record.counter, record.transcript, record.state) == (3, None, "pending")
    report = store.verify_audit()
    assert report.ok and report.head_seq == 4       # v4 sealed the rows, v5: main tokens
    with store.transaction() as tx:
        tx.audit(6.0, "admin", "old", "-", "cli", "ok")
    assert store.verify_audit().ok and store.verify_audit().head_seq == 5
