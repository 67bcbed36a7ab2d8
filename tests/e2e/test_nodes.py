"""End to end, issue 12: three `otpfast serve` nodes on one PostgreSQL store (the first
`init --store-url`, two more `init --join`), raced by clients: every HOTP code sent to all
three nodes at once (each code also a request id retried at another node) is accepted
exactly once; `audit verify` on every node proves every node's chain."""
import asyncio
import contextlib
import hmac
import os
import struct
import subprocess
import sys
import urllib.parse

import pytest

from otpfast.net.client import connect

from .test_system import Server, otpfast

pytestmark = pytest.mark.slow

KEY_HEX = "3132333435363738393031323334353637383930"


def _code(counter):
    mac = hmac.digest(bytes.fromhex(KEY_HEX), struct.pack(">Q", counter), "sha1")
    offset = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10**6)


def _as_url(pg_url):
    import psycopg
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    query = urllib.parse.urlencode({"options": info["options"]}, quote_via=urllib.parse.quote)
    return f"postgresql://{info['user']}@{info['host']}:{info['port']}/{info['dbname']}?{query}"


def test_three_nodes_race_every_code_accepted_once(pg_url, tmp_path):
    url = _as_url(pg_url)
    envs = []
    for k in range(3):
        env = dict(os.environ, OTPFAST_DATA_DIR=str(tmp_path / f"node{k}"),
                   OTPFAST_KNOWN_SERVERS=str(tmp_path / "known"), OTPFAST_STORE_URL=url)
        for name in ("OTPFAST_CREDENTIAL", "OTPFAST_AT_REST_KEY"):
            env.pop(name, None)
        envs.append(env)
    otpfast(envs[0], "init", "--rsa-bits", "2048", check=0)
    for env in envs[1:]:
        otpfast(env, "init", "--join", "--rsa-bits", "2048", "--at-rest-key-file",
                str(tmp_path / "node0" / "at-rest.key"), check=0)
    secret = tmp_path / "secret"
    secret.write_text(KEY_HEX + "\n")
    secret.chmod(0o600)
    for name in ("alice", "bob"):
        otpfast(envs[1], "account", "add", name, "--type", "hotp", "--secret-file", str(secret),
                "--window", "50", "--lockout", "100", check=0)
    credential = otpfast(envs[2], "client", "add", "relay", "--verifier",
                         check=0).stdout.split()[0].encode()
    servers = [Server(env) for env in envs]
    try:
        async def race():
            async with contextlib.AsyncExitStack() as stack:
                clients = []
                for server in servers:
                    client = await stack.enter_async_context(
                        connect(server.host, server.port, pin=server.pin))
                    await client.authenticate("relay", credential)
                    clients.append(client)
                return await _race(clients)

        async def _race(clients):
            accepted = []
            for counter in range(15):
                for name in ("alice", "bob"):
                    code = _code(counter)
                    results = await asyncio.gather(*(
                        client.verify(name, code) for client in clients))
                    accepted.append(sum(results))
            # a request id answered by one node, retried at the others: the same answer
            rid = "req-once"
            first = await clients[0].verify("alice", _code(20), request_id=rid)
            again = [await client.verify("alice", _code(20), request_id=rid)
                     for client in clients[1:]]
            return accepted, first, again

        accepted, first, again = asyncio.run(race())
        assert accepted == [1] * 30                     # each code once, across three nodes
        assert first is True and again == [True, True]
    finally:
        for server in servers:
            server.stop()
    for env in envs:
        result = otpfast(env, "audit", "verify")
        assert result.returncode == 0, result.stderr
    chains = subprocess.run([sys.executable, "-c", (
        "import psycopg, sys; c = psycopg.connect(sys.argv[1]);"
        " print(c.execute('SELECT count(DISTINCT node) FROM audit_head"
        " WHERE node IS NOT NULL').fetchone()[0])"), pg_url],
        capture_output=True, text=True, check=True).stdout.strip()
    assert int(chains) == 3
