"""Client side: ``async with connect(host, port, pin=...) as client: ...``.

The server is authenticated by its certificate fingerprint right after the TLS handshake;
the client then proves its credential by challenge-response bound to that certificate
(services.credentials): the credential itself never leaves this process.
"""
import asyncio
import contextlib
import dataclasses
import hmac

from .. import errors
from ..errors import InvalidParameter, LocalProtocolError, ProtocolError, Refused, RemoteProtocolError
from ..protocol import combined
from ..protocol._connection import CLIENT, CONNECTION_CLOSED, IDLE, NEED_DATA
from ..protocol.messages import (Accept, AuthProof, AuthStart, Contribute, Error, Hello, Request,
                                 TranscriptRequest, TryAgain, Verify, VerifyOnce)
from ..services import credentials, masking
from . import tls
from .address import format_address


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedOtp:
    """An OTP the server issued, unmasked and checked (account, OTP and expiry)."""
    otp: str = dataclasses.field(repr=False)
    expires_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class ContributionReceipt:
    receipt: bytes
    signature: bytes
    remaining: int          # authorities still to contribute; 0: the ceremony is complete


class FramedClient:
    """One TLS connection speaking a sans-IO ``connection`` (protocol._connection's events):
    send frames, receive the next event; Error from the server is Refused."""

    def __init__(self, reader, writer, connection, fingerprint, *, timeout, binding):
        self._reader = reader
        self._writer = writer
        self._conn = connection
        self.fingerprint = fingerprint
        self.timeout = timeout
        self._binding = binding          # tls.end_point of the certificate this connection saw

    async def _send(self, *messages):
        self._writer.write(b"".join(self._conn.send(m) for m in messages))
        await self._writer.drain()

    async def _receive(self):
        while True:
            event = self._conn.next_event()
            if event is NEED_DATA:
                async with asyncio.timeout(self.timeout):
                    data = await self._reader.read(65536)
                self._conn.receive_data(data)
                continue
            if event is CONNECTION_CLOSED:
                raise RemoteProtocolError("the server closed the connection")
            if type(event) is Error:
                raise Refused("refused by the server")
            return event


class Client(FramedClient):
    """One TLS connection to a key server, distribution server or combined server.

    Methods are not meant to be called concurrently on one Client, except that
    ``verify_many`` pipelines many verifications in one round trip.
    """

    def __init__(self, reader, writer, fingerprint, *, timeout, binding):
        super().__init__(reader, writer, combined.Connection(CLIENT), fingerprint, timeout=timeout,
                         binding=binding)
        self._session_key = None
        self._public_key = None

    async def public_key(self):
        """The key server's RSA public key (PEM bytes)."""
        if self._public_key is None:
            await self._send(Hello())
            self._public_key = (await self._receive()).pem
        return self._public_key

    async def _authenticate(self, kind, principal, credential):
        client_nonce = credentials.new_nonce()
        await self._send(AuthStart(principal, client_nonce))
        challenge = await self._receive()
        exchange = credentials.Exchange(kind, principal, client_nonce, challenge.server_nonce, self._binding)
        proof, session_key = credentials.prove(credential, exchange)
        await self._send(AuthProof(proof))
        ok = await self._receive()
        if not hmac.compare_digest(ok.server_signature, credentials.server_signature(session_key)):
            raise Refused("the server did not prove it knows this credential")
        self._session_key = session_key

    async def authenticate(self, client_name, credential):
        """Prove ``client_name``'s credential to the distribution server."""
        await self._authenticate(credentials.CLIENT, client_name, credential)

    async def authenticate_authority(self, authority_id, credential):
        """Prove authority ``authority_id``'s credential to the key server (after Hello)."""
        if self._conn.state is IDLE:
            await self.public_key()
        await self._authenticate(credentials.AUTHORITY, str(authority_id), credential)

    async def contribute(self, account, ciphertext):
        """Send an authenticated authority's encrypted secret phrase; return its receipt."""
        await self._send(Contribute(account, ciphertext))
        reply = await self._receive()
        return ContributionReceipt(reply.receipt, reply.signature, reply.remaining)

    async def transcript(self, account):
        """(transcript, signature) of ``account``'s completed ceremony."""
        await self._send(TranscriptRequest(account))
        reply = await self._receive()
        return reply.transcript, reply.signature

    async def request(self, account):
        """The next OTP of ``account``, unmasked with this connection's session key; InvalidToken
        if the response was altered (its expiry included) or not made for this session."""
        if self._session_key is None:
            raise LocalProtocolError("authenticate before requesting OTPs")
        await self._send(Request(account))
        issued = await self._receive()
        otp = masking.unmask(self._session_key, account, issued.nonce, issued.masked, issued.expires_at_ms)
        return IssuedOtp(otp, issued.expires_at_ms / 1000.0)

    async def verify(self, account, otp, *, request_id=None):
        """True if the server accepted the OTP (it is used up then), False if rejected;
        TryAgain if it could not decide now. With ``request_id`` (unique per request of
        this client, e.g. a UUID), asking again with the same id - after a lost reply, a
        timeout or TryAgain, at any server of the store - gets the first outcome."""
        await self._send(Verify(account, otp) if request_id is None
                         else VerifyOnce(account, otp, request_id))
        return _verdict(await self._receive())

    async def verify_many(self, items):
        """Pipeline ``[(account, otp), ...]``; return the verdicts in order (TryAgain if
        the server could not decide one: after reading every reply)."""
        await self._send(*(Verify(account, otp) for account, otp in items))
        replies = [await self._receive() for _ in items]
        return [_verdict(reply) for reply in replies]

    async def aclose(self):
        self._writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError, ProtocolError):
            async with asyncio.timeout(self.timeout):
                await self._writer.wait_closed()


def parse_address(text, *, field="server"):
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port); InvalidParameter(field) if bad."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not port.isascii():
        raise InvalidParameter(field, f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 <= number <= 65535:
        raise InvalidParameter(field, "port must be 0..65535")
    return host, number


@contextlib.asynccontextmanager
async def connect(host, port, *, pin=None, known_servers=None, on_first_use=None, timeout=10.0):
    """Open a TLS connection, authenticate the server by fingerprint, yield a Client."""
    if pin is not None:
        pin = tls.parse_pin(pin)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls.client_context(), ssl_handshake_timeout=timeout, limit=1 << 20)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        address = format_address(host, port)
        fingerprint = tls.check_server(address, der, pin=pin, known_servers=known_servers,
                                       on_first_use=on_first_use)
        client = Client(reader, writer, fingerprint, timeout=timeout, binding=tls.end_point(der))
    except BaseException:
        writer.close()
        raise
    try:
        yield client
    finally:
        await client.aclose()


def _verdict(reply) -> bool:
    if type(reply) is TryAgain:
        raise errors.TryAgain("the server could not decide now (its store is unavailable): "
                              "try again")
    return type(reply) is Accept
