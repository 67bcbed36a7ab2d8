import pytest

from otpfast.store import SQLiteStore, new_key


@pytest.fixture
def key():
    return new_key()


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "store.db")


@pytest.fixture
def store(store_path, key, tmp_path):
    s = SQLiteStore(store_path, key, head_path=str(tmp_path / "audit.head"), create=True)
    yield s
    s.close()
