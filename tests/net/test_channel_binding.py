"""Every TLS front end binds its challenge-response to the certificate *this* connection was
handshaken with, not the one the listener started with: after a SIGHUP reload (a new TLS
key, tls.ServerIdentity) a new connection's proof must be checked against the new one."""
import types

import pytest

from otpfast.datadir import DataDir
from otpfast.net import tls
from otpfast.net.distribution import DistributionHandler
from otpfast.net.keyserver import KeyServerHandler
from otpfast.net.shares import ShareServerHandler


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    """Two server contexts with different keys: the one a listener started with, and the
    one loaded by a reload."""
    made = []
    for name in ("started", "reloaded"):
        datadir = DataDir(str(tmp_path_factory.mktemp(name) / "data"))
        datadir.init(rsa_bits=2048)
        made.append(tls.server_context(datadir))
    return made


def _transport(context):
    ssl_object = types.SimpleNamespace(context=context)
    extra = {"ssl_object": ssl_object, "peername": ("127.0.0.1", 4321)}
    return types.SimpleNamespace(get_extra_info=lambda name, default=None: extra.get(name, default))


def _handlers(binding):
    verifier = types.SimpleNamespace(distribution=None, metrics=types.SimpleNamespace(native=None))
    return [DistributionHandler(verifier, binding),
            KeyServerHandler(None, b"pem", None, binding),
            ShareServerHandler(None, b"pem", None, binding)]


def test_every_handler_binds_to_the_connections_certificate(contexts):
    started, reloaded = contexts
    old, new = tls.server_end_point(started), tls.server_end_point(reloaded)
    assert old != new
    for handler in _handlers(old):
        handler.connection_made(_transport(reloaded))
        assert handler._auth.binding == new, type(handler).__name__
