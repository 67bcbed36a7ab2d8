"""Usability faults of a real `python -m otpfast serve` process (issue 10 item 7): SIGHUP
killed it, IPv6 addresses were printed without brackets, a store of an older schema is
upgraded at the server's start with one line saying so."""
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest

from otpfast.datadir import DataDir
from otpfast.store import SCHEMA_VERSION, atrest, sqlite as sqlite_backend
from otpfast.store.atrest import AtRestKeys

pytestmark = pytest.mark.slow


def _has_ipv6_loopback():
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("e2e-usability") / "data")
    DataDir(path).init(rsa_bits=2048)
    return path


class Serve:
    """`python -m otpfast serve` in a subprocess; reads `listening` and `fingerprint`."""

    def __init__(self, data_dir, listen="127.0.0.1:0", extra=()):
        env = dict(os.environ)
        for var in ("OTPFAST_DATA_DIR", "OTPFAST_AT_REST_KEY", "OTPFAST_STORE_URL"):
            env.pop(var, None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otpfast", "serve", "--listen", listen, "--data-dir", data_dir, *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = {}
        deadline = time.monotonic() + 30
        while len(self.lines) < 2:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"serve did not start: {self.process.stderr.read()}")
            key, _, value = line.strip().partition(" ")
            self.lines[key] = value
            assert time.monotonic() < deadline
        self.address = self.lines["listening"]
        host, port = self.address.rsplit(":", 1)
        self.host, self.port = host.strip("[]"), int(port)

    def answers(self):
        """A TLS handshake completes (the server is up and serving)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection((self.host, self.port), timeout=10) as raw:
            with context.wrap_socket(raw) as tls:
                return tls.version() is not None

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=20)
        err = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return self.process.returncode, err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_usability_sighup_does_not_kill_serve(data_dir, workers):
    server = Serve(data_dir, extra=("--workers", workers, "-v"))   # -v: the reload is logged at INFO
    try:
        assert server.answers()
        for _ in range(3):
            server.process.send_signal(signal.SIGHUP)
            time.sleep(0.3)
            assert server.process.poll() is None
            assert server.answers()
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert "SIGHUP: reloaded" in err


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_usability_ipv6_listen_address_printed_with_brackets(data_dir):
    server = Serve(data_dir, listen="[::1]:0", extra=("-v",))
    try:
        assert server.address.startswith("[::1]:") and server.answers()
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert "connection from [::1]:" in err      # -v logs the peer the same way


def test_usability_serve_upgrades_an_old_store_and_says_so(tmp_path):
    path = str(tmp_path / "old")
    DataDir(path).init(rsa_bits=2048)
    for name in ("store.db", "store.db-wal", "store.db-shm", "audit.head"):
        if os.path.exists(os.path.join(path, name)):
            os.remove(os.path.join(path, name))
    conn = sqlite_backend.connect(os.path.join(path, "store.db"))
    key = atrest.load_key(os.path.join(path, "at-rest.key"))
    try:
        sqlite_backend.migrate(conn, target=SCHEMA_VERSION - 1, keys=AtRestKeys(key))
    finally:
        conn.close()
    server = Serve(path)
    try:
        assert server.answers()
    finally:
        code, err = server.stop()
    assert code == 0, err
    said = [line for line in err.splitlines() if "upgraded the store schema" in line]
    assert len(said) == 1 and f"from version {SCHEMA_VERSION - 1} to {SCHEMA_VERSION}" in said[0]


def _otpfast(data_dir, *args):
    """`python -m otpfast ARGS` (admin commands get --data-dir)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OTPFAST_DATA_DIR", "OTPFAST_CREDENTIAL")}
    env["OTPFAST_KNOWN_SERVERS"] = os.path.join(data_dir, "..", "known_servers")
    admin = args[0] in ("client", "account", "enroll")
    return subprocess.run([sys.executable, "-m", "otpfast", *args, *(("--data-dir", data_dir) if admin else ())],
                          env=env, capture_output=True, text=True, timeout=60)


def test_usability_spaced_otp_accepted_over_the_network(data_dir, tmp_path):
    """`otpfast verify --server ... "123 456"`: the server takes the OTP as the app shows it."""
    import pyotp

    credential = _otpfast(data_dir, "client", "add", "v", "--verifier").stdout.strip()
    cred_file = tmp_path / "v.cred"
    cred_file.write_text(credential + "\n")
    cred_file.chmod(0o600)
    assert _otpfast(data_dir, "account", "add", "spaced", "--type", "totp").returncode == 0
    uri = _otpfast(data_dir, "enroll", "spaced").stdout
    token = pyotp.TOTP(uri.split("secret=")[1].split("&")[0])
    server = Serve(data_dir)
    try:
        def verify(otp):
            return _otpfast(data_dir, "verify", "--server", server.address, "--client", "v", "--credential-file",
                            str(cred_file), "--account", "spaced", "--pin", server.lines["fingerprint"], "--", otp)
        otp = token.now()
        result = verify(f"{otp[:3]} {otp[3:]}")
        assert result.returncode == 0 and "accepted" in result.stdout, result.stderr
        assert verify(otp).returncode == 1                     # and only once
    finally:
        code, err = server.stop()
    assert code == 0, err
