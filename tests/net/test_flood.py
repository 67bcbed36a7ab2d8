"""Floods against the listeners (issue 9, findings 2, 3 and the dripped frame of 10), each
reproduced at small scale on loopback: every test is bounded in time and count.

Attackers come from 127.0.0.2 (Linux answers the whole 127/8 on loopback), legitimate
clients from 127.0.0.1, so the per-source cap and eviction are told apart.
"""
import asyncio
import socket
import threading
import time

import pytest

from otpfast.errors import Refused
from otpfast.net import tls
from otpfast.net._stream import ServerLimits
from otpfast.net.admission import raise_file_limit
from otpfast.net.keyserver import CONTRIBUTION_QUEUE
from otpfast.protocol import codec, messages as m

VERIFIER = ("verifier", b"verifier-secret")
ATTACKER = "127.0.0.2"
HELLO = codec.encode(m.Hello())


async def raw_tcp(running, source=ATTACKER):
    """A TCP connection that never starts TLS."""
    return await asyncio.open_connection(running.host, running.port, local_addr=(source, 0))


async def raw_tls(running, source=ATTACKER):
    return await asyncio.open_connection(running.host, running.port, ssl=tls.client_context(),
                                         local_addr=(source, 0))


async def closed_within(reader, seconds):
    """True if the server closes the connection within ``seconds`` (whatever it sent first)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        pass
    return True


async def verifies(running, otp="424242"):
    running.distribution.issue("alice", otp)
    async with running.connect() as client:
        await client.authenticate(*VERIFIER)
        return await client.verify("alice", otp)


async def settle(running, count):
    """Wait until the listener counts ``count`` connections."""
    async with asyncio.timeout(5):
        while len(running.server.tracker.protocols) != count:
            await asyncio.sleep(0.01)


def close_all(writers):
    for writer in writers:
        writer.close()


# -- finding 2: connection exhaustion ------------------------------------------------------------

def test_raw_tcp_connections_are_counted_from_accept_and_evicted(start, run):
    """Raw TCP connections that never start TLS used to go uncounted (descriptors ran out,
    nothing logged): now they hold counted slots, the oldest goes when a verifier arrives."""
    async def main():
        limits = ServerLimits(max_connections=4, handshake_timeout=30)
        async with start(limits=limits) as running:
            raws = [await raw_tcp(running) for _ in range(4)]
            await settle(running, 4)
            assert await verifies(running)                    # the oldest raw one made room
            assert await closed_within(raws[0][0], 2)
            assert not await closed_within(raws[3][0], 0.2)
            close_all(w for _, w in raws)
    run(main)


def test_raw_tcp_connection_closed_at_handshake_timeout(start, run):
    async def main():
        async with start(limits=ServerLimits(handshake_timeout=0.3)) as running:
            reader, writer = await raw_tcp(running)
            await settle(running, 1)
            assert await closed_within(reader, 3)
            await settle(running, 0)
            writer.close()
    run(main)


def test_per_source_cap(start, run):
    async def main():
        async with start(limits=ServerLimits(max_connections_per_source=3)) as running:
            held = [await raw_tls(running) for _ in range(3)]
            await settle(running, 3)
            reader, writer = await raw_tcp(running)           # a fourth from the same address
            assert await closed_within(reader, 2)
            assert len(running.server.tracker.protocols) == 3
            assert await verifies(running)                    # another address is served
            close_all([writer, *(w for _, w in held)])
    run(main)


def test_hello_every_interval_does_not_keep_an_unauthenticated_connection(start, run):
    """Hello frames reset the idle timer; the authentication deadline runs from accept."""
    async def main():
        async with start(limits=ServerLimits(auth_timeout=0.5, idle_timeout=60)) as running:
            reader, writer = await raw_tls(running)
            begin = time.monotonic()

            async def keep_saying_hello():
                while True:
                    writer.write(HELLO)
                    await asyncio.sleep(0.1)

            pinger = asyncio.create_task(keep_saying_hello())
            try:
                assert await closed_within(reader, 3)
            finally:
                pinger.cancel()
            assert time.monotonic() - begin < 2
            writer.close()
    run(main)


def test_authenticated_connection_outlives_the_auth_deadline(start, run):
    async def main():
        async with start(limits=ServerLimits(auth_timeout=0.3, idle_timeout=60)) as running:
            running.distribution.issue("alice", "111111")
            async with running.connect() as client:
                await client.authenticate(*VERIFIER)
                await asyncio.sleep(0.8)
                assert await client.verify("alice", "111111")
    run(main)


def test_full_table_evicts_oldest_unauthenticated_never_a_verifier(start, run):
    async def main():
        async with start(limits=ServerLimits(max_connections=3)) as running:
            running.distribution.issue("alice", "111111")
            async with running.connect() as verifier:
                await verifier.authenticate(*VERIFIER)
                first = await raw_tls(running)
                second = await raw_tls(running)
                first[1].write(HELLO)
                await settle(running, 3)
                assert await verifies(running, "222222")      # evicts `first`, the oldest stranger
                assert await closed_within(first[0], 2)
                assert not await closed_within(second[0], 0.2)
                assert await verifier.verify("alice", "111111")
                close_all([first[1], second[1]])
                # a table of authenticated verifiers: the newcomer is refused, nobody evicted
                async with running.connect() as other:
                    await other.authenticate(*VERIFIER)
                    async with running.connect() as third:
                        await third.authenticate(*VERIFIER)
                        await settle(running, 3)
                        reader, writer = await raw_tcp(running)
                        assert await closed_within(reader, 2)
                        running.distribution.issue("alice", "333333")
                        assert await verifier.verify("alice", "333333")
                        writer.close()
    run(main)


def test_unauthenticated_connection_may_not_buffer_a_large_frame(start, run):
    async def main():
        async with start() as running:
            reader, writer = await raw_tls(running)
            writer.write(codec.HEADER.pack(codec.VERSION, m.Verify.TYPE, 60_000) + b"x" * 8_000)
            assert await closed_within(reader, 2)
            writer.close()
            assert await verifies(running)
    run(main)


def test_unauthenticated_requests_are_few(start, run):
    """A stranger repeating Hello as fast as the replies come back is cut off."""
    async def main():
        async with start(limits=ServerLimits(unauthenticated_requests=5)) as running:
            reader, writer = await raw_tls(running)
            writer.write(HELLO * 50)
            data = b""
            async with asyncio.timeout(5):
                while chunk := await reader.read(65536):
                    data += chunk
            assert data.endswith(codec.encode(m.Error()))
            public_key = codec.encode(m.PublicKey(running.keyserver.public_key_pem()))
            assert data.count(public_key) <= 5
            writer.close()
    run(main)


# -- finding 10: a frame dripped one byte at a time ---------------------------------------------

def test_dripped_frame_cut_at_read_timeout_from_its_first_byte(start, run):
    async def main():
        async with start(limits=ServerLimits(read_timeout=0.6, idle_timeout=60, auth_timeout=60)) as running:
            reader, writer = await raw_tls(running)
            frame = codec.encode(m.Verify("alice", "123456"))

            async def drip():
                for byte in frame:
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.2)          # each byte well within read_timeout

            begin = time.monotonic()
            dripping = asyncio.create_task(drip())
            try:
                assert await closed_within(reader, 3)
            finally:
                dripping.cancel()
            assert time.monotonic() - begin < 1.5     # the whole frame would take 4 s
            writer.close()
    run(main)


# -- finding 3: Contribute amplification ---------------------------------------------------------

class SlowRefusingKeyServer:
    """Every authority login takes ``seconds`` of work and is refused; counts the work done."""

    def __init__(self, real, seconds):
        self._real = real
        self.seconds = seconds
        self.started = 0
        self.lock = threading.Lock()

    def authenticate(self, exchange, proof, *, source="-"):
        with self.lock:
            self.started += 1
        time.sleep(self.seconds)
        raise Refused()


def login_frames(index=1):
    """A wrong authority login: AuthStart then AuthProof, pipelined."""
    return (codec.encode(m.AuthStart("1", b"n%015d" % index))
            + codec.encode(m.AuthProof(b"x" * 43)))


def contribute_frame(index=1):
    return codec.encode(m.Contribute(f"acct{index}", b"c" * 384))


def test_unauthenticated_contributions_cost_no_work(start, run):
    """Finding 3: a Contribute before any login is refused unread: no RSA, no store write."""
    async def main():
        async with start(kind="keyserver") as running:
            calls = []
            running.keyserver.contribute = lambda *args: calls.append(args)
            reader, writer = await raw_tls(running)
            writer.write(HELLO + b"".join(contribute_frame(i) for i in range(200)))
            assert await closed_within(reader, 5)
            writer.close()
            await asyncio.sleep(0.2)
            assert calls == []
    run(main)


def test_pipelined_logins_cost_one_unit_of_work(start, run):
    """One connection pipelining key-server calls used to queue them all (and none was
    cancelled when it left): now one runs at a time, and the refusal closes the connection."""
    async def main():
        async with start(kind="keyserver") as running:
            slow = SlowRefusingKeyServer(running.keyserver, 0.05)
            running.keyserver.authenticate = slow.authenticate
            reader, writer = await raw_tls(running)
            writer.write(HELLO + b"".join(login_frames(i) for i in range(200)))
            assert await closed_within(reader, 5)
            writer.close()
            await asyncio.sleep(0.3)
            assert slow.started <= 1
    run(main)


def test_keyserver_queue_is_bounded_and_cancelled_with_its_connection(start, run):
    async def main():
        async with start() as running:
            slow = SlowRefusingKeyServer(running.keyserver, 0.2)
            running.keyserver.authenticate = slow.authenticate
            attackers = [await raw_tls(running) for _ in range(3 * CONTRIBUTION_QUEUE)]
            begin = time.monotonic()
            for _, writer in attackers:
                writer.write(HELLO + login_frames())
            # beyond the queue's bound: refused at once
            closed = await asyncio.gather(*(closed_within(reader, 0.5) for reader, _ in attackers))
            assert sum(closed) >= 2 * CONTRIBUTION_QUEUE
            assert time.monotonic() - begin < 1.5
            assert await verifies(running)                      # verifications keep going
            close_all(w for _, w in attackers)                  # the queued ones are cancelled
            await asyncio.sleep(0.6)
            assert slow.started <= 3
    run(main)


def test_slow_contribution_outlives_the_auth_deadline(start, run):
    """The server, not the authority, is slow: a queued login or contribution is not cut off
    by the deadline to authenticate."""
    async def main():
        async with start(kind="keyserver", limits=ServerLimits(auth_timeout=0.3)) as running:
            from otpfast.services.keyserver import encrypt_phrase
            real = running.keyserver.authenticate

            def slow(*args, **kwargs):
                time.sleep(0.6)
                return real(*args, **kwargs)

            running.keyserver.authenticate = slow
            async with running.connect() as client:
                pem = await client.public_key()
                await client.authenticate_authority(1, b"authority-secret")
                signed = await client.contribute("alice", encrypt_phrase(pem, b"phrase", "alice", 1))
            assert signed.receipt == b"receipt:alice"
    run(main)


# -- the file limit -------------------------------------------------------------------------------

def test_file_limit_is_raised_and_checked():
    soft = raise_file_limit(16)
    assert soft >= 16 + 256
    with pytest.raises(ValueError, match="file descriptors"):
        raise_file_limit(1 << 40)


def test_max_connections_beyond_the_file_limit_exits_2(tmp_path):
    from click.testing import CliRunner

    from otpfast_cli.main import cli

    result = CliRunner().invoke(cli, ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
                                      "--max-connections", str(1 << 40)])
    assert result.exit_code == 2
    assert "--max-connections" in result.output


def test_source_address_is_loopback_alias():
    """The attackers' 127.0.0.2 must be usable (Linux loopback answers 127/8)."""
    with socket.socket() as sock:
        sock.bind((ATTACKER, 0))


class FakeSlot:
    def __init__(self, source, authenticated=False):
        self.source = source
        self._authenticated = authenticated
        self.evicted = False

    def authenticated(self):
        return self._authenticated

    def evict(self):
        self.evicted = True


def test_tracker_evicts_in_accept_order_and_logs_with_a_rate_limit(caplog):
    from otpfast.net.admission import Tracker

    tracker = Tracker(limit=3, per_source=2)
    verifier, first, second = FakeSlot("10.0.0.1", True), FakeSlot("10.0.0.2"), FakeSlot("10.0.0.3")
    for slot in (verifier, first, second):
        assert tracker.admit(slot)
    with caplog.at_level("WARNING", logger="otpfast.net"):
        newcomers = [FakeSlot(f"10.1.0.{i}") for i in range(50)]
        for slot in newcomers:
            assert tracker.admit(slot)            # each evicts the oldest stranger
        assert first.evicted and second.evicted and not verifier.evicted
        assert verifier in tracker.protocols and len(tracker.protocols) == 3
        crowd = [FakeSlot("10.2.0.1") for _ in range(3)]
        assert [tracker.admit(slot) for slot in crowd] == [True, True, False]    # per-source cap
    lines = [r.getMessage() for r in caplog.records]
    assert 1 <= sum("evicted" in line for line in lines) <= 5            # 50 evictions, a few lines
    assert any("connections from this source" in line for line in lines)
