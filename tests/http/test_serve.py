"""`otpfast serve --http` as a real server process over a real data dir: privacyIDEA's
/validate API through curl and httpx over TLS, /healthz, /metrics, who may call, and the
bad-input table (each answered with a clear 4xx while the server keeps serving); one OTP
raced over HTTP + RADIUS + the native protocol is accepted exactly once."""
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

import httpx
import pytest

from otpfast.datadir import DataDir
from otpfast.services import masking
from otpfast.services.usertokens import TokenAdmin
from ..conftest import free_udp_port, stop_process

PIN = "p 1%\"'é"          # spaces, %, quotes, non-ASCII
SECRET = "serve-http-radius-secret"


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def served(request, tmp_path_factory):
    """The server, as one process or as two workers on shared sockets (serve --workers 2)."""
    base = tmp_path_factory.mktemp("serve-http")
    data_dir = DataDir(str(base / "data"))
    data_dir.init(rsa_bits=2048)
    admin = data_dir.admin()
    admin.add_account("alice", "hashchain", chain_length=200)
    admin.add_account("bob", "hashchain", chain_length=200)
    admin.add_account("carol", "hashchain", chain_length=200)
    admin.add_account("dave", "hashchain", chain_length=200)
    dave_device = admin.add_client("dave-device", account="dave")
    device = admin.add_client("alice-device", account="alice")
    bob_device = admin.add_client("bob-device", account="bob")
    relay = admin.add_client("relay", verifier=True)
    TokenAdmin(admin.store).set_pin("bob", PIN)
    admin.add_account("erin", "hashchain", chain_length=20)
    recovery, codes = TokenAdmin(admin.store).add("erin", "recovery", count=4)
    admin.store.close()
    port = free_udp_port()
    clients_file = base / "radius.clients"
    clients_file.write_text(f"127.0.0.1 {SECRET}\n")
    stderr = open(base / "stderr.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpfast_cli", "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir.path,
         "--http", "127.0.0.1:0", "--http-allow", "127.0.0.1/32,127.0.0.3/32", "--radius", f"127.0.0.1:{port}",
         "--radius-clients", str(clients_file), "--read-timeout", "1", "--auth-timeout", "2",
         "--workers", str(request.param)],
        stdout=subprocess.PIPE, stderr=stderr, text=True)
    distribution = data_dir.distribution()
    clients = {"alice": distribution.login("alice-device", device.encode()),
               "bob": distribution.login("bob-device", bob_device.encode()),
               "dave": distribution.login("dave-device", dave_device.encode())}

    def request_otp(account="alice"):
        client = clients[account]
        issued = distribution.request(client, account)
        return masking.unmask(client.session_key, account, issued.nonce, issued.masked, issued.expires_at_ms)

    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        listen = lines[0].split()[1].rsplit(":", 1)
        http = [line for line in lines if line.startswith("http ")][0].split()[1].rsplit(":", 1)
        yield {"url": f"https://127.0.0.1:{http[1]}", "http_port": int(http[1]), "native": (listen[0], int(listen[1])),
               "radius": ("127.0.0.1", port), "request_otp": request_otp, "relay": relay, "proc": proc,
               "stderr": stderr, "data_dir": data_dir, "workers": request.param,
               "recovery": (recovery.serial, list(codes))}
    finally:
        stop_process(proc)
        proc.stdout.close()
        stderr.close()
        distribution.store.close()


@pytest.fixture
def client(served):
    with httpx.Client(base_url=served["url"], verify=False, timeout=10) as c:
        yield c


def alive(served):
    with httpx.Client(base_url=served["url"], verify=False, timeout=10) as c:
        assert c.get("/healthz").status_code == 200


def curl(served, *args):
    out = subprocess.run(["curl", "-sk", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=20)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def test_check_accept_then_replay_form_json_get(served, client):
    otp = served["request_otp"]()
    response = client.post("/validate/check", data={"user": "alice", "pass": otp})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"jsonrpc", "id", "version", "time", "result", "detail"}
    assert body["jsonrpc"] == "2.0" and body["id"] == 1 and body["version"].startswith("otpfast ")
    assert isinstance(body["time"], float)
    assert body["result"] == {"status": True, "value": True, "authentication": "ACCEPT"}
    assert body["detail"]["message"] == "matching 1 tokens" and isinstance(body["detail"]["threadid"], int)
    again = client.post("/validate/check", json={"user": "alice", "pass": otp}).json()   # replay
    assert again["result"] == {"status": True, "value": False, "authentication": "REJECT"}
    otp = served["request_otp"]()
    got = client.get("/validate/check", params={"user": "alice", "pass": otp, "realm": "x", "client": "1.2.3.4"})
    assert got.json()["result"]["value"] is True


def test_pin_plus_otp_with_awkward_pin_and_double_encoding(served, client):
    otp = served["request_otp"]("bob")
    wrong_pin = client.post("/validate/check", data={"user": "bob", "pass": "x" + otp}).json()
    wrong_otp = client.post("/validate/check", data={"user": "bob", "pass": PIN + "0" * len(otp)}).json()
    assert wrong_pin["result"]["value"] is False and wrong_otp["result"]["value"] is False
    assert wrong_pin["detail"]["message"] == wrong_otp["detail"]["message"] == "wrong otp pin"
    # encoded twice, as several privacyIDEA plugins send it (privacyIDEA decodes a second time)
    twice = urllib.parse.quote(urllib.parse.quote(PIN + otp, safe=""), safe="")
    response = client.post("/validate/check", content=f"user=bob&pass={twice}",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.json()["result"]["value"] is True
    otp = served["request_otp"]("bob")
    response = client.post("/validate/check", json={"user": "bob", "pass": PIN + otp})   # JSON: as is
    assert response.json()["result"]["value"] is True


def test_unknown_user_is_904_and_costs_about_the_same(served):
    # its own source address and account: its failures use up neither the others' throttle
    # nor alice's lockout
    transport = httpx.HTTPTransport(verify=False, local_address="127.0.0.3")
    client = httpx.Client(base_url=served["url"], transport=transport, timeout=10)
    response = client.post("/validate/check", data={"user": "nobody", "pass": "123456"})
    assert response.status_code == 400
    body = response.json()
    assert body["result"]["status"] is False and body["result"]["error"]["code"] == 904
    assert body["detail"] is None

    def timed(user):
        start = time.perf_counter()
        client.post("/validate/check", data={"user": user, "pass": "0123456789abcdef"})
        return time.perf_counter() - start
    # alternated, so a burst of load on the machine slows both sides alike; medians of 9
    samples = [(timed("carol"), timed("nobody")) for _ in range(9)]
    known = sorted(k for k, _ in samples)[4]
    unknown = sorted(u for _, u in samples)[4]
    client.close()
    assert unknown < known * 3 + 0.005 and known < unknown * 3 + 0.005


def test_radiuscheck_and_simplecheck(served, client):
    otp = served["request_otp"]()
    ok = client.post("/validate/radiuscheck", data={"user": "alice", "pass": otp})
    assert ok.status_code == 204 and ok.content == b""
    replay = client.post("/validate/radiuscheck", data={"user": "alice", "pass": otp})
    assert replay.status_code == 400 and replay.content == b""
    otp = served["request_otp"]()
    assert client.get("/validate/simplecheck", params={"user": "alice", "pass": otp}).text == ":-)"
    simple = client.get("/validate/simplecheck", params={"user": "alice", "pass": otp})
    assert simple.text == ":-(" and simple.headers["content-type"].startswith("text/plain")


@pytest.mark.service
def test_curl_every_endpoint(served, require_service):
    require_service(shutil.which("curl") is not None, "curl")
    url = served["url"]
    otp = served["request_otp"]()
    code, body = curl(served, "--data-urlencode", "user=alice", "--data-urlencode", f"pass={otp}",
                      f"{url}/validate/check")
    assert code == 200 and json.loads(body)["result"]["authentication"] == "ACCEPT"
    code, body = curl(served, f"{url}/validate/check?user=alice&pass={otp}")
    assert code == 200 and json.loads(body)["result"]["value"] is False
    code, body = curl(served, f"{url}/healthz")
    assert code == 200 and json.loads(body) == {"status": "ok"}
    code, body = curl(served, f"{url}/metrics")
    assert code == 200 and 'otpfast_verifications_total{front_end="http",result="accept"}' in body
    assert "otpfast_verify_seconds_bucket" in body and "otpfast_verifier_batches_total" in body
    code, body = curl(served, f"{url}/nothing")
    assert code == 404
    code, body = curl(served, "-X", "DELETE", "-D", "-", f"{url}/validate/check")
    assert code == 405 and "Allow: GET, POST" in body.splitlines()
    code, _ = curl(served, "--http1.0", f"{url}/healthz")
    assert code == 200


@pytest.mark.service
def test_curl_expect_100_continue_is_answered_at_once(served, require_service):
    require_service(shutil.which("curl") is not None, "curl")
    otp = served["request_otp"]()
    started = time.monotonic()
    code, body = curl(served, "-H", "Expect: 100-continue", "--expect100-timeout", "5",
                      "-d", f"user=alice&pass={otp}", served["url"] + "/validate/check")
    assert code == 200 and json.loads(body)["result"]["value"] is True
    assert time.monotonic() - started < 4          # not curl's 5 s wait for a 100 that never came


def read_until_closed(sock):
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return data
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize("requests,answers", [
    (b"GET /healthz HTTP/1.0\r\n\r\n", 1),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
     b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 2),
], ids=["http-1.0", "close-in-a-pipeline"])
def test_the_request_that_asks_to_close_is_answered_last(served, requests, answers):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", served["http_port"]), timeout=5) as raw:
        with context.wrap_socket(raw) as sock:
            sock.sendall(requests)
            data = read_until_closed(sock)
    assert data.count(b"HTTP/1.1 200 OK\r\n") == answers and data.count(b"Connection: close\r\n") == 1
    assert data.rindex(b"Connection: close") > data.rindex(b"HTTP/1.1 200")
    alive(served)


def test_plain_http_gets_nothing(served):
    with socket.create_connection(("127.0.0.1", served["http_port"]), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = sock.recv(100)
        except (ConnectionResetError, socket.timeout):
            data = b""
    assert not data.startswith(b"HTTP/1.1 200")
    alive(served)


def test_bearer_credential_from_a_network_not_allowed(served):
    # 127.0.0.2 is not in --http-allow: only a verifier client's credential lets it in
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    transport = httpx.HTTPTransport(verify=context, local_address="127.0.0.2")
    with httpx.Client(base_url=served["url"].replace("127.0.0.1", "127.0.0.1"), transport=transport,
                      timeout=10) as c:
        assert c.get("/healthz").status_code == 403
    with httpx.Client(base_url=served["url"], transport=httpx.HTTPTransport(verify=context, local_address="127.0.0.2"),
                      timeout=10) as c:
        bad = c.get("/healthz", headers={"Authorization": "Bearer relay:" + "A" * 43})
        assert bad.status_code == 403
    with httpx.Client(base_url=served["url"], transport=httpx.HTTPTransport(verify=context, local_address="127.0.0.2"),
                      timeout=10) as c:
        headers = {"Authorization": f"Bearer relay:{served['relay']}"}
        otp = served["request_otp"]()
        response = c.post("/validate/check", data={"user": "alice", "pass": otp}, headers=headers)
        assert response.status_code == 200 and response.json()["result"]["value"] is True
        assert c.get("/healthz", headers=headers).status_code == 200
    alive(served)


BAD_INPUT = [
    ("bad JSON", b"POST", b"/validate/check", {b"Content-Type": b"application/json"}, b'{"user": ', 400),
    ("JSON not an object", b"POST", b"/validate/check", {b"Content-Type": b"application/json"}, b"[1]", 400),
    ("JSON bad value", b"POST", b"/validate/check", {b"Content-Type": b"application/json"},
     b'{"user": ["a"], "pass": "1"}', 400),
    ("form bad UTF-8", b"POST", b"/validate/check", {b"Content-Type": b"application/x-www-form-urlencoded"},
     b"user=%ff%fe&pass=1", 400),
    ("missing pass", b"POST", b"/validate/check", {b"Content-Type": b"application/x-www-form-urlencoded"},
     b"user=alice", 400),
    ("missing user", b"GET", b"/validate/check?pass=123456", {}, b"", 400),
    ("non-ASCII digits", b"GET", b"/validate/check?user=alice&pass=%D9%A1%D9%A2%D9%A3%D9%A4%D9%A5%D9%A6", {}, b"",
     200),
    ("body too large", b"POST", b"/validate/check", {b"Content-Type": b"application/x-www-form-urlencoded"},
     b"user=alice&pass=" + b"1" * 70000, 413),
    ("header too large", b"GET", b"/healthz", {b"X-Big": b"a" * 9000}, b"", 431),
    ("garbage request line", b"G\x00T", b"/", {}, b"", 400),
]


def raw_request(served, method, target, headers, body, timeout=5):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", served["http_port"]), timeout=timeout) as raw:
        with context.wrap_socket(raw) as sock:
            head = b"%s %s HTTP/1.1\r\nHost: x\r\n" % (method, target)
            for name, value in headers.items():
                head += name + b": " + value + b"\r\n"
            if body:
                head += b"Content-Length: %d\r\n" % len(body)
            sock.sendall(head + b"\r\n" + body)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data


@pytest.mark.parametrize("name,method,target,headers,body,status", BAD_INPUT, ids=[row[0] for row in BAD_INPUT])
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(served, name, method, target, headers, body,
                                                                 status):
    data = raw_request(served, method, target, headers, body)
    assert data.startswith(b"HTTP/1.1 %d " % status), data[:200]
    if status == 200:                # non-ASCII digits: a plain rejection
        assert json.loads(data.partition(b"\r\n\r\n")[2])["result"]["value"] is False
    alive(served)


def test_slow_headers_are_cut(served):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", served["http_port"]), timeout=10) as raw:
        with context.wrap_socket(raw) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            closed = False
            for _ in range(20):
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    closed = True
                    break
                time.sleep(0.25)
                try:
                    sock.setblocking(False)
                    if sock.recv(100) == b"":
                        closed = True
                        break
                except (ssl.SSLWantReadError, BlockingIOError):
                    pass
                except OSError:
                    closed = True
                    break
                finally:
                    sock.setblocking(True)
            assert closed and time.monotonic() - started < 4     # --read-timeout 1
    alive(served)


def test_pipelined_requests_answered_in_order(served):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    otps = [served["request_otp"]() for _ in range(3)]
    with socket.create_connection(("127.0.0.1", served["http_port"]), timeout=5) as raw:
        with context.wrap_socket(raw) as sock:
            requests = b"".join(b"GET /validate/simplecheck?user=alice&pass=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                                % otp.encode() for otp in otps + [otps[0]])
            sock.sendall(requests)
            data = b""
            while data.count(b":-") < 4:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    assert data.count(b":-)") == 3 and data.endswith(b":-(")


@pytest.mark.service
def test_one_otp_raced_over_http_radius_and_native_is_accepted_once(served, require_service):
    radclient = shutil.which("radclient")
    require_service(radclient is not None, "radclient (freeradius-utils)")
    for _ in range(3):
        otp = served["request_otp"]("dave")
        results = {}

        def over_http():
            with httpx.Client(base_url=served["url"], verify=False, timeout=10) as c:
                results["http"] = c.post("/validate/check", data={"user": "dave", "pass": otp}).json()[
                    "result"]["value"]

        def over_radius():
            address = "%s:%d" % served["radius"]
            out = subprocess.run([radclient, "-x", "-r", "1", "-t", "3", address, "auth", SECRET],
                                 input=f'User-Name = "dave", User-Password = "{otp}", '
                                       f'Message-Authenticator = 0x00\n', capture_output=True, text=True, timeout=20)
            results["radius"] = "Access-Accept" in out.stdout

        def over_native():
            results["native"] = native_verify(served, otp)

        threads = [threading.Thread(target=f) for f in (over_http, over_radius, over_native)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == ["http", "native", "radius"]
        assert sum(bool(v) for v in results.values()) == 1, results


def native_verify(served, otp):
    import asyncio

    from otpfast.net.client import connect

    async def run():
        host, port = served["native"]
        async with connect(host, port, pin=served["data_dir"].fingerprint()) as client:
            await client.authenticate("relay", served["relay"])
            return await client.verify("dave", otp)
    return asyncio.run(run())


def test_pipelining_flood_gets_429_and_is_closed(served):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", served["http_port"]), timeout=5) as raw:
        with context.wrap_socket(raw) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 400)
            data = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except (ConnectionResetError, ssl.SSLError):
                    break
                if not chunk:
                    break
                data += chunk
    assert b"HTTP/1.1 429 " in data and data.count(b"HTTP/1.1 200 ") < 400
    alive(served)
