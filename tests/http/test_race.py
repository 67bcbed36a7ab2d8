"""One OTP raced over HTTP, RADIUS and the native protocol at the same instant is accepted
exactly once: each client connects and prepares its request first (TLS up and authenticated,
the Access-Request built), then all three send after one barrier. Repeated, bounded, with one
server process and with two workers sharing the store (so the race can cross processes)."""
import asyncio
import socket
import subprocess
import sys
import threading

import httpx
import pytest
from pyrad import packet as pyrad_packet

from otpfast.datadir import DataDir
from otpfast.net.client import connect
from otpfast.radius.codec import load_dictionary
from otpfast.services import masking
from ..conftest import free_udp_port, stop_process
from ..radius.conftest import RadiusClient

ROUNDS = 10
SECRET = "race-radius-secret-0123456789"


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def server(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("race")
    data = DataDir(str(base / "data"))
    data.init(rsa_bits=2048)
    admin = data.admin()
    # the two losers of each round are failures: room for them before the account locks
    admin.add_account("dave", "hashchain", chain_length=ROUNDS * 2 + 10, lockout=100)
    device = admin.add_client("dave-device", account="dave")
    relay = admin.add_client("relay", verifier=True)
    admin.store.close()
    port = free_udp_port()
    clients = base / "radius.clients"
    clients.write_text(f"127.0.0.1 {SECRET}\n")
    clients.chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpfast", "serve", "--data-dir", data.path, "--listen", "127.0.0.1:0",
         "--http", "127.0.0.1:0", "--radius", f"127.0.0.1:{port}", "--radius-clients", str(clients),
         "--workers", str(request.param)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    distribution = data.distribution()
    client = distribution.login("dave-device", device.encode())

    def otp():
        issued = distribution.request(client, "dave")
        return masking.unmask(client.session_key, "dave", issued.nonce, issued.masked, issued.expires_at_ms)

    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        listen = lines[0].split()[1].rsplit(":", 1)
        http = next(line for line in lines if line.startswith("http ")).split()[1]
        yield {"url": f"https://{http}", "native": (listen[0], int(listen[1])), "radius": ("127.0.0.1", port),
               "otp": otp, "relay": relay, "fingerprint": data.fingerprint()}
    finally:
        stop_process(proc)
        proc.stdout.close()
        distribution.store.close()


def race(server, otp):
    """{front end: accepted?} of one round."""
    barrier = threading.Barrier(3, timeout=20)
    results = {}

    def over_http():
        with httpx.Client(base_url=server["url"], verify=False, timeout=10) as c:
            assert c.get("/healthz").status_code == 200          # the TLS connection is up
            barrier.wait()
            results["http"] = c.post("/validate/check", data={"user": "dave", "pass": otp}).json()[
                "result"]["value"]

    def over_radius():
        radius = RadiusClient(load_dictionary(), secret=SECRET.encode())
        pkt, raw = radius.request("dave", otp)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(10)
            barrier.wait()
            sock.sendto(raw, server["radius"])
            reply = sock.recv(4096)
        results["radius"] = radius.check_reply(pkt, reply) == pyrad_packet.AccessAccept

    def over_native():
        async def run():
            host, port = server["native"]
            async with connect(host, port, pin=server["fingerprint"]) as c:
                await c.authenticate("relay", server["relay"])
                await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
                return await c.verify("dave", otp)
        results["native"] = asyncio.run(run())

    errors = []

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
                barrier.abort()
        return run

    threads = [threading.Thread(target=guarded(fn)) for fn in (over_http, over_radius, over_native)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


def test_one_otp_raced_over_three_front_ends_is_accepted_once(server):
    for _ in range(ROUNDS):
        results = race(server, server["otp"]())
        assert sorted(results) == ["http", "native", "radius"]
        assert sum(bool(ok) for ok in results.values()) == 1, results
