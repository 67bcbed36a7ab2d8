"""/healthz of a live `serve --http` on each store: 200 while the store answers and its write
lock can be taken; 503 with a reason code, within a bounded time, while another writer holds
the lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: the audit head's row lock) or the store's
connection is gone (PostgreSQL, reconnected on the next request). The body never says more
than a status and a reason code."""
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import uuid

import httpx
import pytest

from otpfast.datadir import DataDir
from ..conftest import stop_process

PATIENCE = 0.5          # net.http.HEALTH_LOCK_PATIENCE


def start(data):
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpfast", "serve", "--data-dir", data.path, "--listen", "127.0.0.1:0",
         "--http", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = [proc.stdout.readline() for _ in range(3)]
    http = next(line for line in lines if line.startswith("http ")).split()[1]
    return proc, f"https://{http}"


def health(client):
    started = time.monotonic()
    response = client.get("/healthz")
    return response.status_code, response.json(), time.monotonic() - started


@pytest.fixture
def sqlite_server(tmp_path):
    data = DataDir(str(tmp_path / "data"))
    data.init(rsa_bits=2048)
    proc, url = start(data)
    try:
        yield data, url
    finally:
        stop_process(proc)
        proc.stdout.close()


def test_healthz_sqlite_write_lock(sqlite_server):
    data, url = sqlite_server
    with httpx.Client(base_url=url, verify=False, timeout=10) as client:
        assert health(client)[:2] == (200, {"status": "ok"})
        holder = sqlite3.connect(data.file("store.db"), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")               # another writer holds the lock
            status, body, took = health(client)
            assert (status, body) == (503, {"status": "unavailable", "reason": "write_lock_busy"})
            assert PATIENCE * 0.8 <= took < PATIENCE + 2
            # the loop was not blocked meanwhile: other requests are answered at once
            started = time.monotonic()
            assert client.get("/metrics").status_code == 200
            assert time.monotonic() - started < 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert health(client)[:2] == (200, {"status": "ok"})


@pytest.fixture
def pg_store_url(postgres_url):
    """A postgresql:// URL (what a data dir records) whose search_path is a fresh schema."""
    import psycopg

    schema = f"otpfast_h_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in postgres_url else "?"
    yield postgres_url + separator + "options=" + urllib.parse.quote(f"-c search_path={schema}")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.mark.service
def test_healthz_postgres_write_lock_and_lost_connection(tmp_path, pg_store_url):
    import psycopg

    pg_url = pg_store_url
    data = DataDir(str(tmp_path / "data"))
    data.init(rsa_bits=2048, store_url=pg_url)
    proc, url = start(data)
    try:
        with httpx.Client(base_url=url, verify=False, timeout=10) as client:
            assert health(client)[:2] == (200, {"status": "ok"})
            with psycopg.connect(pg_url) as holder:         # a transaction: the lock stays
                # every node's audit chain is its own: only a table lock stops its writes
                holder.execute("LOCK TABLE audit_head IN EXCLUSIVE MODE")
                status, body, took = health(client)
                assert (status, body) == (503, {"status": "unavailable", "reason": "write_lock_busy"})
                assert PATIENCE * 0.8 <= took < PATIENCE + 2
                holder.rollback()
            assert health(client)[:2] == (200, {"status": "ok"})
            # the server's sessions are terminated: reported once, then it reconnects
            with psycopg.connect(pg_url, autocommit=True) as admin:
                killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE pid <> pg_backend_pid() AND datname = current_database()"
                                       ).fetchone()[0]
            assert killed >= 1
            status, body, _ = health(client)
            assert (status, body) == (503, {"status": "unavailable", "reason": "store_unreachable"})
            assert health(client)[:2] == (200, {"status": "ok"})
    finally:
        stop_process(proc)
        proc.stdout.close()
