import hashlib
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
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    assert fingerprint == "sha256:" + hashlib.sha256(spki).hexdigest()     # the key's pin
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


def _as_url(conninfo: str, password: str | None = None) -> str:
    """A postgresql:// URL for a conninfo, optionally with a password (the test cluster
    trusts loopback: the password is ignored by the server)."""
    import urllib.parse

    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    user = urllib.parse.quote(info["user"], safe="")
    if password is not None:
        user += ":" + urllib.parse.quote(password, safe="")
    query = ("options=" + urllib.parse.quote(info["options"], safe="")) if "options" in info else ""
    return (f"postgresql://{user}@{info['host']}:{info['port']}/{info['dbname']}"
            + (f"?{query}" if query else ""))


def test_datadir_postgres_store_end_to_end(tmp_path, pg_url, monkeypatch, clock):
    """`otpfast init --store-url`: the URL is recorded (0600), every command uses PostgreSQL,
    the password is never printed; request -> verify -> replay through Distribution; the
    audit check passes and catches an edit made in the database."""
    import psycopg
    from click.testing import CliRunner

    from otpfast.services import masking
    from otpfast.services.distribution import Distribution
    from otpfast.store import PostgresStore
    from otpfast_cli.main import cli

    password = "pw-" + os.urandom(6).hex()
    url = _as_url(pg_url, password)
    data_dir = str(tmp_path / "d")
    runner = CliRunner()
    result = runner.invoke(cli, ["init", "--data-dir", data_dir, "--rsa-bits", "2048",
                                 "--store-url", url])
    assert result.exit_code == 0, result.output
    assert "postgresql database" in result.output and password not in result.output
    dd = DataDir(data_dir)
    assert not os.path.exists(dd.file("store.db"))
    assert stat.S_IMODE(os.stat(dd.file("store.url")).st_mode) == 0o600
    assert dd.store_url() == url and password not in dd.describe_store()

    def run(*args):
        out = runner.invoke(cli, [*args[:2], "--data-dir", data_dir, *args[2:]])
        assert password not in out.output
        return out

    assert run("account", "add", "alice", "--type", "hotp").exit_code == 0
    added = run("client", "add", "dev", "--account", "alice")
    assert added.exit_code == 0, added.output
    credential = added.stdout.strip().encode()

    store = dd.open_store()
    assert isinstance(store, PostgresStore)
    try:
        dist = Distribution(store, clock=clock)
        client = dist.login("dev", credential)
        issued = dist.request(client, "alice")
        otp = masking.unmask(client.session_key, "alice", issued.nonce, issued.masked, issued.expires_at_ms)
        assert dist.verify_many([_item("alice", otp), _item("alice", otp)]) == [True, False]
    finally:
        store.close()
    verified = run("audit", "verify")
    assert verified.exit_code == 0, verified.output
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE audit SET outcome = 'rejected:format' WHERE seq = 2")
    assert run("audit", "verify").exit_code == 1


def test_datadir_postgres_url_from_environment_and_refusals(tmp_path, pg_url, monkeypatch):
    url = _as_url(pg_url)
    monkeypatch.setenv("OTPFAST_STORE_URL", url)
    dd = DataDir(str(tmp_path / "d"))
    dd.init(rsa_bits=2048)
    assert dd.store_url() == url
    with dd.open_store() as store:
        assert store.schema_version() >= 1
    with pytest.raises(InvalidParameter):
        dd.init(rsa_bits=2048)
    with pytest.raises(InvalidParameter) as exc:
        DataDir(str(tmp_path / "e")).init(rsa_bits=2048, store_url="mysql://x")
    assert exc.value.field == "store-url"
    # another data dir with another at-rest key cannot take over the database's store
    monkeypatch.delenv("OTPFAST_STORE_URL")
    other = DataDir(str(tmp_path / "f"))
    with pytest.raises(StoreError, match="holds an otpfast store already.*--join"):
        other.init(rsa_bits=2048, store_url=url)
    assert not other.initialised and not os.path.exists(other.file("at-rest.key"))


def _item(account, otp):
    from otpfast.services.distribution import VerifyItem

    return VerifyItem(account, otp, "test")


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_datadir_every_file_is_private_from_creation(tmp_path, monkeypatch):
    """Under the common umask 022: the directory 0700 and every file 0600, the SQLite WAL
    files and the audit head included; no file is ever created looser (checked at creation)."""
    created = []
    real_open = os.open

    def recording_open(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        if flags & os.O_CREAT and str(path).startswith(str(tmp_path)):
            created.append((str(path), stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd

    monkeypatch.setattr(os, "open", recording_open)
    old = os.umask(0o022)
    try:
        (tmp_path / "d").mkdir(mode=0o755)  # an existing, loose, empty directory
        dd = DataDir(str(tmp_path / "d"))
        dd.init(rsa_bits=2048)
        store = dd.open_store()
        with store.transaction() as tx:
            tx.audit(1.0, "admin", "-", "-", "cli", "ok")  # writes the WAL and the audit head
        store.close()
    finally:
        os.umask(old)
    assert _mode(dd.path) == 0o700
    names = sorted(os.listdir(dd.path))
    assert {"store.db", "at-rest.key", "keyserver.pem", "tls.crt", "tls.key", "audit.head"} <= set(names)
    for name in names:
        assert _mode(dd.file(name)) == 0o600, name
    assert all(mode == 0o600 for _, mode in created), created
    assert {os.path.basename(p) for p, _ in created} >= {"store.db", "at-rest.key", "tls.key"}


def test_datadir_sqlite_wal_and_shm_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        dd = DataDir(str(tmp_path / "d"))
        dd.init(rsa_bits=2048)
        store = dd.open_store()
        with store.transaction() as tx:
            tx.audit(1.0, "admin", "-", "-", "cli", "ok")
        assert os.path.exists(dd.file("store.db-wal")) and os.path.exists(dd.file("store.db-shm"))
        for name in ("store.db", "store.db-wal", "store.db-shm"):
            assert _mode(dd.file(name)) == 0o600, name
        store.close()
    finally:
        os.umask(old)


def test_datadir_open_tightens_a_loose_directory(tmp_path, caplog):
    dd = DataDir(str(tmp_path / "d"))
    dd.init(rsa_bits=2048)
    os.chmod(dd.path, 0o755)
    for name in ("store.db", "tls.crt", "at-rest.key", "keyserver.pem"):
        os.chmod(dd.file(name), 0o644)
    outside = tmp_path / "outside"
    outside.write_bytes(b"not ours")
    os.chmod(outside, 0o644)
    os.symlink(outside, dd.file("link"))  # a symlink in the directory is never followed
    with caplog.at_level("WARNING", logger="otpfast.datadir"):
        store = dd.open_store()
    store.close()
    assert _mode(dd.path) == 0o700
    for name in ("store.db", "tls.crt", "at-rest.key", "keyserver.pem"):
        assert _mode(dd.file(name)) == 0o600
    assert _mode(outside) == 0o644
    assert "store.db was mode 0644" in caplog.text and "tightened to 0600" in caplog.text
    assert dd.tighten() == []  # nothing left to fix, nothing logged again


def test_datadir_cli_init_and_serve_tighten_with_a_warning(tmp_path):
    import subprocess
    import sys
    data = tmp_path / "d"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    env = dict(os.environ, OTPFAST_DATA_DIR=str(data))
    env.pop(ENV_VAR, None)
    init = subprocess.run([sys.executable, "-m", "otpfast_cli", "init", "--rsa-bits", "2048"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert init.returncode == 0, init.stderr
    assert "was mode 0755" in init.stderr and _mode(data) == 0o700
    os.chmod(data / "store.db", 0o644)
    listing = subprocess.run([sys.executable, "-m", "otpfast_cli", "account", "list"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert "store.db was mode 0644" in listing.stderr, listing.stderr
    assert _mode(data / "store.db") == 0o600
