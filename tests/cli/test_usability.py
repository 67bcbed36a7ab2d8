"""Usability faults found when otpfast was tried as a new user would (issue 10 item 7), each
reproduced through the CLI: usage errors exit 2 naming the option, OTPs typed as apps show
them, the contribute prompt, and schema migrations only where they are asked for."""
import logging
import os
import socket

import pyotp
import pytest
from click.testing import CliRunner

from otpfast.datadir import DataDir
from otpfast.store import SCHEMA_VERSION, atrest, sqlite as sqlite_backend
from otpfast.store.atrest import AtRestKeys
from otpfast_cli import clients
from otpfast_cli.main import cli


@pytest.fixture
def runner(monkeypatch):
    for var in ("OTPFAST_AT_REST_KEY", "OTPFAST_DATA_DIR", "OTPFAST_CREDENTIAL", "OTPFAST_STORE_URL"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


def invoke(runner, *args, input=None):
    return runner.invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("usability") / "data")
    DataDir(path).init(rsa_bits=2048)
    return path


# every command that takes --data-dir and needs an initialised one (init itself makes it)
DATA_DIR_COMMANDS = [
    ("fingerprint",), ("authority", "add", "5"), ("client", "add", "c", "--verifier"),
    ("account", "add", "a", "--type", "totp"), ("account", "list"), ("account", "show", "a"),
    ("account", "lock", "a"), ("account", "unlock", "a"), ("account", "delete", "a", "--yes"),
    ("enroll", "a"), ("audit", "verify"), ("audit", "archive", "--before", "2020-01-01", "{tmp}/archive"),
    ("verify", "--account", "a", "123456"), ("init", "--upgrade"),
    ("keyserver", "--listen", "127.0.0.1:0"), ("distserver", "--listen", "127.0.0.1:0"),
    ("serve", "--listen", "127.0.0.1:0"),
]


@pytest.mark.parametrize("where", ["missing", "empty"])
@pytest.mark.parametrize("command", DATA_DIR_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_usability_missing_data_dir_is_a_usage_error_naming_it(runner, tmp_path, command, where):
    path = tmp_path / "nonexistent"
    if where == "empty":
        path.mkdir()
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in command]
    result = invoke(runner, *args, "--data-dir", str(path))
    assert result.exit_code == 2, result.output
    assert "'--data-dir'" in result.output and "otpfast init" in result.output
    assert not (where == "missing" and path.exists())      # nothing created on the way


# -- OTPs as typed ---------------------------------------------------------------------------
@pytest.fixture
def totp_account(runner, data_dir):
    name = f"t{os.urandom(4).hex()}"
    assert invoke(runner, "account", "add", name, "--type", "totp", "--data-dir", data_dir).exit_code == 0
    uri = invoke(runner, "enroll", name, "--data-dir", data_dir).output
    secret = uri.split("secret=")[1].split("&")[0]
    return name, pyotp.TOTP(secret)


def test_usability_verify_accepts_an_otp_typed_with_a_space(runner, data_dir, totp_account):
    name, token = totp_account
    otp = token.now()
    result = invoke(runner, "verify", "--data-dir", data_dir, "--account", name, f"{otp[:3]} {otp[3:]}")
    assert result.exit_code == 0 and "accepted" in result.output
    shown = invoke(runner, "account", "show", name, "--data-dir", data_dir).output
    assert "failures: 0" in shown


@pytest.mark.parametrize("otp", ["١٢٣٤٥٦", "１２３４５６", "123 ٤٥٦"])
def test_usability_verify_names_non_ascii_digits(runner, data_dir, totp_account, otp):
    name, _token = totp_account
    result = invoke(runner, "verify", "--data-dir", data_dir, "--account", name, otp)
    assert result.exit_code == 2
    assert "'OTP'" in result.output and "non-ASCII digits" in result.output
    assert "failures: 0" in invoke(runner, "account", "show", name, "--data-dir", data_dir).output


def test_usability_verify_names_non_ascii_digits_before_the_network(runner, tmp_path):
    cred = tmp_path / "cred"
    cred.write_text("x\n")
    result = invoke(runner, "verify", "--server", "127.0.0.1:1", "--client", "v", "--credential-file",
                    str(cred), "--account", "a", "١٢٣٤٥٦")
    assert result.exit_code == 2 and "'OTP'" in result.output


# -- contribute prompt -----------------------------------------------------------------------
def test_usability_contribute_prompt_re_asks_a_negative_value(monkeypatch, runner):
    monkeypatch.setattr(clients, "stdin_is_terminal", lambda: True)
    seen = {}

    @clients.click.command()
    def probe():
        seen["value"] = clients.ask_value()
    result = runner.invoke(probe, input="-5\n1.5\n0x10\n")
    assert result.exit_code == 0, result.output
    assert seen["value"] == 16
    assert result.output.count("Enter an integer") == 3
    assert "must be 0 or more" in result.output and "--value" not in result.output


def test_usability_contribute_piped_negative_value_names_stdin(monkeypatch, runner):
    monkeypatch.setattr(clients, "stdin_is_terminal", lambda: False)

    @clients.click.command()
    def probe():
        clients.ask_value()
    result = runner.invoke(probe, input="-5\n")
    assert result.exit_code == 2
    assert "stdin" in result.output and "must be 0 or more" in result.output


# -- --listen / --radius ---------------------------------------------------------------------
@pytest.mark.parametrize("listen,says", [
    ("999.1.1.1:1", "not a valid IP address"), ("1.2.3:1", "not a valid IP address"),
    ("[::zz]:1", "not a valid IP address"), ("no-such-host.invalid:1", "cannot resolve"),
    ("127.0.0.1:65536", "0..65535"), ("127.0.0.1", "HOST:PORT"),
    ("192.0.2.1:4433", "cannot listen there"),             # not this machine's address
])
@pytest.mark.parametrize("command", ["serve", "distserver", "keyserver"])
def test_usability_bad_listen_address_names_the_option(runner, data_dir, command, listen, says):
    result = invoke(runner, command, "--listen", listen, "--data-dir", data_dir)
    assert result.exit_code == 2, result.output
    assert "'--listen'" in result.output and says in result.output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_usability_listen_address_in_use_names_the_option(runner, data_dir, workers):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = invoke(runner, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
                        "--workers", workers)
    assert result.exit_code == 2, result.output
    assert "'--listen'" in result.output and "in use" in result.output.lower()


@pytest.mark.parametrize("radius,says", [("999.1.1.1:1812", "not a valid IP address"),
                                         ("192.0.2.1:1812", "cannot listen there")])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_usability_bad_radius_address_names_the_option(runner, data_dir, tmp_path, radius, says, workers):
    secret = tmp_path / "secret"
    secret.write_text("a-radius-shared-secret\n")
    secret.chmod(0o600)
    result = invoke(runner, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--workers", workers,
                    "--radius", radius, "--radius-secret-file", str(secret))
    assert result.exit_code == 2, result.output
    assert "'--radius'" in result.output and says in result.output


# -- schema migrations only when asked for ---------------------------------------------------
def make_old_store(path):
    """An initialised data dir whose store has the previous schema version."""
    DataDir(path).init(rsa_bits=2048)
    for name in ("store.db", "store.db-wal", "store.db-shm", "audit.head"):
        if os.path.exists(os.path.join(path, name)):
            os.remove(os.path.join(path, name))
    key = atrest.load_key(os.path.join(path, "at-rest.key"))
    conn = sqlite_backend.connect(os.path.join(path, "store.db"))
    try:
        assert sqlite_backend.migrate(conn, target=SCHEMA_VERSION - 1, keys=AtRestKeys(key)) == SCHEMA_VERSION - 1
    finally:
        conn.close()


def _schema_version(path):
    conn = sqlite_backend.connect(os.path.join(path, "store.db"))
    try:
        return sqlite_backend._current_version(conn)
    finally:
        conn.close()


@pytest.mark.parametrize("command", [("account", "list"), ("account", "show", "x"), ("audit", "verify"),
                                     ("verify", "--account", "x", "123456"),
                                     ("account", "add", "x", "--type", "totp")])
def test_usability_commands_refuse_an_old_store_without_migrating_it(runner, tmp_path, command):
    path = str(tmp_path / "old")
    make_old_store(path)
    result = invoke(runner, *command, "--data-dir", path)
    assert result.exit_code == 2, result.output
    assert "'--data-dir'" in result.output and "otpfast init --upgrade" in result.output
    assert f"schema version {SCHEMA_VERSION - 1}" in result.output
    assert _schema_version(path) == SCHEMA_VERSION - 1


def test_usability_init_upgrade_migrates_and_says_so(runner, tmp_path, caplog):
    path = str(tmp_path / "old")
    make_old_store(path)
    with caplog.at_level(logging.WARNING, logger="otpfast.datadir"):
        result = invoke(runner, "init", "--upgrade", "--data-dir", path)
    assert result.exit_code == 0, result.output
    assert f"from version {SCHEMA_VERSION - 1} to {SCHEMA_VERSION}" in result.output
    assert [r.getMessage() for r in caplog.records if "upgraded the store schema" in r.getMessage()]
    assert _schema_version(path) == SCHEMA_VERSION
    assert invoke(runner, "account", "list", "--data-dir", path).exit_code == 0
    again = invoke(runner, "init", "--upgrade", "--data-dir", path)
    assert again.exit_code == 0 and "nothing to upgrade" in again.output


def test_usability_init_upgrade_takes_no_tls_options(runner, data_dir, tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    result = invoke(runner, "init", "--upgrade", "--data-dir", data_dir, "--tls-cert", str(cert),
                    "--tls-key", str(cert))
    assert result.exit_code == 2 and "--upgrade" in result.output

