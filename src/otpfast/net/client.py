"""Client side: ``async with connect(host, port, pin=...) as client: ...``.

The server is authenticated by its certificate fingerprint right after the TLS handshake,
before any credential is sent.
"""
import asyncio
import contextlib
import dataclasses

from ..errors import InvalidParameter, ProtocolError, Refused, RemoteProtocolError
from ..protocol import combined
from ..protocol._connection import CLIENT, CONNECTION_CLOSED, NEED_DATA
from ..protocol.messages import Accept, Auth, Contribute, Error, Hello, Request, Verify
from . import tls


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedOtp:
    nonce: bytes
    masked: bytes
    expires_at: float


class Client:
    """One TLS connection to a key server, distribution server or combined server.

    Methods are not meant to be called concurrently on one Client, except that
    ``verify_many`` pipelines many verifications in one round trip.
    """

    def __init__(self, reader, writer, fingerprint, *, timeout):
        self._reader = reader
        self._writer = writer
        self._conn = combined.Connection(CLIENT)
        self.fingerprint = fingerprint
        self.timeout = timeout

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

    async def public_key(self):
        """The key server's RSA public key (PEM bytes)."""
        await self._send(Hello())
        return (await self._receive()).pem

    async def contribute(self, account, authority_id, credential, ciphertext):
        """Send an authority's encrypted secret phrase; return the receipt."""
        await self._send(Contribute(account, authority_id, credential, ciphertext))
        return (await self._receive()).receipt

    async def authenticate(self, client_name, credential):
        await self._send(Auth(client_name, credential))
        await self._receive()

    async def request(self, account):
        """The next OTP of ``account``, masked (unmask with services.masking.unmask)."""
        await self._send(Request(account))
        issued = await self._receive()
        return IssuedOtp(issued.nonce, issued.masked, issued.expires_at_ms / 1000.0)

    async def verify(self, account, otp):
        """True if the server accepted the OTP (it is used up then), False if rejected."""
        await self._send(Verify(account, otp))
        return type(await self._receive()) is Accept

    async def verify_many(self, items):
        """Pipeline ``[(account, otp), ...]``; return the verdicts in order."""
        await self._send(*(Verify(account, otp) for account, otp in items))
        return [type(await self._receive()) is Accept for _ in items]

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
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        fingerprint = tls.check_server(address, der, pin=pin, known_servers=known_servers,
                                       on_first_use=on_first_use)
        client = Client(reader, writer, fingerprint, timeout=timeout)
    except BaseException:
        writer.close()
        raise
    try:
        yield client
    finally:
        await client.aclose()
