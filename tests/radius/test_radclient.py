"""FreeRADIUS's radclient as an independent RADIUS client against the front end.

Debian 12's radclient sends no Message-Authenticator unless its input has
``Message-Authenticator = 0x00`` (then it computes one): with that it takes the default
path (required); without, it needs the per-client opt-out."""
import shutil
import subprocess

import pytest

from otpfast.radius.config import RadiusClients

SECRET = "radclient-secret"
MA = ", Message-Authenticator = 0x00"


@pytest.fixture
def radclient(require_service):
    path = shutil.which("radclient")
    require_service(path is not None, "radclient (freeradius-utils)")

    def run(address, attributes, secret=SECRET):
        # radclient reads the attribute list on stdin; -r 1: no retries, -t 1: 1 s timeout
        out = subprocess.run(
            [path, "-x", "-r", "1", "-t", "1", f"{address[0]}:{address[1]}", "auth", secret],
            input=attributes + "\n", capture_output=True, text=True, timeout=20)
        return out.returncode, out.stdout + out.stderr

    return run


@pytest.fixture(params=[False, True], ids=["default", "opted-out"])
def server(request, start_front_end, fake_verify):
    """The front end with radclient's loopback source required to sign (default) or opted out."""
    verify = fake_verify({("alice", "123456"), ("alice", "654321"), ("bob", "111111")})
    clients = RadiusClients.shared(SECRET.encode(), require_message_authenticator=not request.param)
    front_end = start_front_end(verify, clients=clients)
    return front_end, verify, request.param


@pytest.mark.service
@pytest.mark.parametrize("opted_out,message_authenticator", [(False, True), (True, False), (True, True)],
                         ids=["default", "opted-out-plain", "opted-out-message-authenticator"])
def test_radclient_accept_reject_replay(radclient, start_front_end, fake_verify, opted_out, message_authenticator):
    verify = fake_verify({("alice", "123456"), ("alice", "654321"), ("bob", "111111")})
    front_end = start_front_end(verify, clients=RadiusClients.shared(
        SECRET.encode(), require_message_authenticator=not opted_out))
    extra = MA if message_authenticator else ""
    otp = "654321" if message_authenticator else "123456"
    rc, out = radclient(front_end.udp_address, f'User-Name = "alice", User-Password = "{otp}"{extra}')
    assert rc == 0 and "Received Access-Accept" in out, out
    # radclient checks the Response Authenticator and the Message-Authenticator it asked for
    assert ("Message-Authenticator = 0x" in out.split("Received", 1)[1]) is message_authenticator
    rc, out = radclient(front_end.udp_address, f'User-Name = "alice", User-Password = "{otp}"{extra}')
    assert rc != 0 and "Received Access-Reject" in out, out  # replay
    rc, out = radclient(front_end.udp_address, f'User-Name = "bob", User-Password = "999999"{extra}')
    assert rc != 0 and "Received Access-Reject" in out, out  # wrong OTP
    assert front_end.counters["accepted"] == 1 and front_end.counters["rejected"] == 2


@pytest.mark.service
def test_radclient_wrong_shared_secret_with_message_authenticator_gets_no_answer(radclient, server):
    front_end, verify, _ = server
    rc, out = radclient(front_end.udp_address, f'User-Name = "bob", User-Password = "111111"{MA}',
                        secret="not-the-secret-either")
    assert rc != 0 and "No reply from server" in out, out
    assert verify.calls == []  # nothing verified: no failure counted against the account
    assert front_end.counters["bad_message_authenticator"] == 1
    rc, out = radclient(front_end.udp_address, f'User-Name = "bob", User-Password = "111111"{MA}')
    assert rc == 0 and "Received Access-Accept" in out, out


@pytest.mark.service
def test_radclient_opted_out_wrong_secret_is_a_wrong_otp(radclient, start_front_end, fake_verify):
    """Without a Message-Authenticator nothing tells a wrong secret from a wrong password: the
    request is verified (with the garbled password) and rejected, never left unanswered."""
    verify = fake_verify({("bob", "111111")})
    front_end = start_front_end(verify, clients=RadiusClients.shared(SECRET.encode(),
                                                                     require_message_authenticator=False))
    rc, out = radclient(front_end.udp_address, 'User-Name = "bob", User-Password = "111111"',
                        secret="not-the-secret-either")
    # answered, signed with the real secret (radclient with the wrong one cannot check it)
    assert rc != 0 and "Received Access-Reject packet" in out and "invalid Response Authenticator" in out, out
    assert [account for account, _ in verify.calls] == ["bob"] and verify.calls[0][1] != "111111"


@pytest.mark.service
def test_radclient_default_requires_message_authenticator(radclient, start_front_end, fake_verify):
    verify = fake_verify({("carol", "222222")})
    front_end = start_front_end(verify, clients=RadiusClients.shared(SECRET.encode()))
    rc, out = radclient(front_end.udp_address, 'User-Name = "carol", User-Password = "222222"')
    assert rc != 0 and "No reply from server" in out, out
    rc, out = radclient(front_end.udp_address, f'User-Name = "carol", User-Password = "222222"{MA}')
    assert rc == 0 and "Received Access-Accept" in out, out
    assert front_end.counters["missing_message_authenticator"] == 1
    assert verify.calls == [("carol", "222222")]


@pytest.mark.service
def test_radclient_proxy_state_without_message_authenticator_dropped(radclient, server):
    """Blast-RADIUS precondition: attacker Proxy-State echoed in an unsigned reply. Dropped
    even for an opted-out client; with a Message-Authenticator it is echoed (RFC 2865)."""
    front_end, verify, _ = server
    proxy = ", ".join(["Proxy-State = 0x" + "41" * 253] * 4)
    rc, out = radclient(front_end.udp_address, f'User-Name = "bob", User-Password = "111111", {proxy}')
    assert rc != 0 and "No reply from server" in out, out
    assert verify.calls == []
    rc, out = radclient(front_end.udp_address, f'User-Name = "bob", User-Password = "111111", {proxy}{MA}')
    assert rc == 0 and "Received Access-Accept" in out, out
