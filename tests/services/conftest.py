"""Service fixtures. ``store`` runs each service test against both backends (SQLite and
PostgreSQL); a module or test keeps to SQLite with
``pytest.mark.parametrize("store", ["sqlite"], indirect=True)``. The PostgreSQL server is
the one tests/store/conftest.py describes ($OTPFAST_TEST_POSTGRES_URL or a throwaway cluster
from tools/start-postgres.sh, the same cluster directory within one pytest process)."""
import os
import pathlib
import shutil
import subprocess
import tempfile
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from otpfast.services.admin import Admin
from otpfast.services.distribution import Distribution
from otpfast.services.keyserver import KeyServer
from otpfast.store import PostgresStore, SQLiteStore, new_key

ROOT = pathlib.Path(__file__).resolve().parents[2]
START_SCRIPT = ROOT / "tools" / "start-postgres.sh"
URL_VAR = "OTPFAST_TEST_POSTGRES_URL"
TEST_ITERATIONS = 1000   # the default (600,000) is tested in test_keyserver; this keeps tests fast


class FakeClock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(scope="session")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def postgres_url(require_service):
    try:
        import psycopg  # noqa: F401 - only checks that the extra is installed
    except ImportError:
        require_service(False, "psycopg (pip install 'otpfast[postgres]')")
    if os.environ.get(URL_VAR):
        yield os.environ[URL_VAR]
        return
    require_service(shutil.which("pg_config") is not None
                    or os.path.exists("/usr/lib/postgresql/15/bin/initdb")
                    or bool(os.environ.get("PG_BINDIR")),
                    "PostgreSQL server binaries (postgresql-15)")
    cluster = os.path.join(tempfile.gettempdir(), f"otpfast-pg-{os.getpid()}")
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

    schema = f"otpfast_s_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield psycopg.conninfo.make_conninfo(postgres_url, options=f"-c search_path={schema}")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    head = str(tmp_path / "audit.head")
    if request.param == "sqlite":
        s = SQLiteStore(str(tmp_path / "store.db"), new_key(), head_path=head, create=True)
    else:
        s = PostgresStore(request.getfixturevalue("pg_url"), new_key(), head_path=head,
                          create=True)
    yield s
    s.close()


@pytest.fixture
def admin(store, clock):
    return Admin(store, clock=clock)


@pytest.fixture
def distribution(store, clock):
    return Distribution(store, clock=clock)


@pytest.fixture
def keyserver(store, clock, rsa_key):
    return KeyServer(store, rsa_key, iterations=TEST_ITERATIONS, clock=clock)


def _state(store):
    """Every table but the audit log, for 'nothing changed' checks."""
    conn = store._conn()
    tables = ("accounts", "contributions", "issued", "clients", "authorities")
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}


@pytest.fixture
def state_of():
    return _state
