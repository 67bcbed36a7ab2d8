"""FreeRADIUS's radclient as an independent RADIUS client against the front end."""
import shutil
import subprocess

import pytest

from otpfast.radius.config import ClientSecrets

SECRET = "radclient-secret"


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


@pytest.fixture
def server(start_front_end, fake_verify):
    verify = fake_verify({("alice", "123456"), ("alice", "654321"), ("bob", "111111")})
    front_end = start_front_end(verify, secrets=ClientSecrets(default=SECRET.encode()))
    return front_end, verify


@pytest.mark.service
@pytest.mark.parametrize("message_authenticator", [False, True], ids=["plain", "message-authenticator"])
def test_radclient_accept_reject_replay(radclient, server, message_authenticator):
    front_end, verify = server
    extra = ", Message-Authenticator = 0x00" if message_authenticator else ""
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
@pytest.mark.parametrize("message_authenticator", [False, True], ids=["plain", "message-authenticator"])
def test_radclient_wrong_shared_secret_gets_no_answer(radclient, server, message_authenticator):
    front_end, verify = server
    extra = ", Message-Authenticator = 0x00" if message_authenticator else ""
    rc, out = radclient(front_end.udp_address, f'User-Name = "bob", User-Password = "111111"{extra}',
                        secret="not-the-secret")
    assert rc != 0 and "No reply from server" in out, out
    assert verify.calls == []  # nothing verified: no failure counted against the account
    reason = "bad_message_authenticator" if message_authenticator else "bad_password"
    assert front_end.counters[reason] == 1
    rc, out = radclient(front_end.udp_address, f'User-Name = "bob", User-Password = "111111"{extra}')
    assert rc == 0 and "Received Access-Accept" in out, out


@pytest.mark.service
def test_radclient_required_message_authenticator(radclient, start_front_end, fake_verify):
    verify = fake_verify({("carol", "222222")})
    front_end = start_front_end(verify, secrets=ClientSecrets(default=SECRET.encode()),
                                require_message_authenticator=True)
    rc, out = radclient(front_end.udp_address, 'User-Name = "carol", User-Password = "222222"')
    assert rc != 0 and "No reply from server" in out, out
    rc, out = radclient(front_end.udp_address,
                        'User-Name = "carol", User-Password = "222222", Message-Authenticator = 0x00')
    assert rc == 0 and "Received Access-Accept" in out, out
    assert front_end.counters["missing_message_authenticator"] == 1
