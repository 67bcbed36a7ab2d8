"""The server's --ttl: validity of the OTPs a distribution server issues (issue 4 item 5)."""
import pytest
from click.testing import CliRunner

from otpfast.errors import InvalidParameter, InvalidToken
from otpfast.services import masking
from otpfast.services.distribution import MAX_TTL, MIN_TTL, Distribution
from otpfast_cli import servers
from otpfast_cli.main import cli


@pytest.fixture
def device(admin):
    admin.add_account("alice", "hotp", ttl=600)
    return admin.add_client("device", account="alice")


def _issue(distribution, credential):
    client = distribution.login("device", credential)
    issued = distribution.request(client, "alice")
    return masking.unmask(client.session_key, "alice", issued.nonce, issued.masked, issued.expires_at_ms), issued


def test_server_ttl_overrides_the_account_ttl_up_to_the_boundary(store, clock, device):
    distribution = Distribution(store, clock=clock, ttl=120)
    start = clock()
    early, issued = _issue(distribution, device)
    assert issued.expires_at == start + 120
    boundary, _ = _issue(distribution, device)
    clock.advance(119)
    distribution.verify("alice", early, source="test")          # 1 s before expiry
    clock.advance(1)                                             # exactly at expires_at
    with pytest.raises(InvalidToken):
        distribution.verify("alice", boundary, source="test")


def test_server_ttl_none_keeps_the_account_ttl(store, clock, device):
    distribution = Distribution(store, clock=clock)
    _, issued = _issue(distribution, device)
    assert issued.expires_at == clock() + 600


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
@pytest.mark.parametrize("ttl", [0, -5, MAX_TTL + 1, "300", 2.5e9])
def test_server_ttl_out_of_range_refused(store, ttl):
    with pytest.raises(InvalidParameter) as exc:
        Distribution(store, ttl=ttl)
    assert exc.value.field == "ttl"


def test_server_ttl_cli_limits_match_the_service():
    assert (servers.MIN_TTL, servers.MAX_TTL) == (MIN_TTL, MAX_TTL)


@pytest.mark.parametrize("command", ["serve", "distserver"])
@pytest.mark.parametrize("value", ["0", "abc", "86401", "-1"])
def test_server_ttl_bad_cli_value_exits_2_naming_the_option(tmp_path, command, value):
    result = CliRunner().invoke(cli, [command, "--listen", "127.0.0.1:0", "--data-dir",
                                      str(tmp_path), "--ttl", value])
    assert result.exit_code == 2
    assert "'--ttl'" in result.output


@pytest.mark.parametrize("command", ["serve", "distserver"])
def test_server_ttl_in_help(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "--ttl SECONDS" in result.output and "120-900" in result.output
