"""Fakes of the synchronous services and a throwaway TLS certificate for in-process servers."""
import asyncio
import dataclasses
import datetime
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from otpfast.errors import Refused


def make_certificate(tmp_path, name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    cert_path = tmp_path / f"{name}.crt"
    key_path = tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    der = cert.public_bytes(serialization.Encoding.DER)
    from otpfast.net import tls
    tls.remember_end_point(context, der)      # the channel binding the handlers bind proofs to
    return context, der


def _session(stored_credentials, kind, exchange, proof):
    """The session key if ``proof`` proves the credential of ``exchange.principal``, else Refused."""
    from otpfast.services import credentials
    secret = stored_credentials.get(exchange.principal) if exchange.kind == kind else None
    key = credentials.check_proof(proof, None if secret is None else credentials.credential_hash(secret),
                                  exchange)
    if key is None:
        raise Refused("refused")
    return key


@dataclasses.dataclass(frozen=True)
class FakeClient:
    name: str
    account: str | None
    verifier: bool
    session_key: bytes = None


class FakeKeyServer:
    def __init__(self):
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.contributions = {}
        self.threads = set()

    def public_key_pem(self):
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def authenticate(self, exchange, proof, *, source="-"):
        from otpfast.services import credentials
        from otpfast.services.keyserver import AuthorityInfo
        self.threads.add(threading.get_ident())
        key = _session({"1": b"authority-secret"}, credentials.AUTHORITY, exchange, proof)
        return AuthorityInfo(int(exchange.principal), key)

    def contribute(self, authority, account, ciphertext):
        from otpfast.services.keyserver import SignedReceipt, _oaep
        self.threads.add(threading.get_ident())
        authority_id = authority.authority_id
        if (account, authority_id) in self.contributions:
            raise Refused("refused")
        plain = self.private_key.decrypt(ciphertext, _oaep(account, authority_id))
        self.contributions[(account, authority_id)] = plain
        return SignedReceipt(b"receipt:" + account.encode(), b"signature", 0)

    def transcript(self, authority, account):
        return b"transcript:" + account.encode(), b"signature"


class FakeDistribution:
    """Valid OTPs are registered with ``issue``; each verifies once; verify_many is one batch."""

    def __init__(self):
        self.valid = {}
        self.auth_calls = 0
        self.batches = []
        self.threads = set()
        self.lock = threading.Lock()
        self.fail_next_batch = False
        self.unavailable = []           # StoreUnavailable.committed of the next batches' failures
        self.request_ids = []           # VerifyItem.request_id of every verified item
        self.sources = set()

    def authenticate(self, exchange, proof, *, source="-"):
        from otpfast.services import credentials
        self.auth_calls += 1
        self.threads.add(threading.get_ident())
        key = _session({"verifier": b"verifier-secret", "phone": b"phone-secret"}, credentials.CLIENT,
                       exchange, proof)
        if exchange.principal == "verifier":
            return FakeClient("verifier", None, True, key)
        return FakeClient("phone", "alice", False, key)

    def issue(self, account, otp):
        self.valid.setdefault(account, set()).add(otp)

    def refusals_pending(self):       # no refusal entries queued (see AsyncVerifier)
        return False

    def flush_refusals(self, **kwargs):
        return 0

    def request(self, client, account):
        from otpfast.services import masking
        from otpfast.services.distribution import IssuedOtp
        self.threads.add(threading.get_ident())
        if client.account != account:
            raise Refused("refused")
        otp = f"{len(self.valid.get(account, ())):06d}"
        self.issue(account, otp)
        nonce, masked = masking.mask(client.session_key, account, otp, 1_900_000_000_500)
        return IssuedOtp(nonce, masked, 1_900_000_000.5, 1_900_000_000_500)

    def verify_many(self, items, *, wait=True, durable=True):
        self.threads.add(threading.get_ident())
        if self.fail_next_batch:
            self.fail_next_batch = False
            raise RuntimeError("disk full")
        if self.unavailable:
            from otpfast.errors import StoreUnavailable
            raise StoreUnavailable("the store is unreachable", committed=self.unavailable.pop(0))
        self.batches.append(len(items))
        self.sources.update(item.source for item in items)
        self.request_ids.extend(item.request_id for item in items)
        out = []
        for item in items:
            allowed = item.client is None or item.client.verifier
            valid = self.valid.get(item.account, set())
            ok = allowed and item.otp in valid
            if ok:
                valid.discard(item.otp)
            out.append(ok)
        return out


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"), "server")


@pytest.fixture(scope="session")
def other_certificate(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls-other"), "impostor")


@pytest.fixture
def known_servers(tmp_path, monkeypatch):
    path = tmp_path / "known_servers"
    monkeypatch.setenv("OTPFAST_KNOWN_SERVERS", str(path))
    return path


def _event_loop_params():
    from otpfast.net import eventloop
    return [pytest.param(name, id=name, marks=() if eventloop.available(name) else
                         pytest.mark.skip(reason=f"{name} is not installed"))
            for name in eventloop.LOOPS]


@pytest.fixture(params=_event_loop_params())
def event_loop_name(request):
    """Each event loop the servers may run on (uvloop when installed, asyncio's own)."""
    return request.param


@pytest.fixture
def run(event_loop_name):
    from otpfast.net import eventloop

    def runner(coroutine_function, *args, timeout=30):
        async def main():
            async with asyncio.timeout(timeout):
                return await coroutine_function(*args)
        return eventloop.run(main(), name=event_loop_name)
    return runner


class Running:
    """A server running in this event loop, with its fakes and its pin."""

    def __init__(self, server, verifier, distribution, keyserver, pin):
        from otpfast.net._stream import bound_address
        self.server = server
        self.verifier = verifier
        self.distribution = distribution
        self.keyserver = keyserver
        self.pin = pin
        self.host, self.port = bound_address(server)

    def connect(self, **kwargs):
        from otpfast.net.client import connect
        kwargs.setdefault("pin", self.pin)
        return connect(self.host, self.port, **kwargs)


def pin_of(der):
    from otpfast.net import tls
    return tls.pin_of(der)


@pytest.fixture
def start(certificate):
    """``async with start(limits=None, kind="combined"|"keyserver"|"distribution") as running``."""
    import contextlib

    from otpfast.net.distribution import serve_distribution
    from otpfast.net.keyserver import serve_keyserver
    from otpfast.net.server import serve_combined
    from otpfast.net.verifier import AsyncVerifier

    @contextlib.asynccontextmanager
    async def starter(limits=None, kind="combined", cert=None):
        context, der = cert or certificate
        distribution = FakeDistribution()
        keyserver = FakeKeyServer()
        verifier = AsyncVerifier(distribution)
        if kind == "combined":
            server = await serve_combined(keyserver, verifier, context, "127.0.0.1", 0, limits=limits)
        elif kind == "keyserver":
            server = await serve_keyserver(keyserver, context, "127.0.0.1", 0, limits=limits)
        else:
            server = await serve_distribution(verifier, context, "127.0.0.1", 0, limits=limits)
        try:
            yield Running(server, verifier, distribution, keyserver, pin_of(der))
        finally:
            server.close()
            await server.wait_closed()
            await verifier.aclose()
    return starter
