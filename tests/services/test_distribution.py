import base64
import hashlib
import threading

import pytest

from otpfast.errors import InvalidToken, Refused
from otpfast.services import credentials, masking
from otpfast.services.distribution import ClientInfo, VerifyItem


@pytest.fixture
def chain_account(admin):
    admin.add_account("chain", "hashchain", chain_length=20, ttl=300, lockout=3)
    return "chain"


@pytest.fixture
def clients(admin, distribution, chain_account):
    device = admin.add_client("device", account=chain_account)
    relying = admin.add_client("rp", verifier=True)
    return {"device": (distribution.login("device", device), device),
            "rp": (distribution.login("rp", relying), relying)}


def request(distribution, clients, account="chain", who="device"):
    info, _credential = clients[who]
    issued = distribution.request(info, account)
    return masking.unmask(info.session_key, account, issued.nonce, issued.masked,
                          issued.expires_at_ms), issued


def independent_chain(seed_hex, length):
    values = [bytes.fromhex(seed_hex)]
    for _ in range(length):
        values.append(hashlib.sha256(values[-1]).digest())
    return values     # values[k] = h(k)


# -- authentication and masking ---------------------------------------------------------------
BINDING = hashlib.sha256(b"the server certificate").digest()


def exchange(name, binding=BINDING, kind=credentials.CLIENT):
    return credentials.Exchange(kind, name, credentials.new_nonce(), credentials.new_nonce(), binding)


def test_distribution_authenticate(distribution, clients):
    _, credential = clients["device"]
    ex = exchange("device")
    proof, session_key = credentials.prove(credential.encode() + b"\n", ex)
    assert len(proof) == len(credential) and credential.encode() not in proof
    info = distribution.authenticate(ex, proof)
    assert info == ClientInfo("device", "chain", False) and info.session_key == session_key
    assert "session_key" not in repr(info)


def _relayed(credential):
    """A proof made for a relay's certificate, replayed at the real server."""
    relay = exchange("device", binding=hashlib.sha256(b"relay certificate").digest())
    proof, _ = credentials.prove(credential, relay)
    return credentials.Exchange(relay.kind, relay.principal, relay.client_nonce, relay.server_nonce,
                                BINDING), proof


AUTH_REFUSALS = {
    "wrong-credential": lambda creds: (exchange("device"), credentials.prove(creds["rp"][1], exchange("device"))[0]),
    "unknown-client": lambda creds: (exchange("nobody"), b"x" * 43),
    "altered-proof": lambda creds: (exchange("device"), b"\0" * 43),
    "other-nonce": lambda creds: (exchange("device"), credentials.prove(creds["device"][1], exchange("device"))[0]),
    "relayed": lambda creds: _relayed(creds["device"][1]),
    "authority-kind": lambda creds: (exchange("device", kind=credentials.AUTHORITY),
                                     credentials.prove(creds["device"][1], exchange("device", kind=credentials.AUTHORITY))[0]),
    "proof-not-bytes": lambda creds: (exchange("device"), None),
    "empty-proof": lambda creds: (exchange("device"), b""),
}


@pytest.mark.parametrize("case", sorted(AUTH_REFUSALS))
def test_distribution_authenticate_refusals(case, distribution, clients, store, state_of, monkeypatch):
    ex, proof = AUTH_REFUSALS[case](clients)
    noted = []
    monkeypatch.setattr(distribution, "note_refusal", lambda *args: noted.append(args))
    before = state_of(store)
    with pytest.raises(Refused) as exc:
        distribution.authenticate(ex, proof, source="192.0.2.7")
    assert str(exc.value) == ""
    assert state_of(store) == before
    # one refusal noted for the audit log (batched by the throttle), not a transaction here
    assert [(event, client, source, outcome) for _, event, _, client, source, outcome in noted] == [
        ("authenticate", ex.principal, "192.0.2.7",
         "refused:unknown-principal" if case in ("unknown-client", "authority-kind")
         else "refused:wrong-credential")]


def test_distribution_refusal_is_audited(distribution, clients, store):
    with pytest.raises(Refused):
        distribution.authenticate(exchange("device"), b"x" * 43, source="192.0.2.7")
    assert distribution.flush_refusals(everything=True) == 1     # queued, not one commit each
    entry = list(store.audit_entries())[-1]
    assert (entry.event, entry.client, entry.source, entry.outcome) == (
        "authenticate", "device", "192.0.2.7", "refused:wrong-credential")


def test_distribution_request_is_masked_per_session(distribution, clients, store):
    otp, issued = request(distribution, clients)
    assert otp.encode() not in issued.masked
    other_session = distribution.login("device", clients["device"][1])
    for key, account, nonce, masked, expiry in (
            (other_session.session_key, "chain", issued.nonce, issued.masked, issued.expires_at_ms),
            (clients["rp"][0].session_key, "chain", issued.nonce,
             issued.masked, issued.expires_at_ms),
            (clients["device"][0].session_key, "other", issued.nonce, issued.masked, issued.expires_at_ms),
            (clients["device"][0].session_key, "chain", issued.nonce,
             bytes([issued.masked[0] ^ 1]) + issued.masked[1:], issued.expires_at_ms),
            # the expiry is authenticated too: a relay cannot stretch it
            (clients["device"][0].session_key, "chain", issued.nonce, issued.masked,
             issued.expires_at_ms + 3_600_000)):
        with pytest.raises(InvalidToken):
            masking.unmask(key, account, nonce, masked, expiry)


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
    info = distribution.login("dev2", credential)
    for _ in range(2):
        issued = distribution.request(info, "short")
        distribution.verify("short", masking.unmask(info.session_key, "short", issued.nonce,
                                                    issued.masked, issued.expires_at_ms), source="t")
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
    distribution.flush_refusals(everything=True)
    assert list(store.audit_entries())[-1].outcome.startswith("refused:")   # and why


def test_distribution_request_refused_for_pending_totp_and_locked(admin, distribution, store,
                                                                  clients, state_of):
    admin.add_authority(1)
    admin.add_authority(2)
    admin.add_account("pending", "hashchain", authorities=(1, 2))
    admin.add_account("t", "totp")
    for account in ("pending", "t"):
        info = distribution.login(account + "-dev",
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
