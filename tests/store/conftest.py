"""Fixtures for the store tests, which run against both backends, and the PostgreSQL server.

``backend`` is parametrized over "sqlite" and "postgres": a Backend opens stores on one
database (``backend.open()`` = another server process's store) and runs raw SQL on it
(``backend.sql``, ``%s`` placeholders; an attacker's or admin's view). ``store`` is the
store under test. A module keeps to one backend with
``pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)``.

The PostgreSQL server: $OTPFAST_TEST_POSTGRES_URL if set (the role must be allowed to create
schemas in that database), else a throwaway cluster started by tools/start-postgres.sh for
the session (the same cluster as tests/services uses). Each test gets its own schema (selected through the connection's search_path),
dropped afterwards. A missing PostgreSQL or psycopg skips outside CI and fails in CI.
"""
import os
import pathlib
import shutil
import sqlite3
import subprocess
import tempfile
import uuid

import pytest

from otpfast.store import SQLiteStore, new_key

ROOT = pathlib.Path(__file__).resolve().parents[2]
START_SCRIPT = ROOT / "tools" / "start-postgres.sh"
URL_VAR = "OTPFAST_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgres"]


def _server_binaries_present() -> bool:
    if os.environ.get("PG_BINDIR"):
        return os.path.exists(os.path.join(os.environ["PG_BINDIR"], "initdb"))
    if os.path.exists("/usr/lib/postgresql/15/bin/initdb"):
        return True
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return False
    bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout
    return os.path.exists(os.path.join(bindir.strip(), "initdb"))


def cluster_dir() -> str:
    """One throwaway cluster per pytest process, shared with tests/services/conftest.py
    (start-postgres.sh is idempotent: a second start prints the URL again). Under /tmp:
    reachable by the `postgres` user when running as root."""
    return os.path.join(tempfile.gettempdir(), f"otpfast-pg-{os.getpid()}")


@pytest.fixture(scope="session")
def postgres_url(require_service):
    """The URL of a PostgreSQL database for the whole session."""
    try:
        import psycopg  # noqa: F401 - only checks that the extra is installed
    except ImportError:
        require_service(False, "psycopg (pip install 'otpfast[postgres]')")
    url = os.environ.get(URL_VAR)
    if url:
        yield url
        return
    require_service(_server_binaries_present(), "PostgreSQL server binaries (postgresql-15)")
    cluster = cluster_dir()
    try:
        started = subprocess.run([str(START_SCRIPT), cluster], capture_output=True, text=True,
                                 timeout=120)
        if started.returncode != 0:
            pytest.fail(f"tools/start-postgres.sh failed:\n{started.stderr}")
        yield started.stdout.strip()
    finally:
        if os.path.isdir(cluster):
            subprocess.run([str(START_SCRIPT), "--stop", cluster], capture_output=True,
                           timeout=60)
            shutil.rmtree(cluster, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_url):
    """A conninfo whose search_path is a fresh, empty schema (dropped after the test)."""
    import psycopg

    schema = f"otpfast_t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield psycopg.conninfo.make_conninfo(postgres_url, options=f"-c search_path={schema}")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


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
