import base64
import hashlib
import threading

import pytest

from otpfast.errors import InvalidToken, Refused
from otpfast.services import masking
from otpfast.services.distribution import ClientInfo, VerifyItem


@pytest.fixture
def chain_account(admin):
    admin.add_account("chain", "hashchain", chain_length=20, ttl=300, lockout=3)
    return "chain"


@pytest.fixture
def clients(admin, distribution, chain_account):
    device = admin.add_client("device", account=chain_account)
    relying = admin.add_client("rp", verifier=True)
    return {"device": (distribution.authenticate("device", device), device),
            "rp": (distribution.authenticate("rp", relying), relying)}


def request(distribution, clients, account="chain", who="device"):
    info, credential = clients[who]
    issued = distribution.request(info, account)
    return masking.unmask(credential, account, issued.nonce, issued.masked), issued


def independent_chain(seed_hex, length):
    values = [bytes.fromhex(seed_hex)]
    for _ in range(length):
        values.append(hashlib.sha256(values[-1]).digest())
    return values     # values[k] = h(k)


# -- authentication and masking ---------------------------------------------------------------
def test_distribution_authenticate(distribution, clients):
    info, credential = clients["device"]
    assert info == ClientInfo("device", "chain", False)
    assert distribution.authenticate("device", credential.encode() + b"\n") == info
    for name, cred in (("device", clients["rp"][1]), ("nobody", credential), ("device", b""),
                       ("device", None), (None, credential)):
        with pytest.raises(Refused) as exc:
            distribution.authenticate(name, cred)
        assert str(exc.value) == ""


def test_distribution_request_is_masked_per_client(distribution, clients, store):
    otp, issued = request(distribution, clients)
    assert otp.encode() not in issued.masked
    with pytest.raises(InvalidToken):
        masking.unmask(clients["rp"][1], "chain", issued.nonce, issued.masked)
    with pytest.raises(InvalidToken):
        masking.unmask(clients["device"][1], "other", issued.nonce, issued.masked)
    tampered = bytes([issued.masked[0] ^ 1]) + issued.masked[1:]
    with pytest.raises(InvalidToken):
        masking.unmask(clients["device"][1], "chain", issued.nonce, tampered)


def test_distribution_hashchain_follows_the_paper(distribution, clients, store, clock):
    seed = store.account("chain").material["seed"]
    chain = independent_chain(seed, 20)
    assert store.account("chain").chain_last == chain[20]
    for use in (1, 2, 3):
        otp, issued = request(distribution, clients)
        assert otp == chain[20 - use].hex()
        assert issued.expires_at == clock() + 300
        distribution.verify("chain", otp, source="test", client=clients["rp"][0])
        assert store.account("chain").chain_last == chain[20 - use]
        with pytest.raises(InvalidToken):
            distribution.verify("chain", otp, source="test")


def test_distribution_hashchain_uppercase_hex_accepted(distribution, clients):
    otp, _ = request(distribution, clients)
    distribution.verify("chain", otp.upper(), source="test")


def test_distribution_hashchain_skips_unverified_request(distribution, clients):
    lost, _ = request(distribution, clients)
    otp, _ = request(distribution, clients)
    distribution.verify("chain", otp, source="test")
    with pytest.raises(InvalidToken):          # behind the chain now
        distribution.verify("chain", lost, source="test")


def test_distribution_hashchain_value_not_issued_is_refused(distribution, clients, store):
    chain = independent_chain(store.account("chain").material["seed"], 20)
    with pytest.raises(InvalidToken):          # right chain value, but never issued
        distribution.verify("chain", chain[19].hex(), source="test")


def test_distribution_hashchain_exhausted(admin, distribution, clients):
    admin.add_account("short", "hashchain", chain_length=2)
    credential = admin.add_client("dev2", account="short")
    info = distribution.authenticate("dev2", credential)
    for _ in range(2):
        issued = distribution.request(info, "short")
        distribution.verify("short", masking.unmask(credential, "short", issued.nonce,
                                                    issued.masked), source="t")
    with pytest.raises(Refused):
        distribution.request(info, "short")


# -- request -> verify -> replay, expiry ------------------------------------------------------
def test_distribution_request_verify_replay(distribution, clients, store):
    otp, _ = request(distribution, clients)
    distribution.verify("chain", otp, source="net", client=clients["rp"][0])
    with pytest.raises(InvalidToken):
        distribution.verify("chain", otp, source="net", client=clients["rp"][0])
    outcomes = [e.outcome for e in store.audit_entries() if e.event == "verify"]
    assert outcomes == ["accepted", "rejected:wrong-expired-or-used"]


def test_distribution_expiry(distribution, clients, clock):
    otp, issued = request(distribution, clients)
    clock.advance(299.9)
    later, _ = request(distribution, clients)
    clock.now = issued.expires_at            # valid strictly before expires_at
    with pytest.raises(InvalidToken):
        distribution.verify("chain", otp, source="t")
    distribution.verify("chain", later, source="t")


REQUEST_REFUSALS = {
    "verifier-client": ("rp", "chain"),
    "other-account": ("device", "other"),
    "unknown-account": ("device", "nobody"),
}


@pytest.mark.parametrize("case", sorted(REQUEST_REFUSALS))
def test_distribution_request_refusals(case, admin, distribution, clients, store, state_of):
    admin.add_account("other", "hashchain")
    who, account = REQUEST_REFUSALS[case]
    before = state_of(store)
    with pytest.raises(Refused) as exc:
        distribution.request(clients[who][0], account)
    assert str(exc.value) == ""
    assert state_of(store) == before
    assert list(store.audit_entries())[-1].outcome == "refused"


def test_distribution_request_refused_for_pending_totp_and_locked(admin, distribution, store,
                                                                  clients, state_of):
    admin.add_authority(1)
    admin.add_authority(2)
    admin.add_account("pending", "hashchain", authorities=(1, 2))
    admin.add_account("t", "totp")
    for account in ("pending", "t"):
        info = distribution.authenticate(account + "-dev",
                                         admin.add_client(account + "-dev", account=account))
        before = state_of(store)
        with pytest.raises(Refused):
            distribution.request(info, account)
        assert state_of(store) == before
    admin.lock("chain")
    with pytest.raises(Refused):
        distribution.request(clients["device"][0], "chain")


# -- formats, authorisation -------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "zz" * 32, "0" * 63, "0" * 65, " " + "0" * 63,
                                 "\u0661" * 64, None, 123456])
def test_distribution_bad_format_is_invalid_token(distribution, clients, bad, store):
    with pytest.raises(InvalidToken) as exc:
        distribution.verify("chain", bad, source="t")
    assert str(exc.value) == ""
    assert list(store.audit_entries())[-1].outcome == "rejected:format"


def test_distribution_account_client_cannot_verify(distribution, clients, store):
    otp, _ = request(distribution, clients)
    with pytest.raises(InvalidToken):
        distribution.verify("chain", otp, source="net", client=clients["device"][0])
    distribution.verify("chain", otp, source="net", client=clients["rp"][0])   # still unused


def test_distribution_unknown_and_pending_accounts(admin, distribution, clients, store):
    admin.add_authority(1)
    admin.add_account("pending", "hashchain", authorities=(1,))
    for account in ("nobody", "pending"):
        with pytest.raises(InvalidToken):
            distribution.verify(account, "00" * 32, source="t")
    outcomes = [e.outcome for e in store.audit_entries()][-2:]
    assert outcomes == ["rejected:unknown-account", "rejected:ceremony-pending"]


# -- lockout ---------------------------------------------------------------------------------
def test_distribution_lockout_and_unlock(admin, distribution, clients, store, clock):
    otp, _ = request(distribution, clients)
    for _ in range(3):
        with pytest.raises(InvalidToken):
            distribution.verify("chain", "ab" * 32, source="t")
    assert store.account("chain").locked_at(clock())
    with pytest.raises(InvalidToken):        # the right OTP is refused while locked
        distribution.verify("chain", otp, source="t")
    assert list(store.audit_entries())[-1].outcome == "rejected:locked"
    admin.unlock("chain")
    distribution.verify("chain", otp, source="t")


def test_distribution_success_does_not_reset_failures(distribution, clients, store):
    with pytest.raises(InvalidToken):
        distribution.verify("chain", "ab" * 32, source="t")
    assert store.account("chain").failures == 1
    otp, _ = request(distribution, clients)
    distribution.verify("chain", otp, source="t")
    assert store.account("chain").failures == 1


# -- batches and concurrency --------------------------------------------------------------------
def test_distribution_verify_many_two_copies_one_accept(distribution, clients, store):
    a, _ = request(distribution, clients)
    b, _ = request(distribution, clients)
    items = [VerifyItem("chain", a, "net"), VerifyItem("chain", a, "net"),
             VerifyItem("chain", b, "net"), VerifyItem("chain", "x", "net")]
    assert distribution.verify_many(items) == [True, False, True, False]
    assert [e.outcome for e in store.audit_entries() if e.event == "verify"] == [
        "accepted", "rejected:wrong-expired-or-used", "accepted", "rejected:format"]
    assert distribution.verify_many([]) == []


def test_distribution_concurrent_verification_accepts_once(distribution, clients):
    otp, _ = request(distribution, clients)
    results, barrier = [], threading.Barrier(12)

    def worker():
        barrier.wait()
        try:
            distribution.verify("chain", otp, source="thread")
            results.append(True)
        except InvalidToken:
            results.append(False)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 11 + [True]


def test_distribution_audit_has_no_otp(distribution, clients, store):
    otp, _ = request(distribution, clients)
    distribution.verify("chain", otp, source="t")
    text = repr(list(store.audit_entries()))
    assert otp not in text and otp.upper() not in text
    assert base64.b64encode(bytes.fromhex(otp)).decode() not in text
    assert store.verify_audit().ok


def test_admin_account_needs_registered_authorities(admin):
    from otpfast.errors import InvalidParameter
    with pytest.raises(InvalidParameter) as exc:
        admin.add_account("x", "hotp", authorities=(7,))
    assert exc.value.field == "authorities"
