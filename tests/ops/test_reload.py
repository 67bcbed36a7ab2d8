"""SIGHUP on a real `otpfast serve --config FILE` process: the certificate, the RADIUS
clients and the failure throttles change while a native-protocol client, an HTTPS
keep-alive connection and RADIUS clients stay connected; a bad new config or certificate is
refused with a log line and the previous one keeps serving."""
import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest

from otpfast.datadir import DataDir
from otpfast.net import tls
from otpfast.net.client import connect
from otpfast.services import masking
from ..conftest import free_udp_port, stop_process
from ..radius.conftest import RadiusClient, udp_exchange

OLD_SECRET = "reload-radius-secret-old"
NEW_SECRET = "reload-radius-secret-new"
ACCESS_ACCEPT, ACCESS_REJECT = 2, 3


@pytest.fixture(scope="module")
def rdict():
    from pyrad.dictionary import Dictionary
    from importlib.resources import files
    return Dictionary(str(files("otpfast") / "data" / "radius_dictionary"))


def _otpfast(*args, data_dir):
    out = subprocess.run([sys.executable, "-m", "otpfast_cli", *args, "--data-dir", data_dir],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _wait_for(path, text, since, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as fh:
            fh.seek(since)
            if text in fh.read():
                return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged in {timeout} s:\n{open(path).read()}")


class Https:
    """One HTTPS keep-alive connection (raw: it must stay the same socket)."""

    def __init__(self, port):
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
        self.der = self.sock.getpeercert(True)

    def check(self, user, otp):
        body = f"user={user}&pass={otp}".encode()
        self.sock.sendall(b"POST /validate/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                          b"\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")][0])
        while len(rest) < length:
            rest += self.sock.recv(65536)
        return b'"value": true' in rest or b'"value":true' in rest

    def close(self):
        self.sock.close()


def _https_pin(port):
    https = Https(port)
    https.close()
    return tls.pin_of(https.der)


@pytest.fixture
def server(tmp_path):
    data_dir = DataDir(str(tmp_path / "data"))
    data_dir.init(rsa_bits=2048)
    admin = data_dir.admin()
    admin.add_account("alice", "hashchain", chain_length=200)
    device = admin.add_client("alice-device", account="alice")
    relay = admin.add_client("relay", verifier=True)
    admin.store.close()
    clients_file = tmp_path / "radius.clients"
    clients_file.write_text(f"127.0.0.1 {OLD_SECRET}\n")
    port = free_udp_port()
    config = tmp_path / "serve.toml"
    config.write_text(f'listen = "127.0.0.1:0"\ndata-dir = "{data_dir.path}"\nradius = "127.0.0.1:{port}"\n'
                      f'radius-clients = "{clients_file}"\nhttp = "127.0.0.1:0"\nverbose = true\n')
    stderr_path = tmp_path / "stderr.log"
    stderr = open(stderr_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "otpfast_cli", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=stderr, text=True)
    distribution = data_dir.distribution()
    session = distribution.login("alice-device", device.encode())

    def request_otp():
        issued = distribution.request(session, "alice")
        return masking.unmask(session.session_key, "alice", issued.nonce, issued.masked, issued.expires_at_ms)

    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        native = lines[0].split()[1].rsplit(":", 1)
        http = [line for line in lines if line.startswith("http ")][0].split()[1].rsplit(":", 1)
        yield {"proc": proc, "data_dir": data_dir, "config": config, "clients_file": clients_file,
               "native": (native[0], int(native[1])), "http_port": int(http[1]), "radius": ("127.0.0.1", port),
               "relay": relay, "request_otp": request_otp, "stderr": str(stderr_path)}
    finally:
        stop_process(proc)
        proc.stdout.close()
        stderr.close()
        distribution.store.close()


def _hangup(server, expect):
    since = os.path.getsize(server["stderr"])
    server["proc"].send_signal(signal.SIGHUP)
    _wait_for(server["stderr"], expect, since)


def _radius(rdict, server, secret, otp):
    client = RadiusClient(rdict, secret=secret.encode())
    pkt, raw = client.request("alice", otp)
    reply = udp_exchange(server["radius"], raw, timeout=1.5)
    return None if reply is None else client.check_reply(pkt, reply)


def test_sighup_reloads_certificate_radius_clients_and_throttles_keeping_connections(server, rdict):
    data_dir = server["data_dir"]
    old_pin = data_dir.fingerprint()

    async def scenario():
        host, port = server["native"]
        async with connect(host, port, pin=old_pin) as native:
            await native.authenticate("relay", server["relay"])
            https = Https(server["http_port"])
            assert tls.pin_of(https.der) == old_pin
            assert await native.verify("alice", server["request_otp"]())
            assert https.check("alice", server["request_otp"]())
            assert _radius(rdict, server, OLD_SECRET, server["request_otp"]()) == ACCESS_ACCEPT

            # a new key, a new RADIUS secret, tighter throttles: then SIGHUP
            new_pin = await asyncio.to_thread(_otpfast, "rotate", "tls", data_dir=data_dir.path)
            assert new_pin != old_pin
            server["clients_file"].write_text(f"127.0.0.1 {NEW_SECRET}\n")
            with open(server["config"], "a") as fh:
                fh.write('failures-per-source = "1,3"\n')
            _hangup(server, "SIGHUP: reloaded the TLS certificate")

            # the connections opened before it still work, on the old certificate
            assert await native.verify("alice", server["request_otp"]())
            assert https.check("alice", server["request_otp"]())
            # new connections get the new certificate: the old pin is refused, the new one works
            with pytest.raises(tls.FingerprintMismatch):
                async with connect(host, port, pin=old_pin):
                    pass
            await asyncio.sleep(0.05)       # the client closes the refused connection
            async with connect(host, port, pin=new_pin) as fresh:
                await fresh.authenticate("relay", server["relay"])
                assert await fresh.verify("alice", server["request_otp"]())
            assert _https_pin(server["http_port"]) == new_pin
            # RADIUS: the old secret is no longer a client's, the new one is
            otp = server["request_otp"]()
            assert _radius(rdict, server, OLD_SECRET, otp) is None
            assert _radius(rdict, server, NEW_SECRET, otp) == ACCESS_ACCEPT

            # a bad config is refused, the previous settings keep serving
            with open(server["config"], "a") as fh:
                fh.write("no-such-option = 1\n")
            _hangup(server, "reload refused, still serving the previous settings")
            with open(server["stderr"]) as fh:
                assert "no-such-option" in fh.read()
            assert _radius(rdict, server, NEW_SECRET, server["request_otp"]()) == ACCESS_ACCEPT
            assert await native.verify("alice", server["request_otp"]())

            # the throttle now in force: 3 failures from this source, then refused before any work
            for _ in range(3):
                assert not https.check("alice", "000000")
            assert not https.check("alice", server["request_otp"]())      # throttled, not checked
            https.close()
    asyncio.run(scenario())
    assert server["proc"].poll() is None


def test_sighup_refuses_a_broken_certificate(server):
    data_dir = server["data_dir"]
    pin = data_dir.fingerprint()
    # a certificate for another key than tls.key: refused, the previous identity stays
    from otpfast.datadir import _self_signed
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives import serialization
    with open(data_dir.file("tls.crt"), "wb") as fh:
        fh.write(_self_signed(ec.generate_private_key(ec.SECP256R1())).public_bytes(serialization.Encoding.PEM))
    _hangup(server, "reload refused")
    assert _https_pin(server["http_port"]) == pin
    assert server["proc"].poll() is None


def test_pin_is_the_key_renewed_certificate_keeps_clients_new_key_refused(server, tmp_path, caplog):
    """Clients pin the certificate's public key: renewing the certificate with the same key
    keeps pinned and trust-on-first-use clients working (and the channel binding follows the
    new certificate); a new key is refused by both."""
    data_dir, host_port = server["data_dir"], server["native"]
    pin = data_dir.fingerprint()
    known = tls.KnownServers(str(tmp_path / "known_servers"))

    async def login(**kwargs):
        async with connect(*host_port, **kwargs) as client:
            await client.authenticate("relay", server["relay"])
            return await client.verify("alice", server["request_otp"]())

    first_der = data_dir.certificate_der()
    assert asyncio.run(login(pin=pin)) and asyncio.run(login(pin=None, known_servers=known))

    assert _otpfast("rotate", "tls", "--keep-key", data_dir=data_dir.path) == pin
    _hangup(server, "SIGHUP: reloaded the TLS certificate")
    renewed_der = data_dir.certificate_der()
    assert renewed_der != first_der and tls.pin_of(renewed_der) == pin
    assert asyncio.run(login(pin=pin))                          # renewed: the same pin, a new binding
    assert asyncio.run(login(pin=None, known_servers=known))    # remembered: still the server
    # a pin of the old format (the whole certificate) matches its own certificate, with a warning
    old_style = tls.certificate_fingerprint(renewed_der)
    assert asyncio.run(login(pin=old_style))
    assert f"--pin {pin}" in caplog.text
    # ... and a known-servers line of the old format is rewritten to the key pin
    migrated = tls.KnownServers(str(tmp_path / "old_known_servers"))
    address = "%s:%d" % host_port
    migrated.remember(address, old_style)
    assert asyncio.run(login(pin=None, known_servers=migrated))
    assert migrated.lookup(address) == pin

    new_pin = _otpfast("rotate", "tls", data_dir=data_dir.path)
    assert new_pin != pin
    _hangup(server, f"key pin {new_pin}")
    async def refused(**kwargs):
        with pytest.raises(tls.FingerprintMismatch):
            await login(**kwargs)
        await asyncio.sleep(0.1)        # the client closes the refused connection

    for kwargs in ({"pin": pin}, {"pin": None, "known_servers": known}, {"pin": old_style}):
        asyncio.run(refused(**kwargs))
    assert asyncio.run(login(pin=new_pin))


def test_sighup_reaches_every_worker(tmp_path):
    """serve --workers 2: the supervisor passes SIGHUP on; each worker reloads once."""
    data_dir = DataDir(str(tmp_path / "data"))
    data_dir.init(rsa_bits=2048)
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "otpfast_cli", "serve", "--listen", "127.0.0.1:0",
                                 "--data-dir", data_dir.path, "--workers", "2", "-v"],
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            proc.stdout.readline()
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while stderr_path.read_text().count("SIGHUP: reloaded") < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None
        finally:
            stop_process(proc)
            proc.stdout.close()
    assert stderr_path.read_text().count("SIGHUP: reloaded") == 2
