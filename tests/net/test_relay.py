"""Finding 5: a TLS-terminating relay that the client trusts (its own certificate, pinned or
trusted on first use) and that forwards every frame to the real server learns nothing it can
use: the proof it forwards is bound to its certificate and fails at the real server, it never
sees the credential or an OTP, and it cannot authenticate or request OTPs later by itself."""
import asyncio
import contextlib
import hashlib

import pytest

from otpfast.errors import InvalidToken, Refused
from otpfast.net import tls
from otpfast.net._stream import bound_address
from otpfast.net.client import connect
from otpfast.net.server import serve_combined
from otpfast.net.verifier import AsyncVerifier
from otpfast.protocol import codec, messages as m


@pytest.fixture
def real(tmp_path):
    """A data directory with account alice (rsa-prf), its phone and a verifier."""
    from otpfast.datadir import DataDir

    datadir = DataDir(str(tmp_path / "data"))
    pin = datadir.init(rsa_bits=2048)
    admin = datadir.admin()
    admin.add_account("alice", "rsa-prf")
    credentials = {"phone": admin.add_client("phone", account="alice"),
                   "verifier": admin.add_client("verifier", verifier=True)}
    admin.store.close()
    return datadir, pin, credentials


@contextlib.asynccontextmanager
async def real_server(datadir):
    keyserver, distribution = datadir.keyserver(iterations=1000), datadir.distribution()
    verifier = AsyncVerifier(distribution)
    server = await serve_combined(keyserver, verifier, tls.server_context(datadir), "127.0.0.1", 0)
    try:
        yield bound_address(server), distribution
    finally:
        server.close()
        await server.wait_closed()
        await verifier.aclose()
        keyserver.store.close()
        distribution.store.close()


@contextlib.asynccontextmanager
async def relay(relay_context, target, rewrite=None):
    """Terminates TLS with ``relay_context``'s certificate and forwards frames both ways, keeping
    a copy; ``rewrite(message) -> message`` may alter the server's frames."""
    seen = {"up": bytearray(), "down": bytearray()}

    async def pump(reader, writer, log, rewrite=None):
        decoder = codec.FrameDecoder()
        try:
            while data := await reader.read(65536):
                log += data
                if rewrite is None:
                    writer.write(data)
                else:
                    decoder.feed(data)
                    while (message := decoder.next_message()) is not None:
                        writer.write(codec.encode(rewrite(message)))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(reader, writer):
        up_reader, up_writer = await asyncio.open_connection(*target, ssl=tls.client_context())
        await asyncio.gather(pump(reader, up_writer, seen["up"]),
                             pump(up_reader, writer, seen["down"], rewrite))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=relay_context)
    try:
        yield server.sockets[0].getsockname()[:2], seen
    finally:
        server.close()
        await server.wait_closed()


def frames(data):
    decoder = codec.FrameDecoder()
    decoder.feed(bytes(data))
    out = []
    while (message := decoder.next_message()) is not None:
        out.append(message)
    return out


def test_relay_learns_nothing_it_can_use(real, other_certificate):
    datadir, real_pin, credentials = real
    relay_context, relay_der = other_certificate
    phone = credentials["phone"]

    async def main():
        async with real_server(datadir) as (target, distribution), relay(relay_context, target) as (address, seen):
            # the client trusts the relay's certificate (first use) and logs in through it
            async with connect(*address, pin=tls.pin_of(relay_der)) as client:
                with pytest.raises(Refused):
                    await client.authenticate("phone", phone)
                with pytest.raises(Exception):
                    await client.request("alice")
            await asyncio.sleep(0.05)
            up, down = frames(seen["up"]), frames(seen["down"])
            assert [type(f) for f in up] == [m.AuthStart, m.AuthProof]
            assert [type(f) for f in down] == [m.Challenge, m.Error]      # refused at the real server
            assert phone.encode() not in bytes(seen["up"])             # the credential never crossed
            assert not any(type(f) is m.Issued for f in down)           # no OTP crossed
            proof = up[1].proof
            # later, on its own connection, the relay replays what it saw: refused
            async with connect(*target, pin=real_pin) as own:
                await own._send(m.AuthStart("phone", up[0].client_nonce))
                await own._receive()
                await own._send(m.AuthProof(proof))
                with pytest.raises(Refused):
                    await own._receive()
            # and the proof is not the credential in any form the service accepts
            with pytest.raises(Refused):
                distribution.login("phone", proof)
            # the real client, connected directly, works and reads its OTP
            async with connect(*target, pin=real_pin) as direct:
                await direct.authenticate("phone", phone)
                issued = await direct.request("alice")
            async with connect(*target, pin=real_pin) as check:
                await check.authenticate("verifier", credentials["verifier"])
                assert await check.verify("alice", issued.otp)
    asyncio.run(main())


def test_client_detects_a_fake_server_that_answers_itself(real, other_certificate):
    """A relay that does not forward but plays the server cannot prove it knows the credential:
    the client stops before sending any request."""
    _, _, credentials = real
    relay_context, relay_der = other_certificate
    received = bytearray()

    async def fake(reader, writer):
        from otpfast.protocol import combined
        from otpfast.protocol._connection import NEED_DATA, SERVER
        conn = combined.Connection(SERVER)
        while data := await reader.read(65536):
            received.extend(data)
            conn.receive_data(data)
            while (event := conn.next_event()) is not NEED_DATA:
                if type(event) is m.AuthStart:
                    writer.write(conn.send(m.Challenge(b"s" * 32)))
                elif type(event) is m.AuthProof:
                    writer.write(conn.send(m.AuthOk(hashlib.sha256(event.proof).digest())))
                else:
                    writer.write(conn.send(m.Issued(b"n" * 16, b"x" * 22, 1)))
        writer.close()

    async def main():
        server = await asyncio.start_server(fake, "127.0.0.1", 0, ssl=relay_context)
        async with server:
            address = server.sockets[0].getsockname()[:2]
            async with connect(*address, pin=tls.pin_of(relay_der)) as client:
                with pytest.raises(Refused):
                    await client.authenticate("phone", credentials["phone"])
        assert [type(f) for f in frames(received)] == [m.AuthStart, m.AuthProof]
    asyncio.run(main())


def test_client_detects_a_stretched_expiry(real):
    """Even a relay holding the server's own TLS key (so the channel binding matches and the
    proof goes through) cannot read the OTP or stretch its expiry: the mask's key comes from the
    credential, and its tag covers the expiry."""
    datadir, real_pin, credentials = real

    def stretch(message):
        if type(message) is m.Issued:
            return m.Issued(message.nonce, message.masked, message.expires_at_ms + 3_600_000)
        return message

    async def main():
        async with real_server(datadir) as (target, _), \
                relay(tls.server_context(datadir), target, rewrite=stretch) as (address, seen):
            async with connect(*address, pin=real_pin) as client:
                await client.authenticate("phone", credentials["phone"])
                with pytest.raises(InvalidToken):
                    await client.request("alice")
            await asyncio.sleep(0.05)
            issued = [f for f in frames(seen["down"]) if type(f) is m.Issued]
            assert len(issued) == 1 and credentials["phone"].encode() not in bytes(seen["up"])
    asyncio.run(main())
