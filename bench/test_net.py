"""Verifications per second and p99 latency over the native protocol on loopback.

TLS, persistent connections, 64 concurrent clients (one asyncio process, each connection
pipelining WINDOW verifications), the real `otpfast serve` in a separate process, SQLite with
synchronous=FULL (every accept durable before its reply; group commit through AsyncVerifier).
The OTPs are issued beforehand through the service API, outside the timed part.

Figures:  python -m pytest bench/test_net.py --benchmark-enable -q -s
Size:     OTPFAST_BENCH_NET_OTPS (total OTPs verified in the timed part, default 6400),
          OTPFAST_BENCH_NET_WINDOW (verifications in flight per connection, default 1)
"""
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import deque

import pytest

from otpfast.datadir import DataDir
from otpfast.net import tls
from otpfast.protocol import messages as m
from otpfast.protocol._connection import CLIENT, NEED_DATA
from otpfast.protocol.distribution import Connection
from otpfast.services.distribution import ClientInfo, Distribution
from otpfast.services.masking import unmask

CONNECTIONS = 64
WINDOW = int(os.environ.get("OTPFAST_BENCH_NET_WINDOW", "1"))
TOTAL = int(os.environ.get("OTPFAST_BENCH_NET_OTPS", "6400"))
PER_CONNECTION = max(1, TOTAL // CONNECTIONS)


class PipelinedVerifier(asyncio.Protocol):
    """One persistent TLS connection that keeps WINDOW verifications in flight."""

    def __init__(self, items, credential, started, done):
        self.items = deque(items)
        self.credential = credential
        self.started = started
        self.done = done
        self.conn = Connection(CLIENT, max_pending=WINDOW + 1)
        self.sent_at = deque()
        self.latencies = []
        self.accepted = 0
        self.transport = None
        self.go = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.conn.send(m.Auth("bench-verifier", self.credential)))

    def begin(self):
        self._send(WINDOW)

    def _send(self, count):
        frames = []
        now = time.perf_counter()
        while count and self.items:
            account, otp = self.items.popleft()
            frames.append(self.conn.send(m.Verify(account, otp)))
            self.sent_at.append(now)
            count -= 1
        if frames:
            self.transport.write(b"".join(frames))

    def data_received(self, data):
        self.conn.receive_data(data)
        now = time.perf_counter()
        answered = 0
        while (event := self.conn.next_event()) is not NEED_DATA:
            kind = type(event)
            if kind is m.AuthOk:
                self.started.set_result(self)
                continue
            if kind is m.Error:
                self.done.set_exception(RuntimeError("server refused"))
                return
            self.latencies.append(now - self.sent_at.popleft())
            self.accepted += kind is m.Accept
            answered += 1
        if answered and self.go:
            self._send(answered)
        if not self.items and not self.sent_at and not self.done.done():
            self.done.set_result(self)

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(ConnectionError("connection lost"))
        if not self.started.done():
            self.started.set_exception(ConnectionError("connection lost"))
        self.closed.set_result(None)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A data directory with 64 rsa-prf accounts and TOTAL pre-issued OTPs; the server process."""
    path = tmp_path_factory.mktemp("bench-net")
    datadir = DataDir(str(path / "data"))
    datadir.init(rsa_bits=2048)
    admin = datadir.admin()
    verifier_credential = admin.add_client("bench-verifier", verifier=True).encode()
    phones = {}
    for i in range(CONNECTIONS):
        admin.add_account(f"user{i}", "rsa-prf", lockout=100)
        phones[f"user{i}"] = admin.add_client(f"phone{i}", account=f"user{i}").encode()
    admin.store.close()
    # Pre-issue through the service API (outside the timed part; not durable-critical).
    store = datadir.open_store(synchronous="NORMAL")
    distribution = Distribution(store)
    work = []
    for i in range(CONNECTIONS):
        account = f"user{i}"
        client = ClientInfo(f"phone{i}", account, False)
        items = []
        for _ in range(PER_CONNECTION):
            issued = distribution.request(client, account)
            items.append((account, unmask(phones[account], account, issued.nonce, issued.masked)))
        work.append(items)
    store.close()
    command = os.environ.get("OTPFAST_BENCH_NET_SERVER")  # profiling hook: a replacement server command
    command = command.split() + [datadir.path] if command else [
        sys.executable, "-m", "otpfast", "serve", "--listen", "127.0.0.1:0", "--data-dir", datadir.path]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    address = server.stdout.readline().split()[1]
    pin = server.stdout.readline().split()[1]
    host, port = address.rsplit(":", 1)
    yield host, int(port), pin, verifier_credential, work
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    server.stdout.close()


async def run_clients(host, port, pin, credential, work):
    loop = asyncio.get_running_loop()
    protocols = []
    for items in work:
        started, done = loop.create_future(), loop.create_future()
        transport, protocol = await loop.create_connection(
            lambda: PipelinedVerifier(items, credential, started, done), host, port, ssl=tls.client_context())
        tls.check_server(f"{host}:{port}", transport.get_extra_info("ssl_object").getpeercert(binary_form=True),
                         pin=pin)
        await started
        protocols.append(protocol)
    begin = time.perf_counter()
    for protocol in protocols:
        protocol.go = True
        protocol.begin()
    await asyncio.gather(*(p.done for p in protocols))
    elapsed = time.perf_counter() - begin
    for protocol in protocols:
        protocol.transport.close()
    await asyncio.gather(*(p.closed for p in protocols))
    return elapsed, protocols


@pytest.mark.benchmark(group="net-verify")
def test_net_verify_throughput(benchmark, prepared):
    host, port, pin, credential, work = prepared
    results = {}

    def run():
        results["elapsed"], results["protocols"] = asyncio.run(run_clients(host, port, pin, credential, work))

    benchmark.pedantic(run, rounds=1, iterations=1)
    protocols = results["protocols"]
    total = sum(len(items) for items in work)
    accepted = sum(p.accepted for p in protocols)
    latencies = sorted(x for p in protocols for x in p.latencies)
    assert len(latencies) == total
    assert accepted == total  # every pre-issued OTP verified exactly once
    rate = total / results["elapsed"]
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    benchmark.extra_info.update(verifications=total, connections=CONNECTIONS, window=WINDOW,
                                per_second=round(rate), p50_ms=round(p50, 2), p99_ms=round(p99, 2))
    print(f"\n{total} verifications over TLS, {CONNECTIONS} connections x {WINDOW} pipelined: "
          f"{rate:,.0f}/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    # the replays are refused (not timed)
    sample = [items[0] for items in work[:4]]
    replay = [(account, otp) for account, otp in sample]
    results.clear()
    second = asyncio.run(run_clients(host, port, pin, credential, [[item] for item in replay]))[1]
    assert sum(p.accepted for p in second) == 0
