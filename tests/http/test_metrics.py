"""/metrics of a live `serve --http --radius` (one worker: each worker has its own series):
every front end (native, RADIUS, HTTP) moves its own verification counters and latency
histogram, refusals are counted by reason, the verifier's batch sizes and the service
layer's refusals show, and nothing secret or personal is exposed."""
import asyncio
import re
import shutil
import socket
import ssl
import subprocess
import sys

import httpx
import pytest

from otpfast.datadir import DataDir
from otpfast.net.client import connect
from otpfast.services import masking
from ..conftest import free_udp_port, stop_process

SECRET = "metrics-radius-secret-0123"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("metrics")
    data = DataDir(str(base / "data"))
    data.init(rsa_bits=2048)
    admin = data.admin()
    admin.add_account("alice", "hashchain", chain_length=100)
    device = admin.add_client("alice-device", account="alice")
    relay = admin.add_client("relay", verifier=True)
    admin.store.close()
    port = free_udp_port()
    clients = base / "radius.clients"
    clients.write_text(f"127.0.0.1 {SECRET}\n")
    clients.chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpfast", "serve", "--data-dir", data.path, "--listen", "127.0.0.1:0",
         "--http", "127.0.0.1:0", "--radius", f"127.0.0.1:{port}", "--radius-clients", str(clients)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    distribution = data.distribution()
    client = distribution.login("alice-device", device.encode())

    def otp():
        issued = distribution.request(client, "alice")
        return masking.unmask(client.session_key, "alice", issued.nonce, issued.masked, issued.expires_at_ms)

    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        listen = lines[0].split()[1].rsplit(":", 1)
        http = next(line for line in lines if line.startswith("http ")).split()[1]
        yield {"url": f"https://{http}", "native": (listen[0], int(listen[1])), "radius": f"127.0.0.1:{port}",
               "otp": otp, "relay": relay, "fingerprint": data.fingerprint()}
    finally:
        stop_process(proc)
        proc.stdout.close()
        distribution.store.close()


def scrape(server):
    with httpx.Client(verify=False, timeout=10) as c:
        response = c.get(server["url"] + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def sample(text, name, **labels):
    """The value of one series (0.0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    for line in text.splitlines():
        found = re.match(pattern, line)
        if found:
            return float(found.group(1))
    return 0.0


def native_verify(server, otp):
    async def run():
        host, port = server["native"]
        async with connect(host, port, pin=server["fingerprint"]) as c:
            await c.authenticate("relay", server["relay"])
            return await c.verify("alice", otp)
    return asyncio.run(run())


def radius_verify(server, otp, radclient):
    out = subprocess.run([radclient, "-x", "-r", "1", "-t", "3", server["radius"], "auth", SECRET],
                         input=f'User-Name = "alice", User-Password = "{otp}", Message-Authenticator = 0x00\n',
                         capture_output=True, text=True, timeout=20)
    return "Access-Accept" in out.stdout


def http_verify(server, otp):
    with httpx.Client(verify=False, timeout=10) as c:
        body = c.post(server["url"] + "/validate/check", data={"user": "alice", "pass": otp}).json()
    return body["result"]["value"]


@pytest.mark.service
def test_each_front_end_moves_its_own_counters(server, require_service):
    radclient = shutil.which("radclient")
    require_service(radclient is not None, "radclient (freeradius-utils)")
    verifiers = {"native": native_verify, "http": http_verify,
                 "radius": lambda s, otp: radius_verify(s, otp, radclient)}
    for front_end, verify in verifiers.items():
        before = scrape(server)
        otp = server["otp"]()
        assert verify(server, otp) is True
        assert verify(server, otp) is False                    # replay
        after = scrape(server)
        for other in verifiers:
            moved = {result: sample(after, "otpfast_verifications_total", front_end=other, result=result)
                     - sample(before, "otpfast_verifications_total", front_end=other, result=result)
                     for result in ("accept", "reject", "error")}
            expected = {"accept": 1, "reject": 1, "error": 0} if other == front_end else \
                {"accept": 0, "reject": 0, "error": 0}
            assert moved == expected, (front_end, other, moved)
        count = "otpfast_verify_seconds_count"
        assert sample(after, count, front_end=front_end) - sample(before, count, front_end=front_end) == 2
    text = scrape(server)
    assert sample(text, "otpfast_verifier_batch_size_count") >= 6
    assert sample(text, "otpfast_verifier_batches_total") >= 6
    assert sample(text, "otpfast_store_errors_total", operation="verify") == 0


def test_refusals_are_counted_by_front_end_and_reason(server):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # a wrong bearer credential (checked even from an allowed network)
    with httpx.Client(verify=context, timeout=10) as c:
        assert c.get(server["url"] + "/metrics", headers={"Authorization": "Bearer relay:wrong"}).status_code == 403
    # a native connection that breaks the protocol
    host, port = server["native"]
    with socket.create_connection((host, port), timeout=5) as raw:
        with context.wrap_socket(raw) as sock:
            sock.sendall(b"\xff" * 64)
            try:
                while sock.recv(4096):
                    pass
            except (OSError, ssl.SSLError):
                pass
    text = scrape(server)
    assert sample(text, "otpfast_refusals_total", front_end="http", reason="bad_credential") >= 1
    assert sample(text, "otpfast_refusals_total", front_end="native", reason="protocol_error") >= 1
    # the service layer audited the failed bearer login
    assert sample(text, "otpfast_service_refusals_total", event="authenticate",
                  reason="refused:wrong-credential") >= 1
    assert 'otpfast_throttled{kind="source"}' in text
    assert "alice" not in text and "relay" not in text and "wrong" not in text.replace("wrong-credential", "")
