"""RADIUS verifications per second on loopback: UDP, 64 outstanding requests, against a
server process (real data dir, SQLite store with durable commits, group-commit verifier).

Pre-provisioned outside the timed part: 64 HOTP accounts and, for each, its next codes
(as an authenticator app computes them) as ready-made Access-Request packets, signed with a
Message-Authenticator (required by default) or, for the opted-out client of the front-end
test, without (as krb5 1.20 sends them). Every request must be accepted (each code once).

    python -m pytest bench/test_radius.py --benchmark-enable -s
    python -m pytest bench/test_radius.py --benchmark-disable -q     # correctness only
    OTPFAST_BENCH_RADIUS_SERVER="CMD ..."   # profiling hook: runs CMD serve ... instead of python -m otpfast_cli
    OTPFAST_BENCH_RADIUS_WORKERS=N          # server processes (serve --workers; default 1)

The load comes from one UDP socket, as from one NAS; with several workers the kernel routes
each request by its Request Authenticator (otpfast.net.workers).
"""
import hashlib
import hmac
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from pyrad import packet as pyrad_packet

from otpfast.datadir import DataDir
from otpfast.radius.codec import load_dictionary

OUTSTANDING = 64
CODES_PER_ACCOUNT = int(os.environ.get("OTPFAST_BENCH_RADIUS_CODES", "200"))
SECRET = b"bench-radius-secret"
TARGET_PER_SECOND = 10_000
WORKERS = int(os.environ.get("OTPFAST_BENCH_RADIUS_WORKERS", "1"))

FRONT_END_ONLY_SERVER = r"""
import asyncio, sys
from otpfast.radius.config import RadiusClients, RadiusConfig
from otpfast.radius.server import start_radius

async def main(port, secret, require_message_authenticator):
    loop = asyncio.get_running_loop()

    def verify(account, otp, source):  # accepts at once: measures the RADIUS layer alone
        future = loop.create_future()
        future.set_result(len(otp) == 6 and otp.isdigit())
        return future

    clients = RadiusClients.shared(secret, require_message_authenticator=require_message_authenticator)
    front_end = await start_radius(RadiusConfig(udp=("127.0.0.1", port), clients=clients), verify)
    print("listening", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    front_end.close()

asyncio.run(main(int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3] == "required"))
"""


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hotp(key, counter, digits=6):
    """RFC 4226 §5.3, independent of otpfast's implementation (what an authenticator app does)."""
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10 ** digits
    return f"{code:0{digits}d}"


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    """64 HOTP accounts and, for each, its next CODES_PER_ACCOUNT codes as ready-made
    Access-Request packets, in the order they must be used: {"signed": queues (with a
    Message-Authenticator), "plain": queues (without)}."""
    base = tmp_path_factory.mktemp("bench-radius")
    data_dir = DataDir(str(base / "data"))
    data_dir.init(rsa_bits=2048)
    admin = data_dir.admin()
    rdict = load_dictionary()
    queues = {"signed": [], "plain": []}
    for index in range(OUTSTANDING):
        name = f"bench{index}"
        record = admin.add_account(name, "hotp")
        key = bytes.fromhex(record.material["key"])
        packets = {"signed": [], "plain": []}
        for counter in range(record.counter, record.counter + CODES_PER_ACCOUNT):
            for kind in packets:
                pkt = pyrad_packet.AuthPacket(code=1, id=index, secret=SECRET, dict=rdict)
                pkt["User-Name"] = name
                pkt["User-Password"] = pkt.PwCrypt(hotp(key, counter))
                pkt["NAS-Identifier"] = "bench"
                if kind == "signed":
                    pkt.add_message_authenticator()
                packets[kind].append(pkt.RequestPacket())
        for kind in packets:
            queues[kind].append(packets[kind])
    admin.store.close()
    secret_file = base / "radius.secret"
    secret_file.write_bytes(SECRET + b"\n")
    return data_dir, str(secret_file), queues


@pytest.fixture
def server(provisioned):
    """``otpfast serve`` with RADIUS over UDP, as an admin would run it."""
    data_dir, secret_file, _ = provisioned
    port = free_udp_port()
    command = os.environ.get("OTPFAST_BENCH_RADIUS_SERVER")  # profiling hook: replaces `python -m otpfast_cli`
    command = command.split() if command else [sys.executable, "-m", "otpfast_cli"]
    proc = subprocess.Popen(
        command + ["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir.path,
                   "--radius", f"127.0.0.1:{port}", "--radius-secret-file", secret_file, "--workers", str(WORKERS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening "), line + proc.stderr.read()
        yield proc, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def drive(port, queues):
    """Keep one request per account (64) outstanding until every queue is empty.
    Returns (accepted, rejected, seconds)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(10)
    positions = [0] * len(queues)
    accepted = rejected = 0
    total = sum(len(q) for q in queues)
    started = time.perf_counter()
    for index, queue in enumerate(queues):
        sock.send(queue[0])
    done = 0
    while done < total:
        reply = sock.recv(4096)
        done += 1
        if reply[0] == 2:
            accepted += 1
        else:
            rejected += 1
        index = reply[1]
        positions[index] += 1
        if positions[index] < len(queues[index]):
            sock.send(queues[index][positions[index]])
    seconds = time.perf_counter() - started
    sock.close()
    return accepted, rejected, seconds


@pytest.fixture(params=["signed", "plain"], ids=["message-authenticator", "opted-out"])
def front_end_only_server(request, provisioned):
    """The front end alone; "plain": its client is opted out (no Message-Authenticator)."""
    port = free_udp_port()
    policy = "required" if request.param == "signed" else "opted-out"
    proc = subprocess.Popen([sys.executable, "-c", FRONT_END_ONLY_SERVER, str(port), SECRET.decode(), policy],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("listening")
        yield request.param, port
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_radius_front_end_only_per_second(benchmark, provisioned, front_end_only_server):
    """The RADIUS layer alone (decode, duplicate cache, reply signing, UDP) over a verifier
    that answers at once: the ceiling the front end puts on the whole system."""
    _, _, queues = provisioned
    kind, port = front_end_only_server
    label = "Message-Authenticator" if kind == "signed" else "opted out, no Message-Authenticator"
    _measure(benchmark, port, queues[kind], f"RADIUS/UDP front end only ({label})")


def test_radius_verifications_per_second(benchmark, provisioned, server):
    """``otpfast serve --radius``: every accept a durable, audited verification."""
    _, _, queues = provisioned
    _, port = server
    _measure(benchmark, port, queues["signed"], f"RADIUS/UDP otpfast serve --workers {WORKERS}")


def _measure(benchmark, port, queues, label):
    results = {}

    def run():
        results["outcome"] = drive(port, queues)

    benchmark.pedantic(run, rounds=1, iterations=1)
    accepted, rejected, seconds = results["outcome"]
    total = sum(len(q) for q in queues)
    rate = total / seconds
    benchmark.extra_info.update(verifications=total, per_second=round(rate), outstanding=OUTSTANDING)
    print(f"\n{label}: {total} verifications in {seconds:.2f} s = {rate:,.0f}/s "
          f"({OUTSTANDING} outstanding, {os.cpu_count()} cpus)")
    assert (accepted, rejected) == (total, 0)
    if os.environ.get("OTPFAST_BENCH_ASSERT_TARGET") == "1":
        assert rate >= TARGET_PER_SECOND
