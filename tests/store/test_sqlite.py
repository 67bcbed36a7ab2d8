"""What only the SQLite backend has: its file, its pragmas, the at-rest key file. Everything
else about the store runs against both backends (test_store_behaviour.py, test_audit_chain.py)."""
import os

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
        tx.add_client("dev", "alice", False, b"h" * 32, b"M" * 32, 1.0)
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
    assert store.client("dev").mask_key == b"M" * 32
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
