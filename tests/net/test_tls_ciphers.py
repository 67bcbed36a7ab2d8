"""The servers' TLS: TLS 1.2 offers only AEAD suites with forward secrecy (no CBC); TLS 1.3
unchanged. Real handshakes on loopback against the data directory's server context."""
import socket
import ssl
import threading

import pytest

from otpfast.datadir import DataDir
from otpfast.net import tls

CBC_SUITES = ("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:"
              "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES128-SHA:"
              "DHE-RSA-AES128-SHA256:AES128-SHA256:AES128-SHA")


@pytest.fixture(scope="module")
def server_context(tmp_path_factory):
    datadir = DataDir(str(tmp_path_factory.mktemp("tls") / "d"))
    datadir.init(rsa_bits=2048)
    return tls.server_context(datadir)


def _handshake(server_context, client_context):
    """One handshake on loopback: (version, cipher name) the client got, or the SSLError."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.settimeout(10)
            try:
                with server_context.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)
            except (OSError, ssl.SSLError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw:
                with client_context.wrap_socket(raw) as conn:
                    return conn.version(), conn.cipher()[0]
        finally:
            thread.join(10)


def _client(maximum=None, ciphers=None):
    context = tls.client_context()
    if maximum is not None:
        context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


def test_tls12_offers_only_aead_with_forward_secrecy(server_context):
    tls12 = [c for c in server_context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for cipher in tls12:
        assert cipher["aead"] and cipher["kea"] == "kx-ecdhe", cipher["name"]


def test_cbc_only_client_is_refused(server_context):
    client = _client(ssl.TLSVersion.TLSv1_2, CBC_SUITES)
    with pytest.raises(ssl.SSLError):
        _handshake(server_context, client)


def test_tls12_client_gets_an_aead_suite(server_context):
    version, cipher = _handshake(server_context, _client(ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2"
    assert "GCM" in cipher or "CHACHA20" in cipher
    assert cipher.startswith("ECDHE-")


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_tls12_each_aead_suite_works(server_context, suite):
    assert _handshake(server_context, _client(ssl.TLSVersion.TLSv1_2, suite)) == ("TLSv1.2", suite)


def test_normal_client_gets_tls13(server_context):
    version, cipher = _handshake(server_context, _client())
    assert version == "TLSv1.3" and cipher.startswith("TLS_")
