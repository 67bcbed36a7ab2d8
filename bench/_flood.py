"""The attacker of ``bench/test_net.py::test_net_verify_under_flood``, run as its own process:

    python bench/_flood.py HOST PORT CONNECTIONS CONTRIBUTORS

* CONNECTIONS // 2 raw TCP connections that never start TLS, and as many TLS connections that
  send a Hello every 4 s (issue 9, finding 2), each reopened REOPEN s after the server closes
  it, from source addresses 127.0.1.1, 127.0.1.2, ... (at most 50 per address: under the
  default per-source cap, so the table itself, not the cap, is what they fight for);
* CONTRIBUTORS loops that each open a TLS connection, send Hello, a wrong authority login and
  two pipelined Contribute frames, wait for the server to close it, and start again after
  PAUSE s (finding 3).

Open loop (fixed pauses): on the shared 2-core machine a closed-loop attacker would measure
its own CPU use, which a real attacker spends on its own machines.

Prints ``ready`` once every connection was opened once, then runs until SIGTERM and prints
one line of counts.
"""
import asyncio
import resource
import signal
import ssl
import sys

from otpfast.net import eventloop
from otpfast.protocol import codec, messages as m

PER_SOURCE = 50
REOPEN = 1.0
PAUSE = 0.05
HELLO = codec.encode(m.Hello())
# a wrong authority login (the work an unauthenticated peer can cause: a key-server call), then
# two Contribute frames (refused unread: not authenticated)
CONTRIBUTE = HELLO + codec.encode(m.AuthStart("1", b"n" * 16)) + codec.encode(m.AuthProof(b"x" * 43)) + b"".join(
    codec.encode(m.Contribute(f"nobody{i}", b"c" * 256)) for i in range(2))


def _client_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE      # an attacker pins nothing
    return context


class Flood:
    def __init__(self, host, port, connections, contributors):
        self.host, self.port = host, port
        self.connections = connections
        self.contributors = contributors
        self.context = _client_context()
        self.counts = {"opened": 0, "closed_by_server": 0, "failed": 0, "contribute_rounds": 0}

    def source(self, index):
        return f"127.0.1.{1 + index // PER_SOURCE}"

    async def _hold(self, index, started, tls):
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.context if tls else None,
                    local_addr=(self.source(index), 0), ssl_handshake_timeout=30 if tls else None)
            except (OSError, ssl.SSLError, TimeoutError):
                self.counts["failed"] += 1
                if not started.done():
                    started.set_result(None)
                await asyncio.sleep(0.5)
                continue
            self.counts["opened"] += 1
            if not started.done():
                started.set_result(None)
            try:
                await self._say_hello_every_4s(reader, writer, tls)
            except (OSError, ssl.SSLError):
                pass
            self.counts["closed_by_server"] += 1
            writer.close()
            await asyncio.sleep(REOPEN)

    @staticmethod
    async def _say_hello_every_4s(reader, writer, tls):
        """Until the server closes the connection (raw: just wait)."""
        loop = asyncio.get_running_loop()
        while True:
            if tls:
                writer.write(HELLO)
            try:
                async with asyncio.timeout_at(loop.time() + 4):
                    while await reader.read(65536):
                        pass
                    return
            except TimeoutError:
                pass

    async def _contribute(self):
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.context)
                writer.write(CONTRIBUTE)
                while await reader.read(65536):
                    pass
                writer.close()
                self.counts["contribute_rounds"] += 1
                await asyncio.sleep(PAUSE)
            except (OSError, ssl.SSLError):
                self.counts["failed"] += 1
                await asyncio.sleep(0.05)

    async def run(self):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        tasks, started = [], []
        for index in range(self.connections):
            future = loop.create_future()
            started.append(future)
            tasks.append(asyncio.create_task(self._hold(index, future, tls=index % 2 == 1)))
            if index % 50 == 49:
                await asyncio.gather(*started)
        await asyncio.gather(*started)
        tasks += [asyncio.create_task(self._contribute()) for _ in range(self.contributors)]
        print("ready", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(" ".join(f"{key}={value}" for key, value in self.counts.items()), flush=True)


def main():
    host, port, connections, contributors = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    eventloop.run(Flood(host, port, connections, contributors).run())


if __name__ == "__main__":
    main()
