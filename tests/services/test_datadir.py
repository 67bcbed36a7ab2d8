import os
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from otpfast.datadir import DataDir, _self_signed
from otpfast.errors import InvalidParameter, StoreError
from otpfast.store.atrest import ENV_VAR


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in (ENV_VAR, "OTPFAST_DATA_DIR", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)


def test_datadir_resolve_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert DataDir.resolve(None).path == str(tmp_path / "home/.local/share/otpfast")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert DataDir.resolve(None).path == str(tmp_path / "xdg/otpfast")
    monkeypatch.setenv("OTPFAST_DATA_DIR", str(tmp_path / "env"))
    assert DataDir.resolve(None).path == str(tmp_path / "env")
    assert DataDir.resolve(str(tmp_path / "arg")).path == str(tmp_path / "arg")


def test_datadir_init_creates_private_files(tmp_path):
    dd = DataDir(str(tmp_path / "d"))
    fingerprint = dd.init(rsa_bits=2048)
    assert fingerprint == dd.fingerprint() and fingerprint.startswith("sha256:")
    assert stat.S_IMODE(os.stat(dd.path).st_mode) == 0o700
    for name in ("at-rest.key", "keyserver.pem", "tls.key"):
        assert stat.S_IMODE(os.stat(dd.file(name)).st_mode) == 0o600
    assert dd.rsa_private_key().key_size == 2048
    with pytest.raises(InvalidParameter) as exc:
        dd.init(rsa_bits=2048)
    assert exc.value.field == "data-dir"
    store = dd.open_store()
    assert store.verify_audit().ok
    store.close()


def test_datadir_default_rsa_and_iterations(tmp_path):
    dd = DataDir(str(tmp_path / "d"))
    dd.init()
    assert dd.rsa_private_key().key_size == 3072
    keyserver = dd.keyserver()
    assert keyserver.iterations >= 600_000
    keyserver.store.close()


def test_datadir_ssl_context_is_tls12_plus(tmp_path):
    dd = DataDir(str(tmp_path / "d"))
    dd.init(rsa_bits=2048)
    context = dd.ssl_server_context()
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_datadir_given_certificate(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key)
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    dd = DataDir(str(tmp_path / "d"))
    fingerprint = dd.init(tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "k.pem"),
                          rsa_bits=2048)
    expected = cert.fingerprint(hashes.SHA256()).hex()
    assert fingerprint == f"sha256:{expected}"
    with pytest.raises(InvalidParameter):
        DataDir(str(tmp_path / "e")).init(tls_cert=str(tmp_path / "c.pem"), rsa_bits=2048)


def test_datadir_env_key_is_not_written(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "11" * 32)
    dd = DataDir(str(tmp_path / "d"))
    dd.init(rsa_bits=2048)
    assert not os.path.exists(dd.file("at-rest.key"))
    dd.open_store().close()
    monkeypatch.setenv(ENV_VAR, "22" * 32)
    with pytest.raises(StoreError, match="does not match"):
        dd.open_store()


def test_datadir_uninitialised(tmp_path):
    dd = DataDir(str(tmp_path / "nothing"))
    for call in (dd.fingerprint, dd.open_store, dd.rsa_private_key, dd.ssl_server_context):
        with pytest.raises(StoreError, match="otpfast init"):
            call()


def test_datadir_self_signed_certificate_names_loopback(tmp_path):
    cert = _self_signed(ec.generate_private_key(ec.SECP256R1()))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
