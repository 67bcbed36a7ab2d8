import asyncio
import ssl
import threading
import warnings

import pytest

from otpfast.errors import Refused, RemoteProtocolError
from otpfast.net import tls
from otpfast.net._stream import ServerLimits
from otpfast.protocol import codec, messages as m

VERIFIER = ("verifier", b"verifier-secret")
PHONE = ("phone", b"phone-secret")


async def raw_tls(running):
    """A TLS connection that speaks raw bytes (to send what a real client never would)."""
    return await asyncio.open_connection(running.host, running.port, ssl=tls.client_context())


async def read_until_eof(reader):
    data = b""
    async with asyncio.timeout(10):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def still_serving(running):
    running.distribution.issue("alice", "424242")
    async with running.connect() as client:
        await client.authenticate(*VERIFIER)
        return await client.verify("alice", "424242")


def test_keyserver_hello_and_contribute(start, run):
    async def main():
        async with start(kind="keyserver") as running:
            from cryptography.hazmat.primitives import serialization
            from otpfast.services.keyserver import encrypt_phrase
            async with running.connect() as client:
                pem = await client.public_key()
                assert serialization.load_pem_public_key(pem).key_size == 2048
                await client.authenticate_authority(1, b"authority-secret")
                receipt = await client.contribute("alice", encrypt_phrase(pem, b"phrase", "alice", 1))
            assert receipt.receipt == b"receipt:alice"
            assert running.keyserver.contributions == {("alice", 1): b"phrase"}
            async with running.connect() as client:  # second contribution: refused, connection closed
                await client.authenticate_authority(1, b"authority-secret")
                with pytest.raises(Refused):
                    await client.contribute("alice", encrypt_phrase(pem, b"again", "alice", 1))
            async with running.connect() as client:  # a wrong credential: refused
                with pytest.raises(Refused):
                    await client.authenticate_authority(1, b"wrong")
    run(main)


def test_distribution_request_verify_replay(start, run):
    async def main():
        async with start(kind="distribution") as running:
            async with running.connect() as phone:
                await phone.authenticate(*PHONE)
                issued = await phone.request("alice")
            assert issued.expires_at == 1_900_000_000.5
            otp = issued.otp
            async with running.connect() as verifier:
                await verifier.authenticate(*VERIFIER)
                assert await verifier.verify("alice", otp) is True
                assert await verifier.verify("alice", otp) is False  # replay
                assert await verifier.verify("alice", "٤٢٤٢٤٢") is False  # non-ASCII digits
                assert await verifier.verify("nobody", otp) is False
    run(main)


def test_store_unavailable_is_try_again_not_a_refusal(start, run):
    """Issue 12: a batch the store could not decide is TryAgain on the wire (the client
    raises errors.TryAgain, the connection stays open), distinct from Reject and Error; a
    batch the store says it did not commit is retried once on the server first."""
    from otpfast.errors import TryAgain

    async def main():
        async with start(kind="distribution") as running:
            async with running.connect() as phone:
                await phone.authenticate(*PHONE)
                first = (await phone.request("alice")).otp
                second = (await phone.request("alice")).otp
            async with running.connect() as verifier:
                await verifier.authenticate(*VERIFIER)
                running.distribution.unavailable = [None]       # outcome unknown: no retry
                with pytest.raises(TryAgain):
                    await verifier.verify("alice", first)
                assert await verifier.verify("alice", first) is True    # same connection
                running.distribution.unavailable = [False]      # not committed: retried
                assert await verifier.verify("alice", second) is True
    run(main)


def test_verify_once_carries_the_request_id(start, run):
    """VerifyOnce (type 26) reaches the service with the client's request id."""
    async def main():
        async with start(kind="distribution") as running:
            async with running.connect() as phone:
                await phone.authenticate(*PHONE)
                otp = (await phone.request("alice")).otp
            async with running.connect() as verifier:
                await verifier.authenticate(*VERIFIER)
                assert await verifier.verify("alice", otp, request_id="req-1") is True
                assert await verifier.verify("alice", "000000") is False
            assert running.distribution.request_ids[-2:] == ["req-1", None]
    run(main)


@pytest.mark.parametrize("kind", ["combined", "distribution"])
def test_verifications_name_the_peer_address_as_source(start, run, kind):
    """The source is what throttling counts failures against (services.policy)."""
    async def main():
        async with start(kind=kind) as running:
            async with running.connect() as verifier:
                await verifier.authenticate(*VERIFIER)
                await verifier.verify("alice", "000000")
            assert running.distribution.sources == {"127.0.0.1"}
    run(main)


def test_pipelined_verifications_keep_order_and_batch(start, run):
    async def main():
        async with start() as running:
            for i in range(0, 400, 2):
                running.distribution.issue("alice", f"{i:06d}")
            async with running.connect() as verifier:
                await verifier.authenticate(*VERIFIER)
                verdicts = await verifier.verify_many([("alice", f"{i:06d}") for i in range(400)])
            assert verdicts == [i % 2 == 0 for i in range(400)]
            assert len(running.distribution.batches) < 400  # grouped into fewer commits
    run(main)


def test_concurrent_verification_of_one_otp_accepts_once(start, run):
    async def main():
        async with start() as running:
            running.distribution.issue("alice", "777777")

            async def attempt():
                async with running.connect() as verifier:
                    await verifier.authenticate(*VERIFIER)
                    return await verifier.verify("alice", "777777")
            results = await asyncio.gather(*(attempt() for _ in range(40)))
            assert results.count(True) == 1
    run(main)


def test_wrong_credentials_refused_and_server_keeps_serving(start, run):
    async def main():
        async with start() as running:
            for name, credential in [("verifier", b"wrong"), ("nobody", b"verifier-secret")]:
                async with running.connect() as client:
                    with pytest.raises(Refused):
                        await client.authenticate(name, credential)
            async with running.connect() as phone:  # an account client asks for another account
                await phone.authenticate(*PHONE)
                with pytest.raises(Refused):
                    await phone.request("bob")
            assert await still_serving(running)
    run(main)


def test_requests_before_authentication_are_not_handled(start, run):
    async def main():
        async with start() as running:
            reader, writer = await raw_tls(running)
            writer.write(codec.encode(m.AuthStart("verifier", b"n" * 32)) + codec.encode(m.AuthProof(b"bad"))
                         + codec.encode(m.Verify("alice", "1")))
            data = await read_until_eof(reader)
            writer.close()
            assert data.endswith(codec.encode(m.Error())) and len(data) == 6 + 34 + 6   # Challenge, Error
            assert running.distribution.batches == []
    run(main)


BAD_INPUT = {
    "garbage": b"GET / HTTP/1.1\r\n\r\n",
    "oversize frame": codec.HEADER.pack(codec.VERSION, m.AuthStart.TYPE, codec.MAX_FRAME + 1),
    "unknown type": codec.HEADER.pack(codec.VERSION, 200, 0),
    "wrong version": codec.HEADER.pack(9, m.Hello.TYPE, 0),
    "malformed body": codec.HEADER.pack(codec.VERSION, m.AuthStart.TYPE, 3) + b"\x00\x09a",
    "protocol version 1": codec.HEADER.pack(1, 5, 11) + b"\x00\x01p\x00\x06secret",
    "reply sent as request": codec.encode(m.Accept()),
    "verify before auth": codec.encode(m.Verify("alice", "123456")),
    "contribute before hello": codec.encode(m.Contribute("alice", b"d")),
}


@pytest.mark.parametrize("payload", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_gets_one_generic_error_then_close(start, run, payload):
    async def main():
        async with start() as running:
            reader, writer = await raw_tls(running)
            writer.write(payload)
            data = await read_until_eof(reader)
            writer.close()
            assert data == codec.encode(m.Error())
            assert await still_serving(running)
    run(main)


def test_plain_tcp_to_the_tls_port(start, run):
    async def main():
        async with start() as running:
            reader, writer = await asyncio.open_connection(running.host, running.port)
            writer.write(codec.encode(m.AuthStart("verifier", b"n" * 32)))
            data = await read_until_eof(reader)
            writer.close()
            assert codec.HEADER.pack(codec.VERSION, m.Challenge.TYPE, 34) not in data
            assert running.distribution.auth_calls == 0
            assert await still_serving(running)
    run(main)


def test_tls_1_1_is_refused(start, run):
    async def main():
        async with start() as running:
            context = tls.client_context()
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let our side offer TLS 1.1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = ssl.TLSVersion.TLSv1_1
                context.maximum_version = ssl.TLSVersion.TLSv1_1
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await asyncio.open_connection(running.host, running.port, ssl=context)
            assert await still_serving(running)
    run(main)


def test_wrong_pin_refused_before_credentials_are_sent(start, run):
    async def main():
        async with start() as running:
            with pytest.raises(tls.FingerprintMismatch):
                async with running.connect(pin="sha256:" + "0" * 64) as client:
                    await client.authenticate(*VERIFIER)
            assert running.distribution.auth_calls == 0
    run(main)


def test_trust_on_first_use_then_detect_a_changed_certificate(start, run, known_servers, other_certificate):
    async def main():
        seen = []
        async with start() as running:
            async with running.connect(pin=None, on_first_use=lambda a, f: seen.append((a, f))) as client:
                await client.authenticate(*VERIFIER)
            async with running.connect(pin=None) as client:  # remembered: no second note
                await client.authenticate(*VERIFIER)
            address = f"{running.host}:{running.port}"
            assert seen == [(address, running.pin)]
            assert known_servers.read_text() == f"{address} {running.pin}\n"
            port = running.port
        async with start(cert=other_certificate) as impostor:
            known_servers.write_text(f"{impostor.host}:{impostor.port} {running.pin}\n")
            with pytest.raises(tls.FingerprintMismatch):
                async with impostor.connect(pin=None):
                    pass
            assert impostor.distribution.auth_calls == 0
        assert port
    run(main)


def test_idle_connection_is_closed(start, run):
    async def main():
        async with start(limits=ServerLimits(idle_timeout=0.3)) as running:
            reader, writer = await raw_tls(running)
            assert await read_until_eof(reader) == b""
            writer.close()
    run(main)


def test_stalled_frame_is_closed_after_read_timeout(start, run):
    async def main():
        async with start(limits=ServerLimits(read_timeout=0.3, idle_timeout=60)) as running:
            reader, writer = await raw_tls(running)
            writer.write(codec.encode(m.AuthStart("verifier", b"n" * 32))[:5])
            assert await read_until_eof(reader) == b""
            writer.close()
    run(main)


def test_connection_cap(start, run):
    async def main():
        async with start(limits=ServerLimits(max_connections=2)) as running:
            async with running.connect() as first, running.connect() as second:
                await first.authenticate(*VERIFIER)
                await second.authenticate(*VERIFIER)
                with pytest.raises((Refused, RemoteProtocolError, ConnectionError)):
                    async with running.connect() as third:
                        await third.authenticate(*VERIFIER)
            await asyncio.sleep(0.05)
            assert await still_serving(running)
    run(main)


def test_failed_batch_gets_error_not_accept(start, run):
    async def main():
        async with start() as running:
            running.distribution.issue("alice", "111111")
            running.distribution.fail_next_batch = True
            async with running.connect() as client:
                await client.authenticate(*VERIFIER)
                with pytest.raises(Refused):
                    await client.verify("alice", "111111")
            assert await still_serving(running)
    run(main)


def test_service_calls_run_in_the_event_loop_thread(start, run):
    async def main():
        async with start() as running:
            async with running.connect() as phone:
                await phone.authenticate(*PHONE)
                await phone.request("alice")
            await still_serving(running)
            # the store is used from one thread only: the loop's (see otpfast.net.verifier)
            assert running.distribution.threads == {threading.get_ident()}
    run(main)


def test_contribute_before_authenticating_does_no_work(start, run):
    """Finding 3: an unauthenticated Contribute is refused by the handler, before any RSA work
    or store write (the key-server service is never called)."""
    async def main():
        async with start(kind="keyserver") as running:
            reader, writer = await raw_tls(running)
            writer.write(codec.encode(m.Hello()) + codec.encode(m.Contribute("alice", b"\0" * 256)) * 50)
            data = await read_until_eof(reader)
            writer.close()
            assert data.endswith(codec.encode(m.Error()))
            assert running.keyserver.threads == set() and running.keyserver.contributions == {}
            reader, writer = await raw_tls(running)    # Hello is answered once per connection
            writer.write(codec.encode(m.Hello()) * 100)
            data = await read_until_eof(reader)
            writer.close()
            assert len(data) < 2 * len(running.keyserver.public_key_pem()) and data.endswith(codec.encode(m.Error()))
    run(main)


def test_handlers_expose_authenticated(start, run):
    from otpfast.net.distribution import DistributionHandler
    from otpfast.net.keyserver import KeyServerHandler
    from otpfast.net.metrics import Metrics
    from otpfast.net.server import CombinedHandler

    class Verifier:
        distribution = None
        metrics = Metrics()

    distribution = DistributionHandler(Verifier(), b"b" * 32)
    keyserver = KeyServerHandler(None, b"pem", None, b"b" * 32)
    combined = CombinedHandler(keyserver, distribution)
    assert not distribution.authenticated and not keyserver.authenticated and not combined.authenticated
    distribution._authenticated(type("Info", (), {"session_key": b"k" * 32})())
    combined.handle(m.AuthStart("x", b"n" * 32))
    assert distribution.authenticated and combined.authenticated and not keyserver.authenticated
