"""CLI: the shared --radius* options and `otpfast krb5 config`."""
import click
import pytest
from click.testing import CliRunner

from otpfast_cli.krb5 import kadmin_quote
from otpfast_cli.main import cli
from otpfast_cli.radius_options import radius_options


@click.command()
@radius_options
def probe(radius):
    if radius is None:
        click.echo("none")
    else:
        click.echo(f"udp={radius.udp} socket={radius.unix_socket} "
                   f"require_ma={radius.require_message_authenticator} strip={radius.strip_realm}")


@pytest.fixture
def secret_file(tmp_path):
    f = tmp_path / "radius.secret"
    f.write_text("cli-secret\n")
    return str(f)


def test_radius_options_absent_give_none():
    result = CliRunner().invoke(probe, [])
    assert result.exit_code == 0 and result.output == "none\n"


def test_radius_options_build_config(secret_file):
    result = CliRunner().invoke(probe, ["--radius", "127.0.0.1:1812", "--radius-secret-file", secret_file,
                                        "--radius-socket", "/tmp/x.sock", "--radius-strip-realm",
                                        "--radius-require-message-authenticator"])
    assert result.exit_code == 0, result.output
    assert result.output == "udp=('127.0.0.1', 1812) socket=/tmp/x.sock require_ma=True strip=True\n"
    assert "cli-secret" not in result.output


@pytest.mark.parametrize("args,option", [
    (["--radius", "127.0.0.1:1812"], "--radius-secret-file"),
    (["--radius", "nonsense", "--radius-secret-file", "SECRET"], "--radius"),
    (["--radius", "127.0.0.1:1812", "--radius-secret-file", "/nonexistent/secret"], "--radius-secret-file"),
    (["--radius", "127.0.0.1:1812", "--radius-clients", "/nonexistent/clients"], "--radius-clients"),
    (["--radius-secret-file", "SECRET"], "--radius-secret-file"),
    (["--radius-socket", "/tmp/s.sock", "--radius-secret-file", "SECRET"], "--radius-secret-file"),
    (["--radius-strip-realm"], "--radius-strip-realm"),
    (["--radius", "127.0.0.1:1812", "--radius-secret-file", "EMPTY"], "--radius-secret-file"),
    (["--radius", "127.0.0.1:1812", "--radius-clients", "BADCLIENTS"], "--radius-clients"),
])
def test_radius_options_errors_exit_2_naming_option(tmp_path, secret_file, args, option):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    bad_clients = tmp_path / "clients"
    bad_clients.write_text("not-an-address s3cr3t-value\n")
    args = [{"SECRET": secret_file, "EMPTY": str(empty), "BADCLIENTS": str(bad_clients)}.get(a, a) for a in args]
    result = CliRunner().invoke(probe, args)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "s3cr3t-value" not in result.output and "cli-secret" not in result.output


def test_serve_and_distserver_have_radius_options():
    for command in ("serve", "distserver"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0
        for option in ("--radius", "--radius-secret-file", "--radius-clients", "--radius-socket",
                       "--radius-require-message-authenticator", "--radius-strip-realm"):
            assert option in result.output


def krb5(*args):
    return CliRunner().invoke(cli, ["krb5", "config", "--realm", "EXAMPLE.COM", *args])


def test_krb5_config_unix_socket():
    result = krb5("--radius-socket", "/run/otpfast/radius.sock", "--principal", "alice", "--account", "alice",
                  "--indicator", "otpfast")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "[otp]" in lines
    assert "    otpfast = {" in lines
    assert "        server = /run/otpfast/radius.sock" in lines
    assert "        indicator = otpfast" in lines
    assert not any("secret" in line for line in lines if not line.lstrip().startswith("#"))
    assert "addprinc +requires_preauth -nokey alice" in lines
    assert 'setstr alice otp "[{""type"":""otpfast"",""username"":""alice""}]"' in lines
    # krb5 profiles have no inline comments: a '#' only ever starts a line
    assert all("#" not in line or line.lstrip().startswith("#") for line in lines)


def test_krb5_config_udp_secret_is_an_absolute_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = krb5("--radius", "192.0.2.10:1812", "--radius-secret-file", "radius.secret",
                  "--token-type", "corp_otp", "--timeout", "3", "--only", "kdc.conf")
    assert result.exit_code == 0, result.output
    assert f"        secret = {tmp_path}/radius.secret" in result.output.splitlines()
    assert "        server = 192.0.2.10:1812" in result.output.splitlines()
    assert "    corp_otp = {" in result.output.splitlines()
    assert "        timeout = 3" in result.output.splitlines()
    assert "addprinc" not in result.output


def test_krb5_config_ipv6_and_only_kadmin():
    result = krb5("--radius", "[2001:db8::1]:1812", "--radius-secret-file", "/etc/s", "--only", "kadmin",
                  "--principal", "bob@EXAMPLE.COM")
    assert result.exit_code == 0, result.output
    assert result.output == ('addprinc +requires_preauth -nokey bob@EXAMPLE.COM\n'
                             'setstr bob@EXAMPLE.COM otp "[{""type"":""otpfast""}]"\n')
    result = krb5("--radius", "[2001:db8::1]:1812", "--radius-secret-file", "/etc/s", "--only", "kdc.conf")
    assert "        server = [2001:db8::1]:1812" in result.output.splitlines()


@pytest.mark.parametrize("args,option", [
    ([], "--radius-socket"),
    (["--radius-socket", "/s", "--radius", "h:1"], "--radius-socket"),
    (["--radius", "h:1"], "--radius-secret-file"),
    (["--radius-socket", "/s", "--radius-secret-file", "/f"], "--radius-secret-file"),
    (["--radius-socket", "/s", "--principal", "a", "--principal", "b", "--account", "a"], "--account"),
    (["--radius-socket", "/s", "--principal", "bad name"], "--principal"),
    (["--radius-socket", "/s", "--token-type", "a b"], "--token-type"),
    (["--radius-socket", "/s", "--indicator", "x#y"], "--indicator"),
    (["--radius-socket", "/s with space"], "--radius-socket"),
    (["--radius-socket", "/s", "--timeout", "0"], "--timeout"),
])
def test_krb5_config_errors_exit_2_naming_option(args, option):
    result = krb5(*args)
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_kadmin_quote_doubles_quotes():
    assert kadmin_quote('[{"type":"x"}]') == '"[{""type"":""x""}]"'
