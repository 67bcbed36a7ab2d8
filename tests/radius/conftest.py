"""Fixtures for the RADIUS front-end tests: a background event loop running the front end
over a fake single-use verifier, and a small pyrad-based RADIUS client."""
import asyncio
import os
import socket
import tempfile
import threading

import pytest
from pyrad import packet as pyrad_packet

from otpfast.radius.codec import load_dictionary, verify_response_authenticator
from otpfast.radius.config import RadiusClients, RadiusConfig
from otpfast.radius.server import start_radius

SECRET = b"radius-test-secret"


class FakeVerify:
    """Accepts each configured (account, otp) pair exactly once; records every call
    (``calls``: (account, otp); ``sources``: the source of each)."""

    def __init__(self, valid=(), delay=0.0):
        self.valid = set(valid)
        self.delay = delay
        self.calls = []
        self.sources = []

    async def __call__(self, account, otp, source):
        self.calls.append((account, otp))
        self.sources.append(source)
        if self.delay:
            await asyncio.sleep(self.delay)
        if (account, otp) in self.valid:
            self.valid.discard((account, otp))
            return True
        return False


@pytest.fixture
def fake_verify():
    """``fake_verify(valid_pairs, delay=0.0) -> FakeVerify``."""
    return lambda valid=(), delay=0.0: FakeVerify(valid, delay)


class LoopThread:
    """An asyncio loop in a daemon thread; ``run(coro)`` waits for the result."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args):
        async def wrapper():
            return fn(*args)
        return self.run(wrapper())

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop_thread():
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture(scope="session")
def rdict():
    return load_dictionary()


@pytest.fixture
def short_tmp():
    """A short directory for AF_UNIX socket paths (<= 107 bytes)."""
    d = tempfile.mkdtemp(prefix="otpr-", dir="/tmp")
    yield d
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


@pytest.fixture
def start_front_end(loop_thread, short_tmp):
    """``start_front_end(verify, legacy=False, **config_overrides) -> RadiusFrontEnd`` with
    UDP on a free port (secret SECRET for loopback sources; ``legacy``: those may omit the
    Message-Authenticator) and a UNIX socket; closed at teardown."""
    started = []

    def start(verify, legacy=False, **overrides):
        options = dict(
            udp=("127.0.0.1", 0),
            clients=RadiusClients.shared(SECRET, require_message_authenticator=not legacy),
            unix_socket=os.path.join(short_tmp, "radius.sock"),
        )
        options.update(overrides)
        config = RadiusConfig(**options)
        front_end = loop_thread.run(start_radius(config, verify))
        started.append(front_end)
        return front_end

    yield start
    for front_end in started:
        loop_thread.call(front_end.close)
        loop_thread.run(front_end.wait_closed())


class RadiusClient:
    """Builds Access-Requests with pyrad (with a Message-Authenticator unless told otherwise)
    and talks UDP or a UNIX stream socket."""

    def __init__(self, rdict, secret=SECRET):
        self.rdict = rdict
        self.secret = secret

    def request(self, user, password, *, message_authenticator=True, secret=None, identifier=None):
        pkt = pyrad_packet.AuthPacket(code=pyrad_packet.AccessRequest, secret=self.secret if secret is None else secret,
                                      dict=self.rdict, id=identifier)
        pkt["User-Name"] = user
        pkt["User-Password"] = pkt.PwCrypt(password)
        pkt["NAS-Identifier"] = "test-nas"
        pkt["Service-Type"] = "Authenticate-Only"
        if message_authenticator:
            pkt.add_message_authenticator()
        return pkt, pkt.RequestPacket()

    def check_reply(self, pkt, raw_reply, secret=None):
        """Return the reply code after checking the Response Authenticator and the
        Message-Authenticator mirroring; raise AssertionError otherwise."""
        secret = self.secret if secret is None else secret
        assert verify_response_authenticator(raw_reply, pkt.authenticator, secret)
        reply = pyrad_packet.AuthPacket(packet=raw_reply, secret=secret, dict=self.rdict)
        assert reply.id == pkt.id
        assert bool(reply.message_authenticator) == bool(pkt.message_authenticator)
        if reply.message_authenticator:
            assert reply.verify_message_authenticator(original_authenticator=pkt.authenticator,
                                                      original_code=pkt.code)
        return reply.code


@pytest.fixture
def radius_client(rdict):
    return RadiusClient(rdict)


def udp_exchange(address, raw, timeout=2.0, sock=None):
    """Send one datagram and return the reply bytes, or None on timeout."""
    own = sock is None
    if own:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.sendto(raw, address)
        try:
            return sock.recvfrom(8192)[0]
        except socket.timeout:
            return None
    finally:
        if own:
            sock.close()


@pytest.fixture
def udp():
    return udp_exchange
