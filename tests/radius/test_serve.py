"""`otpfast serve --radius ... --radius-socket ...` as a real server process over a real data
dir: radclient accept / reject / replay / wrong secret, and the bad-packet table; the server
keeps serving and its stderr never shows an OTP or the shared secret. The clients file has
127.0.0.1 on the default path (Message-Authenticator required) and 127.0.0.2 opted out."""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile

import pytest
from pyrad import packet as pyrad_packet

from otpfast.datadir import DataDir
from otpfast.radius.codec import load_dictionary, verify_response_authenticator
from otpfast.services import masking
from ..conftest import free_udp_port, stop_process

SECRET = "serve-radius-secret"
LEGACY_SECRET = "serve-radius-legacy-secret"
MA = ", Message-Authenticator = 0x00"


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def served(request, tmp_path_factory):
    """The server, as one process or as two workers on shared sockets (serve --workers 2)."""
    base = tmp_path_factory.mktemp("serve-radius")
    data_dir = DataDir(str(base / "data"))
    data_dir.init(rsa_bits=2048)
    admin = data_dir.admin()
    admin.add_account("alice", "hashchain", chain_length=40)
    credential = admin.add_client("alice-device", account="alice")
    admin.store.close()
    clients_file = base / "radius.clients"
    clients_file.write_text(f"127.0.0.1 {SECRET}\n127.0.0.2 {LEGACY_SECRET} no-message-authenticator\n")
    sock_dir = tempfile.mkdtemp(prefix="otps-", dir="/tmp")
    sock_path = os.path.join(sock_dir, "radius.sock")
    port = free_udp_port()
    stderr = open(base / "stderr.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpfast_cli", "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir.path,
         "--radius", f"127.0.0.1:{port}", "--radius-clients", str(clients_file),
         "--radius-socket", sock_path, "--verbose", "--workers", str(request.param)],
        stdout=subprocess.PIPE, stderr=stderr, text=True)
    distribution = data_dir.distribution()
    client = distribution.login("alice-device", credential.encode())
    issued_otps = []

    def request_otp():
        issued = distribution.request(client, "alice")
        otp = masking.unmask(client.session_key, "alice", issued.nonce, issued.masked, issued.expires_at_ms)
        issued_otps.append(otp)
        return otp

    try:
        line = proc.stdout.readline()
        assert line.startswith("listening "), line
        yield {"address": ("127.0.0.1", port), "socket": sock_path, "request_otp": request_otp,
               "proc": proc, "stderr": stderr, "issued": issued_otps}
    finally:
        stop_process(proc)
        proc.stdout.close()
        stderr.close()
        distribution.store.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture
def radclient(require_service):
    path = shutil.which("radclient")
    require_service(path is not None, "radclient (freeradius-utils)")

    def run(address, attributes, secret=SECRET):
        out = subprocess.run([path, "-x", "-r", "1", "-t", "1", f"{address[0]}:{address[1]}", "auth", secret],
                             input=attributes + "\n", capture_output=True, text=True, timeout=20)
        return out.returncode, out.stdout + out.stderr

    return run


def stderr_text(served):
    served["stderr"].flush()
    served["stderr"].seek(0)
    return served["stderr"].read()


@pytest.mark.service
def test_serve_radclient_accept_replay_wrong_secret(served, radclient):
    otp = served["request_otp"]()
    attributes = f'User-Name = "alice", User-Password = "{otp}"{MA}'
    rc, out = radclient(served["address"], attributes, secret="a-wrong-secret-16+")
    assert rc != 0 and "No reply from server" in out, out  # dropped, OTP not spent
    rc, out = radclient(served["address"], f'User-Name = "alice", User-Password = "{otp}"')
    assert rc != 0 and "No reply from server" in out, out  # no Message-Authenticator: dropped
    rc, out = radclient(served["address"], attributes)
    assert rc == 0 and "Received Access-Accept" in out, out
    rc, out = radclient(served["address"], attributes)
    assert rc != 0 and "Received Access-Reject" in out, out  # replay
    wrong = otp[:-1] + ("1" if otp[-1] == "0" else "0")
    rc, out = radclient(served["address"], f'User-Name = "alice", User-Password = "{wrong}"{MA}')
    assert rc != 0 and "Received Access-Reject" in out, out
    log = stderr_text(served)
    # the opt-out is announced loudly at start, naming the network
    assert "WARNING" in log and "127.0.0.2/32 may send Access-Requests WITHOUT a Message-Authenticator" in log


@pytest.mark.service
def test_serve_opted_out_client_without_message_authenticator(served):
    rdict = load_dictionary()
    otp = served["request_otp"]()

    def request(password):
        pkt = pyrad_packet.AuthPacket(code=1, secret=LEGACY_SECRET.encode(), dict=rdict)
        pkt["User-Name"] = "alice"
        pkt["User-Password"] = pkt.PwCrypt(password)
        return pkt, pkt.RequestPacket()

    for password, code in ((otp, 2), (otp, 3)):  # accept, then the replay is refused
        pkt, raw = request(password)
        reply = _exchange_udp(served["address"], raw, 5, source="127.0.0.2")
        assert reply is not None and reply[0] == code
        assert verify_response_authenticator(reply, pkt.authenticator, LEGACY_SECRET.encode())
    # the opt-out is that address's only: from 127.0.0.1 the same request gets nothing
    assert _exchange_udp(served["address"], request(otp)[1], 0.3) is None
    # a sniffed request re-sent under other Identifiers is not verified again, whichever
    # worker the kernel hands it to (workers are picked by the Request Authenticator)
    pkt, raw = request("000000")
    assert _exchange_udp(served["address"], raw, 5, source="127.0.0.2")[0] == 3
    for identifier in range(1, 11):
        copy = raw[:1] + bytes([(raw[1] + identifier) % 256]) + raw[2:]
        assert _exchange_udp(served["address"], copy, 0.2, source="127.0.0.2") is None


def _exchange_udp(address, raw, timeout, source="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        s.sendto(raw, address)
        try:
            return s.recv(4096)
        except socket.timeout:
            return None


@pytest.mark.service
def test_serve_bad_packet_table_keeps_serving(served):
    rdict = load_dictionary()
    otp = served["request_otp"]()

    def request(secret=SECRET.encode(), with_ma=True, password=otp):
        pkt = pyrad_packet.AuthPacket(code=1, secret=secret, dict=rdict)
        pkt["User-Name"] = "alice"
        pkt["User-Password"] = pkt.PwCrypt(password)
        if with_ma:
            pkt.add_message_authenticator()
        return pkt, pkt.RequestPacket()

    _, good = request()
    corrupted = bytearray(good)
    corrupted[corrupted.index(bytes([80, 18])) + 2] ^= 1
    bad = {
        "oversize": good + b"\0" * 4100,
        "bad length field": good[:2] + struct.pack("!H", 12) + good[4:],
        "length beyond data": good[:2] + struct.pack("!H", len(good) + 9) + good[4:],
        "truncated": good[:15],
        "unknown code": bytes([12]) + good[1:],
        "garbage": os.urandom(64),
        "wrong secret": request(secret=b"not-the-secret")[1],
        "bad message authenticator": bytes(corrupted),
        "no message authenticator": request(with_ma=False)[1],
    }
    for name, raw in bad.items():
        assert _exchange_udp(served["address"], raw, 0.3) is None, name
    # the UNIX socket: a bad length field closes that connection only
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect(served["socket"])
        s.sendall(b"\x01\x01\x00\x02" + b"\0" * 30)
        assert s.recv(100) == b""
    # still serving, and none of the bad packets spent the OTP
    pkt, raw = request()
    reply = _exchange_udp(served["address"], raw, 5)
    assert reply is not None and reply[0] == 2
    assert verify_response_authenticator(reply, pkt.authenticator, SECRET.encode())
    # over the UNIX socket (no secret) too
    pkt = pyrad_packet.AuthPacket(code=1, secret=b"", dict=rdict)  # like krb5 1.20: no Message-Authenticator
    pkt["User-Name"] = "alice"
    pkt["User-Password"] = pkt.PwCrypt(served["request_otp"]())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(served["socket"])
        s.sendall(pkt.RequestPacket())
        reply = s.recv(4096)
    assert reply[0] == 2 and verify_response_authenticator(reply, pkt.authenticator, b"")
    assert served["proc"].poll() is None
    log = stderr_text(served)
    for reason in ("oversize", "bad_length", "unknown_code", "missing_message_authenticator",
                   "bad_message_authenticator"):
        assert reason in log, reason
    for issued in served["issued"]:
        assert issued not in log
    assert SECRET not in log and LEGACY_SECRET not in log
