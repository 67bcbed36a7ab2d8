"""Users with several tokens, token resync, PIN + OTP and recovery codes (issue 10)."""
import pytest

from otpfast.errors import InvalidParameter, InvalidToken
from otpfast.hotp import HOTP
from otpfast.services import audit
from otpfast.services.distribution import Distribution, VerifyItem
from otpfast.services.usertokens import TokenAdmin
from otpfast.totp import TOTP


@pytest.fixture
def tokens(store, clock):
    return TokenAdmin(store, clock=clock)


def _hotp(store, token):
    material = token.material or store.account(token.user).material
    return HOTP(bytes.fromhex(material["key"]))


def _totp(store, token, clock):
    material = token.material or store.account(token.user).material
    return TOTP(bytes.fromhex(material["key"]), clock=clock)


def _outcomes(store):
    return [entry.outcome for entry in store.audit_entries() if entry.event == audit.VERIFY]


def test_tokens_account_add_makes_a_main_token(admin, tokens, store):
    admin.add_account("alice", "totp")
    [main] = tokens.list("alice")
    assert main.main and main.enabled and main.type == "totp"
    assert main.serial.startswith("OTPF") and len(main.serial) == 12
    assert tokens.get(main.serial) == main
    assert store.verify_audit().ok


def test_tokens_several_tokens_each_verifies_and_serial_is_audited(admin, tokens, distribution,
                                                                   store, clock):
    admin.add_account("alice", "totp")
    [main] = tokens.list("alice")
    hotp_token, codes = tokens.add("alice", "hotp", description="key fob")
    assert codes is None and not hotp_token.main and hotp_token.description == "key fob"
    fob = _hotp(store, hotp_token)
    distribution.verify("alice", fob.generate(0), source="t")
    distribution.verify("alice", _totp(store, main, clock).generate(), source="t")
    with pytest.raises(InvalidToken):                         # no reuse
        distribution.verify("alice", fob.generate(0), source="t")
    distribution.verify("alice", fob.generate(3), source="t")     # look-ahead
    assert tokens.get(hotp_token.serial).counter == 4
    assert _outcomes(store)[:2] == [f"accepted:{hotp_token.serial}", f"accepted:{main.serial}"]
    assert store.verify_audit().ok


def test_tokens_disabled_token_is_refused_and_enabled_again(admin, tokens, distribution, store):
    admin.add_account("alice", "hotp")
    [main] = tokens.list("alice")
    otp = _hotp(store, main).generate(0)
    tokens.set_enabled(main.serial, False)
    assert not tokens.get(main.serial).enabled
    with pytest.raises(InvalidToken):
        distribution.verify("alice", otp, source="t")
    tokens.set_enabled(main.serial, True)
    distribution.verify("alice", otp, source="t")


def test_tokens_delete_further_token_only(admin, tokens, store):
    admin.add_account("alice", "hotp")
    [main] = tokens.list("alice")
    extra, _ = tokens.add("alice", "totp")
    with pytest.raises(InvalidParameter):
        tokens.delete(main.serial)
    tokens.delete(extra.serial)
    assert [t.serial for t in tokens.list("alice")] == [main.serial]
    admin.delete("alice")
    assert tokens.list() == []
    assert store.verify_audit().ok


def test_tokens_further_types_only(admin, tokens):
    admin.add_account("alice", "hotp")
    with pytest.raises(InvalidParameter) as exc:
        tokens.add("alice", "hashchain")
    assert exc.value.field == "type"
    with pytest.raises(InvalidParameter):
        tokens.add("nobody", "totp")


def test_tokens_one_otp_accepted_once_in_a_batch(admin, tokens, store, clock):
    admin.add_account("alice", "hotp")
    extra, _ = tokens.add("alice", "hotp")
    dist = Distribution(store, clock=clock)
    otp = _hotp(store, extra).generate(0)
    assert dist.verify_many([VerifyItem("alice", otp, "t"), VerifyItem("alice", otp, "t")]) \
        == [True, False]


def test_tokens_resync_hotp(admin, tokens, distribution, store):
    admin.add_account("alice", "hotp")
    extra, _ = tokens.add("alice", "hotp")
    fob = _hotp(store, extra)
    with pytest.raises(InvalidToken):                         # beyond the look-ahead
        distribution.verify("alice", fob.generate(500), source="t")
    assert tokens.resync(extra.serial, fob.generate(700), fob.generate(701))["counter"] == 702
    distribution.verify("alice", fob.generate(702), source="t")
    with pytest.raises(InvalidToken):
        tokens.resync(extra.serial, fob.generate(5000), fob.generate(5001))
    [main] = [t for t in tokens.list("alice") if t.main]
    device = _hotp(store, main)
    tokens.resync(main.serial, device.generate(300), device.generate(301))
    assert store.account("alice").counter == 302
    distribution.verify("alice", device.generate(305), source="t")


@pytest.mark.parametrize("which", ["main", "further"])
def test_tokens_resync_totp_stores_drift(admin, tokens, distribution, store, clock, which):
    admin.add_account("alice", "totp")
    [token] = tokens.list("alice")
    if which == "further":
        token, _ = tokens.add("alice", "totp")
    device = _totp(store, token, clock)
    ahead = clock() + 3 * 3600                                # the device's clock: 3 h fast
    with pytest.raises(InvalidToken):
        distribution.verify("alice", device.generate(ahead), source="t")
    result = tokens.resync(token.serial, device.generate(ahead), device.generate(ahead + 30))
    assert result["drift_steps"] == 3 * 120 + 1
    clock.advance(60)
    distribution.verify("alice", device.generate(ahead + 60), source="t")
    assert tokens.describe(tokens.get(token.serial))["drift"] == 361


def test_tokens_request_refused_when_main_disabled(admin, tokens, distribution, device_otps):
    admin.add_account("dev", "hotp")
    request = device_otps(admin, distribution, "dev")
    assert request()
    [main] = tokens.list("dev")
    tokens.set_enabled(main.serial, False)
    with pytest.raises(Exception):
        request()
