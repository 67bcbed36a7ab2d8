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


def _three_nodes(pg_url, tmp_path):
    """Environments of three data dirs on one PostgreSQL store: the first `init`, two more
    `init --join`; and a file holding the HOTP key."""
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
    return envs, secret


def test_three_nodes_race_every_code_accepted_once(pg_url, tmp_path):
    envs, secret = _three_nodes(pg_url, tmp_path)
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


def test_three_nodes_one_code_raced_over_every_front_end_accepted_once(pg_url, tmp_path):
    """Each HOTP code sent at the same instant to node 0 over the native protocol, node 1
    over RADIUS and node 2 over HTTPS: exactly one accept per code, across nodes and front
    ends."""
    import socket
    import threading

    import httpx
    from pyrad import packet as pyrad_packet

    from otpfast.radius.codec import load_dictionary
    from ..conftest import free_udp_port, stop_process
    from ..radius.conftest import RadiusClient

    radius_secret = "nodes-radius-secret-0123456789"
    envs, secret = _three_nodes(pg_url, tmp_path)
    otpfast(envs[0], "account", "add", "carol", "--type", "hotp", "--secret-file", str(secret),
            "--window", "50", "--lockout", "100", check=0)
    credential = otpfast(envs[0], "client", "add", "relay", "--verifier",
                         check=0).stdout.split()[0].encode()
    clients = tmp_path / "radius.clients"
    clients.write_text(f"127.0.0.1 {radius_secret}\n")
    clients.chmod(0o600)
    radius_port = free_udp_port()
    extras = [(), ("--radius", f"127.0.0.1:{radius_port}", "--radius-clients", str(clients)),
              ("--http", "127.0.0.1:0")]
    processes, lines = [], []
    try:
        for env, extra in zip(envs, extras):
            proc = subprocess.Popen([sys.executable, "-m", "otpfast", "serve", "--listen", "127.0.0.1:0",
                                     *extra], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            processes.append(proc)
            found, wanted = {}, {"fingerprint", "http"} if "--http" in extra else {"fingerprint"}
            while not wanted <= found.keys():
                line = proc.stdout.readline()
                assert line, "a node did not start"
                key, _, value = line.strip().partition(" ")
                found[key] = value
            lines.append(found)
        native_host, native_port = lines[0]["listening"].rsplit(":", 1)
        http_url = f"https://{lines[2]['http']}"
        radius = RadiusClient(load_dictionary(), secret=radius_secret.encode())

        def race(code):
            barrier = threading.Barrier(3, timeout=20)
            results, errors = {}, []

            def over_native():
                async def run():
                    async with connect(native_host, int(native_port), pin=lines[0]["fingerprint"]) as c:
                        await c.authenticate("relay", credential)
                        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
                        return await c.verify("carol", code)
                results["native"] = asyncio.run(run())

            def over_radius():
                pkt, raw = radius.request("carol", code)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(10)
                    barrier.wait()
                    sock.sendto(raw, ("127.0.0.1", radius_port))
                    reply = sock.recv(4096)
                results["radius"] = radius.check_reply(pkt, reply) == pyrad_packet.AccessAccept

            def over_http():
                with httpx.Client(base_url=http_url, verify=False, timeout=10) as c:
                    assert c.get("/healthz").status_code == 200
                    barrier.wait()
                    answer = c.post("/validate/check", data={"user": "carol", "pass": code})
                    results["http"] = answer.json()["result"]["value"]

            def guarded(fn):
                def run():
                    try:
                        fn()
                    except BaseException as exc:  # noqa: BLE001 - reported below
                        errors.append(exc)
                        barrier.abort()
                return run

            threads = [threading.Thread(target=guarded(fn)) for fn in (over_native, over_radius, over_http)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert not errors, errors
            return results

        for counter in range(8):
            results = race(_code(counter))
            assert sorted(results) == ["http", "native", "radius"]
            assert sum(bool(ok) for ok in results.values()) == 1, (counter, results)
    finally:
        for proc in processes:
            stop_process(proc)
            proc.stdout.close()
    for env in envs:
        result = otpfast(env, "audit", "verify")
        assert result.returncode == 0, result.stderr
