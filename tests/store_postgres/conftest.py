"""Fixtures for the PostgreSQL store tests.

The server: $OTPFAST_TEST_POSTGRES_URL if set (its database must let the role create
schemas), else a throwaway cluster started by tools/start-postgres.sh for the session.
Each test gets its own schema (selected through the URL's search_path option), dropped
afterwards. A missing PostgreSQL or psycopg skips outside CI and fails in CI.
"""
import os
import pathlib
import shutil
import subprocess
import tempfile
import uuid

import pytest

from otpfast.store import new_key

ROOT = pathlib.Path(__file__).resolve().parents[2]
START_SCRIPT = ROOT / "tools" / "start-postgres.sh"
URL_VAR = "OTPFAST_TEST_POSTGRES_URL"


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
    cluster = tempfile.mkdtemp(prefix="otpfast-pg-")     # under /tmp: reachable as `postgres`
    try:
        started = subprocess.run([str(START_SCRIPT), cluster], capture_output=True, text=True,
                                 timeout=120)
        if started.returncode != 0:
            pytest.fail(f"tools/start-postgres.sh failed:\n{started.stderr}")
        yield started.stdout.strip()
    finally:
        subprocess.run([str(START_SCRIPT), "--stop", cluster], capture_output=True, timeout=60)
        shutil.rmtree(cluster, ignore_errors=True)


@pytest.fixture(scope="session")
def with_schema():
    """``with_schema(url, schema)``: the conninfo of ``url`` with that search_path."""
    import psycopg

    def make(url, schema):
        return psycopg.conninfo.make_conninfo(url, options=f"-c search_path={schema}")

    return make


@pytest.fixture
def pg_url(postgres_url, with_schema):
    """A conninfo whose search_path is a fresh, empty schema (dropped after the test)."""
    import psycopg

    schema = f"otpfast_t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield with_schema(postgres_url, schema)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def key():
    return new_key()


@pytest.fixture
def store(pg_url, key, tmp_path):
    from otpfast.store.postgres import PostgresStore

    s = PostgresStore(pg_url, key, head_path=str(tmp_path / "audit.head"), create=True)
    yield s
    s.close()


@pytest.fixture
def raw(pg_url):
    """A plain autocommit connection to the test's schema (an attacker's or admin's view)."""
    import psycopg

    conn = psycopg.connect(pg_url, autocommit=True)
    yield conn
    conn.close()
