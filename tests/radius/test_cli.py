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
        clients = radius.clients
        click.echo(f"udp={radius.udp} socket={radius.unix_socket} strip={radius.strip_realm} "
                   f"unix_ma={radius.unix_require_message_authenticator} "
                   f"clients={clients and sorted(map(str, clients.networks))} "
                   f"no_ma={clients and sorted(map(str, clients.without_message_authenticator()))}")


@pytest.fixture
def secret_file(tmp_path):
    f = tmp_path / "radius.secret"
    f.write_text("cli-secret-16-chars\n")
    return str(f)


def test_radius_options_absent_give_none():
    result = CliRunner().invoke(probe, [])
    assert result.exit_code == 0 and result.output == "none\n"


def test_radius_options_build_config(secret_file):
    result = CliRunner().invoke(probe, ["--radius", "127.0.0.1:1812", "--radius-secret-file", secret_file,
                                        "--radius-socket", "/tmp/x.sock", "--radius-strip-realm",
                                        "--radius-require-message-authenticator"])
    assert result.exit_code == 0, result.output
    # the secret file serves loopback only, unless told otherwise
    assert result.output == ("udp=('127.0.0.1', 1812) socket=/tmp/x.sock strip=True unix_ma=True "
                             "clients=['127.0.0.0/8', '::1/128'] no_ma=[]\n")
    assert "cli-secret" not in result.output


def test_radius_options_secret_file_networks_and_legacy_switch(secret_file):
    result = CliRunner().invoke(probe, ["--radius", "0.0.0.0:1812", "--radius-secret-file", secret_file,
                                        "--radius-client-networks", "192.0.2.10, 2001:db8::/64",
                                        "--radius-legacy-no-message-authenticator"])
    assert result.exit_code == 0, result.output
    assert result.output == ("udp=('0.0.0.0', 1812) socket=None strip=False unix_ma=False "
                             "clients=['192.0.2.10/32', '2001:db8::/64'] "
                             "no_ma=['192.0.2.10/32', '2001:db8::/64']\n")


def test_radius_options_clients_file_flag(tmp_path, secret_file):
    clients = tmp_path / "clients"
    clients.write_text("192.0.2.10 kdc-secret with spaces no-message-authenticator\n"
                       "192.0.2.0/24 pam-and-vpn-secret-xx\n")
    result = CliRunner().invoke(probe, ["--radius", "0.0.0.0:1812", "--radius-clients", str(clients),
                                        "--radius-secret-file", secret_file])
    assert result.exit_code == 0, result.output
    assert "clients=['127.0.0.0/8', '192.0.2.0/24', '192.0.2.10/32', '::1/128'] no_ma=['192.0.2.10/32']" \
        in result.output
    # the strict switch refuses any opt-out, naming it
    result = CliRunner().invoke(probe, ["--radius", "0.0.0.0:1812", "--radius-clients", str(clients),
                                        "--radius-require-message-authenticator"])
    assert result.exit_code == 2 and "--radius-require-message-authenticator" in result.output
    assert "192.0.2.10/32" in result.output and "kdc-secret" not in result.output


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
    (["--radius", "127.0.0.1:1812", "--radius-secret-file", "SHORT"], "--radius-secret-file"),
    (["--radius", "127.0.0.1:1812", "--radius-clients", "SHORTCLIENTS"], "--radius-clients"),
    (["--radius", "127.0.0.1:1812", "--radius-clients", "EVERYONE"], "--radius-clients"),
    (["--radius", "127.0.0.1:1812", "--radius-secret-file", "SECRET", "--radius-client-networks", "0.0.0.0/0"],
     "--radius-client-networks"),
    (["--radius", "127.0.0.1:1812", "--radius-secret-file", "SECRET", "--radius-client-networks", "kdc.example"],
     "--radius-client-networks"),
    (["--radius", "127.0.0.1:1812", "--radius-secret-file", "SECRET", "--radius-client-networks", ","],
     "--radius-client-networks"),
    (["--radius", "127.0.0.1:1812", "--radius-clients", "CLIENTS", "--radius-client-networks", "10.0.0.1"],
     "--radius-client-networks"),
    (["--radius", "127.0.0.1:1812", "--radius-clients", "CLIENTS", "--radius-legacy-no-message-authenticator"],
     "--radius-legacy-no-message-authenticator"),
    (["--radius", "127.0.0.1:1812", "--radius-secret-file", "SECRET", "--radius-legacy-no-message-authenticator",
      "--radius-require-message-authenticator"], "--radius-require-message-authenticator"),
    (["--radius-socket", "/tmp/s.sock", "--radius-legacy-no-message-authenticator"],
     "--radius-legacy-no-message-authenticator"),
    (["--radius-client-networks", "10.0.0.1"], "--radius-client-networks"),
])
def test_radius_options_errors_exit_2_naming_option(tmp_path, secret_file, args, option):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    bad_clients = tmp_path / "clients"
    bad_clients.write_text("not-an-address s3cr3t-value-long-enough\n")
    short = tmp_path / "short"
    short.write_text("s3cr3t-value\n")
    short_clients = tmp_path / "short-clients"
    short_clients.write_text("127.0.0.1 s3cr3t-value\n")
    everyone = tmp_path / "everyone"
    everyone.write_text("0.0.0.0/0 s3cr3t-value-long-enough\n")
    clients = tmp_path / "good-clients"
    clients.write_text("127.0.0.1 s3cr3t-value-long-enough\n")
    files = {"SECRET": secret_file, "EMPTY": str(empty), "BADCLIENTS": str(bad_clients), "SHORT": str(short),
             "SHORTCLIENTS": str(short_clients), "EVERYONE": str(everyone), "CLIENTS": str(clients)}
    args = [files.get(a, a) for a in args]
    result = CliRunner().invoke(probe, args)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "s3cr3t-value" not in result.output and "cli-secret" not in result.output


def test_serve_and_distserver_have_radius_options():
    for command in ("serve", "distserver"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0
        for option in ("--radius", "--radius-secret-file", "--radius-clients", "--radius-socket",
                       "--radius-require-message-authenticator", "--radius-strip-realm",
                       "--radius-client-networks", "--radius-legacy-no-message-authenticator"):
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
    # krb5 1.20 over UDP needs the per-client opt-out: the stanza says how and what it costs
    assert "--radius-legacy-no-message-authenticator" in result.output
    assert "Blast-RADIUS" in result.output and "--radius-socket" in result.output
    assert all("#" not in line or line.lstrip().startswith("#") for line in result.output.splitlines())


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
