"""The failover drill (issue 12, item 4) on real PostgreSQL 15 replication: a primary with
a synchronous standby (pg_basebackup, synchronous_standby_names), two nodes racing the same
HOTP codes through a multi-host URL (target_session_attrs=read-write), the primary killed
(immediate stop) and the standby promoted mid-run. Then: no code accepted twice, no
acknowledged accept lost (every one is on the new primary), ``audit verify`` intact, and
the old primary, started again without a rewind, fenced: refused by the nodes.
"""
import hmac
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time

import pytest

from otpfast.errors import StoreUnavailable
from otpfast.services.admin import Admin
from otpfast.services.distribution import Distribution, VerifyItem

from ..conftest import ROOT, _server_binaries_present

KEY_HEX = "3132333435363738393031323334353637383930"
ACCOUNTS = [f"u{i}" for i in range(4)]
START = str(ROOT / "tools" / "start-postgres.sh")


def _code(counter):
    mac = hmac.digest(bytes.fromhex(KEY_HEX), struct.pack(">Q", counter), "sha1")
    offset = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10**6)


def _bindir():
    if os.environ.get("PG_BINDIR"):
        return os.environ["PG_BINDIR"]
    if os.path.exists("/usr/lib/postgresql/15/bin/initdb"):
        return "/usr/lib/postgresql/15/bin"
    return subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()


def _as_owner(*command, **kwargs):
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *command], check=True, capture_output=True, text=True,
                          timeout=120, **kwargs)


def _port(url):
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture
def replicated(require_service):
    """(primary dir, standby dir, primary port, standby port); both stopped afterwards."""
    require_service(_server_binaries_present(), "PostgreSQL server binaries (postgresql-15)")
    bindir = _bindir()
    primary = tempfile.mkdtemp(prefix="otpfast-primary-", dir="/tmp")
    standby = tempfile.mkdtemp(prefix="otpfast-standby-", dir="/tmp")
    try:
        url = subprocess.run([START, primary], check=True, capture_output=True, text=True,
                             timeout=120).stdout.strip()
        p1 = _port(url)
        _as_owner("sh", "-c", f"printf 'local replication all trust\\nhost replication all "
                              f"127.0.0.1/32 trust\\n' >> {primary}/data/pg_hba.conf")
        _as_owner(f"{bindir}/pg_ctl", "-D", f"{primary}/data", "reload")
        if os.geteuid() == 0:
            shutil.chown(standby, "postgres")
        os.chmod(standby, 0o700)
        _as_owner(f"{bindir}/pg_basebackup", "-D", f"{standby}/data", "-R", "-X", "stream",
                  "-d", f"host={primary}/socket port={p1} user=postgres "
                        "application_name=standby1")
        p2 = p1 + 1
        _as_owner("mkdir", "-p", f"{standby}/socket")
        _as_owner("sh", "-c", f"printf \"port = {p2}\\nunix_socket_directories = "
                              f"'{standby}/socket'\\n\" >> {standby}/data/postgresql.conf")
        _as_owner(f"{bindir}/pg_ctl", "-D", f"{standby}/data", "-l", f"{standby}/server.log",
                  "-w", "-t", "60", "start")
        psql = [f"{bindir}/psql", "-X", "-q", "-h", f"{primary}/socket", "-p", str(p1),
                "-U", "postgres", "-d", "postgres", "-tAc"]
        _as_owner(*psql, "ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
        _as_owner(*psql, "SELECT pg_reload_conf()")
        for _ in range(100):
            state = _as_owner(*psql, "SELECT sync_state FROM pg_stat_replication").stdout
            if state.strip() == "sync":
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the standby is not synchronous: {state!r}")
        yield primary, standby, p1, p2
    finally:
        for directory in (primary, standby):
            if os.path.exists(f"{directory}/data/PG_VERSION"):
                subprocess.run(["runuser", "-u", "postgres", "--"] * (os.geteuid() == 0)
                               + [f"{bindir}/pg_ctl", "-D", f"{directory}/data", "-m",
                                  "immediate", "stop"], capture_output=True, timeout=60)
            shutil.rmtree(directory, ignore_errors=True)


def test_failover_drill_no_double_accept_no_lost_accept_old_primary_fenced(replicated,
                                                                           tmp_path):
    primary, standby, p1, p2 = replicated
    bindir = _bindir()
    first = f"host=127.0.0.1 port={p1} dbname=otpfast_test user=otpfast"
    both = (f"host=127.0.0.1,127.0.0.1 port={p1},{p2} dbname=otpfast_test user=otpfast"
            " target_session_attrs=read-write connect_timeout=2")
    from otpfast.store import new_key
    from otpfast.store.postgres import PostgresStore

    key = new_key()
    setup = PostgresStore(first, key, create=True)
    admin = Admin(setup, clock=time.time)
    for name in ACCOUNTS:
        admin.add_account(name, "hotp", secret=bytes.fromhex(KEY_HEX), lockout=100, window=50)
    setup.close()
    # the standby alone: a clear "read-only standby" error, not a traceback
    with pytest.raises(StoreUnavailable, match="read-only standby"):
        PostgresStore(f"host=127.0.0.1 port={p2} dbname=otpfast_test user=otpfast", key)
    nodes = [PostgresStore(both, key, node=f"n{k}", statement_timeout_ms=2000,
                           head_path=str(tmp_path / f"n{k}.head"),
                           fence_path=str(tmp_path / f"n{k}.primary")) for k in range(2)]
    acked = []                  # (account, counter) each node was told "accepted"
    errors, failed = [], []
    stop = threading.Event()
    lock = threading.Lock()

    def race(store):
        dist = Distribution(store, clock=time.time)
        counter = 0
        while not stop.is_set():
            items = [VerifyItem(name, _code(counter), "drill") for name in ACCOUNTS]
            try:
                results = dist.verify_many(items)
            except StoreUnavailable as exc:       # "try again": the same codes once more
                errors.append(str(exc))
                time.sleep(0.1)
                continue
            except Exception as exc:              # reported below
                errors.append(repr(exc))
                failed.append(exc)
                return
            with lock:
                acked.extend((item.account, counter) for item, ok in zip(items, results) if ok)
            counter += 1

    threads = [threading.Thread(target=race, args=(node,)) for node in nodes]
    for t in threads:
        t.start()
    time.sleep(1.0)
    before = len(acked)
    _as_owner(f"{bindir}/pg_ctl", "-D", f"{primary}/data", "-m", "immediate", "stop")
    _as_owner(f"{bindir}/pg_ctl", "-D", f"{standby}/data", "-w", "-t", "60", "promote")
    deadline = time.monotonic() + 30
    while len(acked) < before + 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not failed, failed
    assert before > 0 and len(acked) >= before + 20, (before, len(acked), errors[-3:])
    assert errors, "the failover went unnoticed?"
    assert len(acked) == len(set(acked)), "a code was accepted twice"
    check = PostgresStore(f"host=127.0.0.1 port={p2} dbname=otpfast_test user=otpfast", key)
    for name in ACCOUNTS:
        mine = [counter for account, counter in acked if account == name]
        assert check.account(name).counter >= max(mine) + 1     # no acknowledged accept lost
        accepted = sum(entry.outcome == "accepted" and entry.account == name
                       for entry in check.audit_entries())
        assert accepted >= len(mine)
    assert check.verify_audit().ok

    # the old primary comes back, not rewound: a primary on the old timeline
    _as_owner(f"{bindir}/pg_ctl", "-D", f"{primary}/data", "-l", f"{primary}/server.log",
              "-w", "-t", "60", "start")
    with pytest.raises(StoreUnavailable, match="not the current primary"):
        PostgresStore(first, key, node="n0", fence_path=str(tmp_path / "n0.primary"))
    # a node whose URL lists the old primary first: refused there, it goes on with the new
    for node in nodes:
        node.close()
        dist = Distribution(node, clock=time.time)
        assert dist.verify_many([VerifyItem(ACCOUNTS[0], _code(10_000), "drill")]) == [False]
        assert node._conn().info.port == p2
        node.close()
    check.close()
