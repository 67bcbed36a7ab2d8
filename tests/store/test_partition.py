"""A node cut off from PostgreSQL mid-transaction (issue 12, items 3 and 2), with a real
network partition: the node runs in its own network namespace (``ip netns``, a veth pair
to the host, where a throwaway PostgreSQL listens), holds an account's row lock, and its
link goes down. Other nodes wait for that one account at most ``lock_timeout`` per attempt
(never for other accounts), the server frees the row once it gives the session up (its
``tcp_user_timeout``/keepalives: about 10 s, not the kernel's 15 minutes or 2 hours), and the cut-off node's own COMMIT is cut off by
its watchdog and reported "try again" - nothing of it was committed.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from otpfast.errors import StoreUnavailable

from ..conftest import ROOT, _server_binaries_present

START = str(ROOT / "tools" / "start-postgres.sh")

NODE = r"""
import json, sys
from otpfast.errors import StoreUnavailable
from otpfast.store.postgres import PostgresStore
url, key = sys.argv[1], bytes.fromhex(sys.argv[2])
store = PostgresStore(url, key, node="cut", statement_timeout_ms=1000, server=True)
try:
    with store.transaction() as tx:
        old = tx.accounts(["alice"])["alice"]
        print("locked", flush=True)
        sys.stdin.readline()                       # the link is down now
        tx.advance_counter("alice", old.counter, old.counter + 1)
    print(json.dumps({"outcome": "committed"}), flush=True)
except StoreUnavailable as exc:
    print(json.dumps({"outcome": "unavailable", "committed": exc.committed,
                      "message": str(exc)}), flush=True)
"""


def _run(*command, **kwargs):
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60,
                          **kwargs)


def _as_owner(*command):
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return _run(*prefix, *command)


@pytest.fixture
def partitionable(require_service):
    """(URL seen from the namespace, URL from the host, namespace, its end of the link)."""
    require_service(_server_binaries_present(), "PostgreSQL server binaries (postgresql-15)")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        require_service(False, "root and iproute2 (network namespaces)")
    suffix = os.getpid() % 100_000
    ns, host_if, ns_if = f"otpf{suffix}", f"otpfh{suffix}", f"otpfn{suffix}"
    net = f"10.{200 + suffix % 50}.{suffix % 250}"
    cluster = tempfile.mkdtemp(prefix="otpfast-part-", dir="/tmp")
    bindir = "/usr/lib/postgresql/15/bin"
    if not os.path.exists(f"{bindir}/pg_ctl"):
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True,
                                text=True).stdout.strip()
    try:
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", ns)
        _run("ip", "addr", "add", f"{net}.1/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{net}.2/30", "dev", ns_if)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        url = _run(START, cluster).stdout.strip()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        _as_owner("sh", "-c", f"printf \"listen_addresses = '127.0.0.1,{net}.1'\\n\" >> "
                              f"{cluster}/data/postgresql.conf; printf 'host all all "
                              f"{net}.0/30 trust\\n' >> {cluster}/data/pg_hba.conf")
        _as_owner(f"{bindir}/pg_ctl", "-D", f"{cluster}/data", "-l", f"{cluster}/server.log",
                  "-w", "-t", "60", "restart")
        yield (f"host={net}.1 port={port} dbname=otpfast_test user=otpfast",
               f"host=127.0.0.1 port={port} dbname=otpfast_test user=otpfast", ns, ns_if)
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if os.path.exists(f"{cluster}/data/PG_VERSION"):
            subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/pg_ctl", "-D",
                            f"{cluster}/data", "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(cluster, ignore_errors=True)


def test_partitioned_node_stalls_only_its_account_and_is_cut_off(partitionable):
    from otpfast.store import new_key
    from otpfast.store.postgres import PostgresStore

    ns_url, host_url, ns, ns_if = partitionable
    key = new_key()
    setup = PostgresStore(host_url, key, create=True)
    with setup.transaction() as tx:
        for name in ("alice", "bob"):
            tx.add_account(name, "hotp", {"lockout": 3}, {"key": "00"}, None, 1.0)
    node = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", NODE, ns_url,
                             key.hex()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    other = PostgresStore(host_url, key, node="other", lock_timeout_ms=1000)
    try:
        assert node.stdout.readline().strip() == "locked"
        # the partition: the namespace's end goes down; the host's end stays up, so what
        # the server sends (its keepalive probes) is lost, never refused
        _run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "down")
        started = time.monotonic()
        node.stdin.write("go\n")
        node.stdin.flush()
        # another node: the cut-off node's account waits lock_timeout, the others not at all
        with pytest.raises(StoreUnavailable, match="lock timeout"):
            with other.transaction() as tx:
                tx.accounts(["alice"])
        with other.transaction() as tx:
            assert tx.advance_counter("bob", 0, 1)
        # the cut-off node: its COMMIT is cut off, "try again", its outcome not guessed
        report = json.loads(node.stdout.readline())
        assert report["outcome"] == "unavailable", report
        assert report["committed"] in (False, None)
        assert time.monotonic() - started < 12
        # the server gives the dead session up (keepalives): the row is free again
        deadline = time.monotonic() + 30
        while True:
            try:
                with other.transaction() as tx:
                    assert tx.advance_counter("alice", 0, 1)    # nothing of the node's
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the dead session kept the row"
        freed = time.monotonic() - started
        assert freed < 30, freed
        assert other.account("alice").counter == 1
        assert other.verify_audit().ok
    finally:
        node.kill()
        node.wait()
        node.stdin.close()
        node.stdout.close()
        other.close()
        setup.close()
