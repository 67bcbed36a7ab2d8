"""What only the PostgreSQL backend has: connection handling, session settings, the write
lock's timeout, reconnection, paging the audit log."""
import sys
import threading

import pytest

from otpfast.errors import StoreError

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def test_empty_database_is_refused_and_left_untouched(backend):
    with pytest.raises(StoreError, match="no otpfast store"):
        backend.open()
    assert backend.sql("SELECT to_regclass('schema_version')") == [(None,)]


def test_unreachable_server_is_a_store_error_without_password(backend, key):
    from otpfast.store.postgres import PostgresStore

    with pytest.raises(StoreError, match="cannot open the store") as info:
        PostgresStore("postgresql://otpfast:s3cr3t-pw@127.0.0.1:1/otpfast_test"
                      "?connect_timeout=2", key)
    assert "s3cr3t-pw" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


def test_without_psycopg_the_error_says_how_to_install_it(backend, key, monkeypatch):
    from otpfast.store import postgres

    monkeypatch.setattr(postgres, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg", None)     # makes `import psycopg` fail
    with pytest.raises(StoreError, match=r"otpfast\[postgres\]"):
        postgres.PostgresStore(backend.target, key)


def test_session_is_durable_and_read_committed(backend, store):
    from otpfast.store import postgres

    conn = store._conn()
    assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    assert conn.execute("SHOW default_transaction_isolation").fetchone()[0] == "read committed"
    with pytest.raises(StoreError, match="synchronous_commit"):
        postgres.connect(backend.target, synchronous_commit="off")


def test_server_default_isolation_is_overridden(backend, store):
    """A database set to SERIALIZABLE would make conflicts fail the caller's transaction;
    the store keeps to READ COMMITTED + its write lock."""
    import psycopg
    from otpfast.store.postgres import PostgresStore

    options = psycopg.conninfo.conninfo_to_dict(backend.target)["options"]
    serializable = psycopg.conninfo.make_conninfo(
        backend.target, options=f"{options} -c default_transaction_isolation=serializable")
    other = PostgresStore(serializable, backend.key)
    try:
        conn = other._conn()
        assert conn.execute("SHOW default_transaction_isolation").fetchone()[0] == \
            "read committed"
        with other.transaction() as tx:
            assert tx._conn.execute("SHOW transaction_isolation").fetchone()[0] == \
                "read committed"
        check = psycopg.connect(serializable)    # the option itself does take effect
        assert check.execute("SHOW transaction_isolation").fetchone()[0] == "serializable"
        check.close()
    finally:
        other.close()


def test_write_lock_timeout_is_a_busy_error(backend, store):
    """A writer that cannot get the write lock in time gets StoreError, not a hang."""
    impatient = backend.open(lock_timeout_ms=200)
    holder = backend.connect()
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT 1 FROM audit_head FOR UPDATE")
        with pytest.raises(StoreError, match="busy"):
            with impatient.transaction():
                pass
        holder.execute("ROLLBACK")
        with impatient.transaction() as tx:
            tx.audit(1.0, "admin", "-", "-", "cli", "ok")
    finally:
        holder.close()
    assert store.verify_audit().entries == 1


def test_reconnects_after_the_server_drops_the_session(backend, store):
    with store.transaction() as tx:
        tx.add_account("alice", "hotp", {"lockout": 3}, {"key": "00"}, None, 1.0)
    pid = store._conn().info.backend_pid
    backend.sql("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreError):
        with store.transaction() as tx:
            tx.advance_counter("alice", 0, 1)
    with store.transaction() as tx:          # a fresh connection; nothing was half-written
        assert tx.advance_counter("alice", 0, 1)
    assert store._conn().info.backend_pid != pid


def test_connections_of_finished_threads_are_closed(backend, store):
    used = []

    def touch():
        store.account("alice")
        used.append(store._conn())

    for _ in range(5):
        t = threading.Thread(target=touch)
        t.start()
        t.join()
    touch()
    assert len(set(map(id, used))) == 6
    assert [conn.closed for conn in used] == [True] * 4 + [False, False]
    assert len(store._connections) == 2    # the fixture's thread's and the last thread's


def test_audit_is_read_in_pages(backend, store, monkeypatch):
    from otpfast.store import postgres

    monkeypatch.setattr(postgres, "AUDIT_PAGE", 4)
    for i in range(11):
        with store.transaction() as tx:
            tx.audit(float(i), "verify", "alice", "rp", "net", "accepted")
    assert [e.seq for e in store.audit_entries()] == list(range(1, 12))
    assert store.verify_audit().entries == 11
    backend.sql("DELETE FROM audit WHERE seq = 9")       # a gap in a later page
    assert store.verify_audit().first_bad == 9
