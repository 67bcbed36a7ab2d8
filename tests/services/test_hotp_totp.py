"""HOTP look-ahead and TOTP +-1 step through Distribution, with pyotp as the independent
generator (an authenticator app's view)."""
import base64

import pyotp
import pytest

from otpfast.errors import InvalidToken
from otpfast.services import masking


def app(store, name):
    record = store.account(name)
    secret = base64.b32encode(bytes.fromhex(record.material["key"])).decode()
    digest = record.params["algorithm"]
    if record.type == "hotp":
        return pyotp.HOTP(secret, digits=record.params["digits"], digest=digest)
    return pyotp.TOTP(secret, digits=record.params["digits"], digest=digest,
                      interval=record.params["period"])


@pytest.mark.parametrize("algorithm,digits", [("sha1", 6), ("sha256", 8), ("sha512", 7)])
def test_hotp_look_ahead(admin, distribution, store, algorithm, digits):
    admin.add_account("h", "hotp", algorithm=algorithm, digits=digits)
    token = app(store, "h")
    distribution.verify("h", token.at(0), source="app")
    assert store.account("h").counter == 1
    distribution.verify("h", token.at(1 + 10), source="app")     # the edge of the window
    assert store.account("h").counter == 12
    for counter in (11, 5, 12 + 11):                              # replay, behind, beyond window
        with pytest.raises(InvalidToken):
            distribution.verify("h", token.at(counter), source="app")
    distribution.verify("h", token.at(20), source="app")


def test_hotp_server_issued_and_app_share_the_counter(admin, distribution, store):
    admin.add_account("h", "hotp")
    credential = admin.add_client("dev", account="h")
    client = distribution.login("dev", credential)
    issued = distribution.request(client, "h")
    otp = masking.unmask(client.session_key, "h", issued.nonce, issued.masked, issued.expires_at_ms)
    token = app(store, "h")
    assert otp == token.at(0)
    assert store.account("h").counter == 1
    distribution.verify("h", otp, source="net")
    with pytest.raises(InvalidToken):
        distribution.verify("h", otp, source="net")
    distribution.verify("h", token.at(1), source="app")


def test_hotp_issued_otp_expires(admin, distribution, store, clock):
    admin.add_account("h", "hotp", ttl=120)
    credential = admin.add_client("dev", account="h")
    client = distribution.login("dev", credential)
    issued = distribution.request(client, "h")
    clock.advance(121)
    with pytest.raises(InvalidToken):
        distribution.verify("h", masking.unmask(client.session_key, "h", issued.nonce, issued.masked,
                                                issued.expires_at_ms), source="net")


@pytest.mark.parametrize("algorithm,digits", [("sha1", 6), ("sha256", 8)])
def test_totp_plus_minus_one_step(admin, distribution, store, clock, algorithm, digits):
    admin.add_account("t", "totp", algorithm=algorithm, digits=digits)
    token = app(store, "t")
    now = clock()
    distribution.verify("t", token.at(now - 30), source="app")      # previous step
    with pytest.raises(InvalidToken):                                # replay of that step
        distribution.verify("t", token.at(now - 30), source="app")
    distribution.verify("t", token.at(now), source="app")
    with pytest.raises(InvalidToken):                                # reuse of the current step
        distribution.verify("t", token.at(now), source="app")
    distribution.verify("t", token.at(now + 30), source="app")      # next step
    with pytest.raises(InvalidToken):                                # two steps ahead
        distribution.verify("t", token.at(now + 60), source="app")


def test_totp_old_and_future_steps_refused(admin, distribution, store, clock):
    admin.add_account("t", "totp")
    token = app(store, "t")
    for delta in (-60, 60, -3600):
        with pytest.raises(InvalidToken):
            distribution.verify("t", token.at(clock() + delta), source="app")


def test_totp_lower_step_after_higher_refused(admin, distribution, store, clock):
    admin.add_account("t", "totp")
    token = app(store, "t")
    distribution.verify("t", token.at(clock() + 30), source="app")
    with pytest.raises(InvalidToken):
        distribution.verify("t", token.at(clock()), source="app")


@pytest.mark.parametrize("bad", ["12345", "1234567", "12 456", "١٢٣٤٥٦", "12345a", "+12345"])
def test_hotp_bad_format(admin, distribution, bad):
    admin.add_account("h", "hotp")
    with pytest.raises(InvalidToken):
        distribution.verify("h", bad, source="app")
