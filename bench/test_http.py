"""/validate/check with PIN + OTP over HTTPS keep-alive against the native protocol, in one run.

One ``otpfast serve --listen ... --http ...`` (real data dir, SQLite with durable commits, the
group-commit verifier) and 128 HOTP accounts with a PIN: 64 verified over HTTPS (``POST
/validate/check`` with a form body, one request outstanding per keep-alive connection), 64
over the native protocol (a verifier client's Verify frames carrying PIN + OTP, one
outstanding per connection). Each round runs the native load and the HTTPS load one after the
other (native first in odd rounds, HTTPS first in even ones), each on 64 fresh connections
(TLS and the native challenge-response before the clock starts). Every request must be accepted
(each code once), so every accept is a durable, audited verification; a replayed code is
refused on both. Printed per round and as the best of the rounds: verified/s, p50/p99, the
server's CPU per verification, and the ratio HTTPS / native of the same round.

Pre-provisioned outside the timed part: the accounts, their PINs and, for each, its next codes
(as an authenticator app computes them) as ready-made request bytes or frames.

    python -m pytest bench/test_http.py --benchmark-enable -s -q       # figures (3 rounds)
    python -m pytest bench/test_http.py --benchmark-disable -q         # correctness (1 round)
    OTPFAST_BENCH_HTTP_ROUNDS=N           # rounds (default 3; 1 with --benchmark-disable)
    OTPFAST_BENCH_HTTP_CODES=N            # requests per connection and round (default 100)
    OTPFAST_BENCH_HTTP_WORKERS=N          # server processes (serve --workers; default 1)
    OTPFAST_BENCH_HTTP_SERVER="CMD ..."   # profiling hook: runs CMD serve ... instead of python -m otpfast_cli
    OTPFAST_BENCH_ASSERT_TARGET=1         # also assert >= 10,000/s and p99 <= 10 ms over HTTPS

``test_http_sans_io_check_request``: the HTTP layer's own share (parse, parameters, envelope),
in-process, no sockets.
"""
import asyncio
import hashlib
import hmac
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.parse
from collections import deque

import pytest

from otpfast.datadir import DataDir
from otpfast.net import eventloop, tls
from otpfast.protocol import codec, messages as m, validate
from otpfast.protocol._connection import NEED_DATA
from otpfast.protocol.http import HttpConnection
from otpfast.services import credentials
from otpfast.services.usertokens import TokenAdmin

from _measure import own_cpu_seconds, percentile_ms, process_cpu_seconds

CONNECTIONS = 64
CODES = int(os.environ.get("OTPFAST_BENCH_HTTP_CODES", "100"))
WORKERS = int(os.environ.get("OTPFAST_BENCH_HTTP_WORKERS", "1"))
PIN = "bench pin"
VERIFIER = "bench-verifier"
TARGET_PER_SECOND = 10_000
TARGET_P99_MS = 10.0


def rounds(config):
    default = "1" if config.getoption("benchmark_disable", False) else "3"
    return max(1, int(os.environ.get("OTPFAST_BENCH_HTTP_ROUNDS", default)))


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


def verify_frame(user, password):
    return codec.encode(m.Verify(user, password))


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory, request):
    """The data dir, the verifier's credential, and per round {"https"|"native": 64 lists of
    requests}, each list the next codes of one account."""
    count = rounds(request.config)
    base = tmp_path_factory.mktemp("bench-http")
    data_dir = DataDir(str(base / "data"))
    data_dir.init(rsa_bits=2048)
    admin = data_dir.admin()
    credential = admin.add_client(VERIFIER, verifier=True).encode()
    tokens = TokenAdmin(admin.store)
    work = [{"https": [], "native": []} for _ in range(count)]
    for front_end, encode in (("https", check_request), ("native", verify_frame)):
        for index in range(CONNECTIONS):
            name = f"{front_end}{index}"
            record = admin.add_account(name, "hotp")
            tokens.set_pin(name, PIN)
            key = bytes.fromhex(record.material["key"])
            counter = record.counter
            for per_round in work:
                per_round[front_end].append([encode(name, PIN + hotp(key, n)) for n in range(counter, counter + CODES)])
                counter += CODES
    admin.store.close()
    return data_dir, credential, work


@pytest.fixture
def server(provisioned):
    """(pid, native (host, port), https port) of a running ``otpfast serve``."""
    data_dir = provisioned[0]
    command = os.environ.get("OTPFAST_BENCH_HTTP_SERVER")  # profiling hook: replaces `python -m otpfast_cli`
    command = command.split() if command else [sys.executable, "-m", "otpfast_cli"]
    proc = subprocess.Popen(
        command + ["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir.path,
                   "--http", "127.0.0.1:0", "--workers", str(WORKERS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = dict(proc.stdout.readline().split(None, 1) for _ in range(3))
        assert {"listening", "fingerprint", "http"} <= set(lines), str(lines) + proc.stderr.read()
        host, port = lines["listening"].strip().rsplit(":", 1)
        yield proc.pid, (host, int(port)), int(lines["http"].rsplit(":", 1)[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


class _Load(asyncio.Protocol):
    """One keep-alive connection sending its queue one request at a time; ``ready`` once it
    may start, ``done`` when every reply is in (or the connection failed)."""

    def __init__(self, queue):
        self.queue = deque(queue)
        loop = asyncio.get_running_loop()
        self.ready, self.done, self.closed = loop.create_future(), loop.create_future(), loop.create_future()
        self.latencies = []
        self.accepted = 0
        self.buffer = b""
        self.sent_at = 0.0
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.ready.set_result(None)

    def send_next(self):
        if not self.queue:
            self.done.set_result(None)
            return
        self.sent_at = time.perf_counter()
        self.transport.write(self.queue.popleft())

    def answered(self, accepted):
        self.latencies.append(time.perf_counter() - self.sent_at)
        self.accepted += accepted
        self.send_next()

    def fail(self, exc):
        for future in (self.ready, self.done):
            if not future.done():
                future.set_exception(exc)

    def connection_lost(self, exc):
        self.fail(exc or ConnectionError("closed early"))
        self.closed.set_result(None)


class HttpLoad(_Load):
    """Counts a 200 whose body says ``"value":true`` as accepted."""

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
            self.answered(head.startswith(b"HTTP/1.1 200 ") and b'"value":true' in body)


class NativeLoad(_Load):
    """Authenticates as the verifier client (AuthStart, Challenge, AuthProof, AuthOk), then
    counts Accept frames."""

    def __init__(self, queue, credential):
        super().__init__(queue)
        self.credential = credential
        self.nonce = credentials.new_nonce()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(codec.encode(m.AuthStart(VERIFIER, self.nonce)))

    def data_received(self, data):
        self.buffer += data
        while len(self.buffer) >= codec.HEADER.size:
            version, kind, length = codec.HEADER.unpack_from(self.buffer)
            end = codec.HEADER.size + length
            if len(self.buffer) < end:
                return
            body, self.buffer = self.buffer[codec.HEADER.size:end], self.buffer[end:]
            if kind == m.Challenge.TYPE:
                challenge = codec.decode_body(m.Challenge, body)
                binding = tls.end_point(self.transport.get_extra_info("ssl_object").getpeercert(binary_form=True))
                exchange = credentials.Exchange(credentials.CLIENT, VERIFIER, self.nonce,
                                                challenge.server_nonce, binding)
                self.transport.write(codec.encode(m.AuthProof(credentials.prove(self.credential, exchange)[0])))
            elif kind == m.AuthOk.TYPE:
                self.ready.set_result(None)
            elif kind in (m.Accept.TYPE, m.Reject.TYPE):
                self.answered(kind == m.Accept.TYPE)
            else:
                self.fail(RuntimeError(f"unexpected frame type {kind}"))
                self.transport.abort()
                return


async def drive(address, make_load, queues, pid):
    """Open one connection per queue, then time them all; a dict of the figures."""
    loop = asyncio.get_running_loop()
    context = tls.client_context()
    loads = []
    for queue in queues:
        _, load = await loop.create_connection(lambda q=queue: make_load(q), *address, ssl=context)
        await load.ready
        loads.append(load)
    server_before, client_before = process_cpu_seconds(pid), own_cpu_seconds()
    started = time.perf_counter()
    for load in loads:
        load.send_next()
    await asyncio.wait_for(asyncio.gather(*(load.done for load in loads)), 300)
    seconds = time.perf_counter() - started
    server_after, client_cpu = process_cpu_seconds(pid), own_cpu_seconds() - client_before
    for load in loads:
        load.transport.close()
    await asyncio.gather(*(load.closed for load in loads))
    total = sum(len(queue) for queue in queues)
    latencies = sorted(x for load in loads for x in load.latencies)
    assert len(latencies) == total
    server_cpu = None if server_before is None or server_after is None else server_after - server_before
    return {"total": total, "accepted": sum(load.accepted for load in loads), "rate": total / seconds,
            "p50": percentile_ms(latencies, 0.5), "p99": percentile_ms(latencies, 0.99),
            "server_us": None if server_cpu is None else server_cpu / total * 1e6,
            "client_us": client_cpu / total * 1e6}


def describe(name, figures):
    server_us = figures["server_us"]
    cpu = "" if server_us is None else f", server CPU {server_us:.0f} us"
    return (f"{name:6s} {figures['rate']:7,.0f}/s  p50 {figures['p50']:5.2f} ms  p99 {figures['p99']:5.2f} ms"
            f"{cpu}, client CPU {figures['client_us']:.0f} us per verification")


def test_http_validate_check_per_second(benchmark, provisioned, server):
    _, credential, work = provisioned
    pid, native_address, http_port = server
    http_address = (native_address[0], http_port)
    results = []

    async def run_round(per_round, https_first):
        """The two loads one after the other, in the order given (alternated by round)."""
        loads = [("native", native_address, lambda q: NativeLoad(q, credential)), ("https", http_address, HttpLoad)]
        figures = {}
        for name, address, make_load in (loads[::-1] if https_first else loads):
            figures[name] = await drive(address, make_load, per_round[name], pid)
        return figures["native"], figures["https"]

    async def replay(per_round):
        """The first code of each kind once more: refused on both."""
        native = await drive(native_address, lambda q: NativeLoad(q, credential), [per_round["native"][0][:1]], pid)
        http = await drive(http_address, HttpLoad, [per_round["https"][0][:1]], pid)
        return native["accepted"] + http["accepted"]

    def run():
        for index, per_round in enumerate(work):
            results.append(eventloop.run(run_round(per_round, index % 2 == 1)))

    benchmark.pedantic(run, rounds=1, iterations=1)
    print(f"\n/validate/check PIN + OTP over HTTPS against the native protocol's Verify, {CONNECTIONS} "
          f"keep-alive TLS connections each, one request outstanding per connection, {WORKERS} server "
          f"worker(s), {eventloop.chosen()}, {os.cpu_count()} cpus, {CODES * CONNECTIONS} verifications per load")
    for index, (native, http) in enumerate(results, 1):
        assert native["accepted"] == native["total"] and http["accepted"] == http["total"]
        print(f"round {index}: " + describe("native", native))
        print("         " + describe("https", http) + f"  = {http['rate'] / native['rate']:.0%} of native")
    best_native = max(results, key=lambda r: r[0]["rate"])[0]
    best_http, same_round = max(((http, native) for native, http in results), key=lambda r: r[0]["rate"])
    ratios = sorted(http["rate"] / native["rate"] for native, http in results)
    print("best:    " + describe("native", best_native))
    print("         " + describe("https", best_http)
          + f"  = {best_http['rate'] / same_round['rate']:.0%} of native in its round; "
            f"median of the rounds' ratios {ratios[(len(ratios) - 1) // 2]:.0%}")
    assert eventloop.run(replay(work[0])) == 0
    benchmark.extra_info.update(
        connections=CONNECTIONS, workers=WORKERS, per_round=CODES * CONNECTIONS, rounds=len(results),
        https_per_second=round(best_http["rate"]), https_p99_ms=round(best_http["p99"], 2),
        native_per_second=round(best_native["rate"]), native_p99_ms=round(best_native["p99"], 2),
        ratio=round(best_http["rate"] / same_round["rate"], 3))
    if os.environ.get("OTPFAST_BENCH_ASSERT_TARGET") == "1":
        assert best_http["rate"] >= TARGET_PER_SECOND and best_http["p99"] <= TARGET_P99_MS


@pytest.mark.benchmark(group="http-sans-io")
def test_http_sans_io_check_request(benchmark):
    """The HTTP layer's own share of one verification, no sockets: parse a /validate/check
    form request, read its parameters, render the accept envelope."""
    request = check_request("bench0", PIN + "123456")
    conn = HttpConnection()

    def one():
        conn.receive_data(request)
        event = conn.next_event()
        found = validate.params(event)
        return found, conn.send(validate.check_response("otpfast", True))

    found, reply = benchmark(one)
    assert found == {"user": "bench0", "pass": PIN + "123456"} and conn.next_event() is NEED_DATA
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b'"authentication":"ACCEPT"' in reply
