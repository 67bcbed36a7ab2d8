"""Fixtures for the store tests, which run against both backends, and the PostgreSQL server.

``backend`` is parametrized over "sqlite" and "postgres": a Backend opens stores on one
database (``backend.open()`` = another server process's store) and runs raw SQL on it
(``backend.sql``, ``%s`` placeholders; an attacker's or admin's view). ``store`` is the
store under test. A module keeps to one backend with
``pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)``.

The PostgreSQL server comes from the ``postgres_url`` / ``pg_url`` fixtures of tests/conftest.py:
each test gets its own schema (selected through the connection's search_path), dropped
afterwards. A missing PostgreSQL or psycopg skips outside CI and fails in CI.
"""
import sqlite3

import pytest

from otpfast.store import SQLiteStore, new_key

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture
def key():
    return new_key()


class Backend:
    """One database of one backend kind: opens stores on it and runs raw SQL on it."""

    def __init__(self, kind: str, target: str, key: bytes, head_path: str):
        self.kind = kind            # "sqlite" | "postgres"
        self.target = target        # the SQLite file or the PostgreSQL conninfo
        self.key = key
        self.head_path = head_path
        self._stores: list = []
        self._raw = None

    @property
    def module(self):
        """The backend's module: connect(target), migrate(conn, target=N), MIGRATIONS."""
        if self.kind == "sqlite":
            from otpfast.store import sqlite as module
        else:
            from otpfast.store import postgres as module
        return module

    @property
    def error(self):
        """The driver's base exception class."""
        if self.kind == "sqlite":
            return sqlite3.Error
        import psycopg
        return psycopg.Error

    def open(self, key: bytes | None = None, *, create: bool = False, head: bool = False,
             **kwargs):
        """A store on this database, as another server process would open it."""
        key = self.key if key is None else key
        if head:
            kwargs["head_path"] = self.head_path
        if self.kind == "sqlite":
            store = SQLiteStore(self.target, key, create=create, **kwargs)
        else:
            store = self.module.PostgresStore(self.target, key, create=create, **kwargs)
        self._stores.append(store)
        return store

    def connect(self):
        """A plain autocommit connection (closed by the caller)."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.target)
            conn.isolation_level = None
            return conn
        import psycopg
        return psycopg.connect(self.target, autocommit=True)

    def execute(self, conn, statement: str, params=()) -> list:
        if self.kind == "sqlite":
            cur = conn.execute(statement.replace("%s", "?"), params)
        else:
            cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []

    def sql(self, statement: str, params=()) -> list:
        """Run one statement on a raw connection; the rows it returned."""
        if self._raw is None:
            self._raw = self.connect()
        return self.execute(self._raw, statement, params)

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
        for store in self._stores:
            store.close()


@pytest.fixture(params=BACKENDS)
def backend(request, key, tmp_path):
    if request.param == "sqlite":
        target = str(tmp_path / "store.db")
    else:
        target = request.getfixturevalue("pg_url")
    b = Backend(request.param, target, key, str(tmp_path / "audit.head"))
    yield b
    b.close()


@pytest.fixture
def store(backend):
    """The store under test (with a head file outside the database)."""
    return backend.open(create=True, head=True)
