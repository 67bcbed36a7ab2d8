"""/validate/check with PIN + OTP over HTTPS keep-alive: verified/s and p50/p99 latency
against ``otpfast serve --http`` (real data dir, SQLite store with durable commits, the
group-commit verifier), 64 connections with one request outstanding each.

Pre-provisioned outside the timed part: 64 HOTP accounts with a PIN and, for each, its next
codes (as an authenticator app computes them) as ready-made request bytes. Every request
must be accepted (each code once), so every accept is a durable, audited verification.

    python -m pytest bench/test_http.py --benchmark-enable -s
    python -m pytest bench/test_http.py --benchmark-disable -q     # correctness only
    OTPFAST_BENCH_HTTP_WORKERS=N          # server processes (serve --workers; default 1)
    OTPFAST_BENCH_HTTP_SERVER="CMD ..."   # profiling hook: runs CMD serve ... instead of python -m otpfast_cli
"""
import asyncio
import hashlib
import hmac
import os
import signal
import ssl
import struct
import subprocess
import sys
import time
import urllib.parse

import pytest

from otpfast.datadir import DataDir
from otpfast.services.usertokens import TokenAdmin

CONNECTIONS = 64
CODES_PER_ACCOUNT = int(os.environ.get("OTPFAST_BENCH_HTTP_CODES", "100"))
PIN = "bench pin"
TARGET_PER_SECOND = 10_000
WORKERS = int(os.environ.get("OTPFAST_BENCH_HTTP_WORKERS", "1"))


def hotp(key, counter, digits=6):
    """RFC 4226 §5.3, independent of otpfast's implementation."""
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10 ** digits
    return f"{code:0{digits}d}"


def check_request(user, password):
    body = urllib.parse.urlencode({"user": user, "pass": password}).encode()
    return (b"POST /validate/check HTTP/1.1\r\nHost: otpfast\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench-http")
    data_dir = DataDir(str(base / "data"))
    data_dir.init(rsa_bits=2048)
    admin = data_dir.admin()
    tokens = TokenAdmin(admin.store)
    queues = []
    for index in range(CONNECTIONS):
        name = f"bench{index}"
        record = admin.add_account(name, "hotp")
        tokens.set_pin(name, PIN)
        key = bytes.fromhex(record.material["key"])
        queues.append([check_request(name, PIN + hotp(key, counter))
                       for counter in range(record.counter, record.counter + CODES_PER_ACCOUNT)])
    admin.store.close()
    return data_dir, queues


@pytest.fixture
def server(provisioned):
    data_dir, _ = provisioned
    command = os.environ.get("OTPFAST_BENCH_HTTP_SERVER")  # profiling hook: replaces `python -m otpfast_cli`
    command = command.split() if command else [sys.executable, "-m", "otpfast_cli"]
    proc = subprocess.Popen(
        command + ["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir.path,
         "--http", "127.0.0.1:0", "--workers", str(WORKERS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        http = [line for line in lines if line.startswith("http ")]
        assert http, "".join(lines) + proc.stderr.read()
        yield proc.pid, int(http[0].split()[1].rsplit(":", 1)[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


class _Client(asyncio.Protocol):
    """One keep-alive connection: sends its queue one request at a time."""

    def __init__(self, queue, done, latencies, outcome):
        self.queue = list(queue)
        self.done = done
        self.latencies = latencies
        self.outcome = outcome
        self.buffer = b""
        self.sent_at = 0.0

    def connection_made(self, transport):
        self.transport = transport

    def send_next(self):
        if not self.queue:
            self.transport.close()
            self.done.set_result(None)
            return
        self.sent_at = time.perf_counter()
        self.transport.write(self.queue.pop(0))

    def data_received(self, data):
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            self.latencies.append(time.perf_counter() - self.sent_at)
            self.outcome["accepted" if head.startswith(b"HTTP/1.1 200") and b'"value":true' in body
                         else "rejected"] += 1
            self.send_next()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed early"))


async def drive(port, queues):
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    latencies, outcome, clients, waits = [], {"accepted": 0, "rejected": 0}, [], []
    for queue in queues:
        done = loop.create_future()
        _, client = await loop.create_connection(lambda q=queue, d=done: _Client(q, d, latencies, outcome),
                                                 "127.0.0.1", port, ssl=context)
        clients.append(client)
        waits.append(done)
    started = time.perf_counter()
    for client in clients:
        client.send_next()
    await asyncio.wait_for(asyncio.gather(*waits), 300)
    return outcome, sorted(latencies), time.perf_counter() - started


def process_cpu_seconds(pid):
    """utime + stime of a process and its children (the server's workers; Linux /proc)."""
    def fields(entry):
        with open(f"/proc/{entry}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()
    try:
        own = fields(pid)
        ticks = int(own[11]) + int(own[12])
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    child = fields(entry)
                except OSError:
                    continue
                if child[1] == str(pid):
                    ticks += int(child[11]) + int(child[12])
    except OSError:
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def test_http_validate_check_per_second(benchmark, provisioned, server):
    _, queues = provisioned
    pid, port = server
    results = {}

    def run():
        before = process_cpu_seconds(pid)
        results["out"] = asyncio.run(drive(port, queues))
        after = process_cpu_seconds(pid)
        results["cpu"] = None if before is None or after is None else after - before

    benchmark.pedantic(run, rounds=1, iterations=1)
    outcome, latencies, seconds = results["out"]
    total = sum(len(q) for q in queues)
    rate = total / seconds
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    benchmark.extra_info.update(verifications=total, per_second=round(rate), p50_ms=round(p50, 2),
                                p99_ms=round(p99, 2), connections=CONNECTIONS)
    cpu = results["cpu"]
    cpu_text = "" if cpu is None else f"; server CPU {cpu / total * 1e6:.0f} us per verification"
    print(f"\nHTTPS /validate/check PIN+OTP: {total} verifications in {seconds:.2f} s = {rate:,.0f}/s, "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({CONNECTIONS} keep-alive connections, {WORKERS} workers, "
          f"{os.cpu_count()} cpus){cpu_text}")
    assert outcome == {"accepted": total, "rejected": 0}
    if os.environ.get("OTPFAST_BENCH_ASSERT_TARGET") == "1":
        assert rate >= TARGET_PER_SECOND
