"""The admin's everyday tools (issue 10 item 6): clients and authorities listed, deleted and
rotated, account deletion revoking its clients, any created authority id in a ceremony, the
audit log read with its peer addresses and refusal reasons, hash chains' uses left."""
import hashlib

import pytest

from otpfast import phrase
from otpfast.errors import InvalidParameter, InvalidToken, Refused
from otpfast.hotp import HOTP
from otpfast.services import audit, credentials, masking
from otpfast.services.admin import describe
from otpfast.services.keyserver import encrypt_phrase

from otpfast.services.admin import Admin
from otpfast.services.distribution import Distribution
from otpfast.store import SQLiteStore, new_key

from .conftest import FakeClock

BINDING = hashlib.sha256(b"the server certificate").digest()


def _request(distribution, client, account):
    issued = distribution.request(client, account)
    return masking.unmask(client.session_key, account, issued.nonce, issued.masked,
                          issued.expires_at_ms)


def _audit(admin, **filters):
    return list(admin.audit_entries(**filters))


def test_admin_tools_client_list_describes_without_credentials(admin):
    admin.add_account("alice", "hotp")
    admin.add_client("phone", account="alice")
    admin.add_client("vpn", verifier=True)
    listed = [(c.name, c.account, c.verifier) for c in admin.clients()]
    assert listed == [("phone", "alice", False), ("vpn", None, True)]


def test_admin_tools_client_rotate_old_credential_stops_at_once(admin, distribution):
    admin.add_account("alice", "hotp")
    old = admin.add_client("phone", account="alice")
    session = distribution.login("phone", old)
    new = admin.rotate_client("phone")
    assert new != old and len(new) == 43
    with pytest.raises(Refused):
        distribution.login("phone", old)
    with pytest.raises(Refused):          # a session opened with the old credential too
        distribution.request(session, "alice")
    fresh = distribution.login("phone", new)
    assert (fresh.account, fresh.verifier) == ("alice", False)
    assert _request(distribution, fresh, "alice").isdigit()
    distribution.flush_refusals(everything=True)
    outcomes = [e["outcome"] for e in _audit(admin, result="refused")]
    assert outcomes == [audit.BAD_PROOF, audit.REVOKED]
    assert [e["event"] for e in _audit(admin, result="client-rotated")] == ["admin"]
    assert admin.store.verify_audit().ok
    with pytest.raises(InvalidParameter) as info:
        admin.rotate_client("nobody")
    assert info.value.field == "name"


def test_admin_tools_client_delete(admin, distribution):
    admin.add_account("alice", "hotp")
    credential = admin.add_client("vpn", verifier=True)
    admin.delete_client("vpn")
    assert admin.clients() == []
    with pytest.raises(Refused):
        distribution.login("vpn", credential)
    with pytest.raises(InvalidParameter):
        admin.delete_client("vpn")
    assert admin.store.verify_audit().ok


def test_admin_tools_account_delete_revokes_its_clients(admin, distribution):
    admin.add_account("alice", "hotp")
    phone = admin.add_client("phone", account="alice")
    admin.add_client("vpn", verifier=True)
    admin.add_account("bob", "hotp")
    admin.add_client("bob-phone", account="bob")
    session = distribution.login("phone", phone)
    assert admin.delete("alice") == ["phone"]
    assert [c.name for c in admin.clients()] == ["bob-phone", "vpn"]
    # a new account of the same name is not served to the old device
    admin.add_account("alice", "hotp")
    with pytest.raises(Refused):
        distribution.login("phone", phone)
    with pytest.raises(Refused):
        distribution.request(session, "alice")
    entries = _audit(admin, account="alice", result="client-deleted")
    assert [(e["event"], e["client"]) for e in entries] == [("admin", "phone")]
    assert admin.store.verify_audit().ok


def test_admin_tools_authority_list_and_delete(admin, keyserver):
    credential = admin.add_authority(1)
    admin.add_authority(6)
    admin.add_account("carol", "hotp", authorities=[6])
    assert [a.id for a in admin.authorities()] == [1, 6]
    with pytest.raises(InvalidParameter) as info:
        admin.delete_authority(6)                 # carol still waits for it
    assert info.value.field == "id" and "carol" in info.value.message
    admin.delete_authority(1)
    assert [a.id for a in admin.authorities()] == [6]
    ex = credentials.Exchange(credentials.AUTHORITY, "1", credentials.new_nonce(),
                              credentials.new_nonce(), BINDING)
    with pytest.raises(Refused):
        keyserver.authenticate(ex, credentials.prove(credential, ex)[0], source="192.0.2.1")
    assert _audit(admin, result="refused")[-1]["outcome"] == audit.UNKNOWN_PRINCIPAL
    with pytest.raises(InvalidParameter):
        admin.delete_authority(1)
    assert admin.store.verify_audit().ok


def _authority_login(keyserver, authority_id, credential, source):
    ex = credentials.Exchange(credentials.AUTHORITY, str(authority_id), credentials.new_nonce(),
                              credentials.new_nonce(), BINDING)
    proof, _ = credentials.prove(credential, ex)
    return keyserver.authenticate(ex, proof, source=source)


def test_admin_tools_ceremony_with_authorities_6_and_7(admin, keyserver, distribution):
    creds = {i: admin.add_authority(i) for i in (6, 7)}
    admin.add_account("carol", "hotp", authorities=[6, 7])
    pem = keyserver.public_key_pem()
    for i in (6, 7):
        secret = phrase.secret_phrase(i, 1000 + i)
        assert secret.algorithm == phrase.OTHER_HASH
        info = _authority_login(keyserver, i, creds[i], f"192.0.2.{i}")
        receipt = keyserver.contribute(info, "carol", encrypt_phrase(pem, secret.data, "carol", i))
        assert receipt.remaining == (1 if i == 6 else 0)
    record = admin.account("carol")
    assert record.state == "active" and record.authorities == (6, 7)
    otp = HOTP(bytes.fromhex(record.material["key"])).generate(0)
    distribution.verify("carol", otp, source="192.0.2.50")
    sources = [(e["event"], e["source"]) for e in _audit(admin, account="carol")
               if e["event"] != "admin"]
    assert sources == [("contribute", "192.0.2.6"), ("contribute", "192.0.2.7"),
                       ("ceremony-complete", "192.0.2.7"), ("verify", "192.0.2.50")]


def test_admin_tools_audit_list_filters_with_source_and_reason(admin, distribution, clock):
    admin.add_account("alice", "hotp", lockout=3)
    phone = admin.add_client("phone", account="alice")
    with pytest.raises(InvalidToken):
        distribution.verify("alice", "000000x", source="198.51.100.1")
    middle = clock() + 10
    clock.advance(20)
    with pytest.raises(InvalidToken):
        distribution.verify("alice", "123456", source="198.51.100.2")
    with pytest.raises(InvalidToken):
        distribution.verify("alice", "654321", source="198.51.100.3")
    session = distribution.login("phone", phone)
    with pytest.raises(Refused):
        distribution.request(session, "bob")
    distribution.flush_refusals(everything=True)
    rejected = _audit(admin, account="alice", result="rejected")
    assert [(e["source"], e["outcome"]) for e in rejected] == [
        ("198.51.100.1", audit.BAD_FORMAT), ("198.51.100.2", audit.NO_MATCH),
        ("198.51.100.3", audit.NO_MATCH)]
    assert [e["source"] for e in _audit(admin, account="alice", since=middle,
                                        result="rejected")] == ["198.51.100.2", "198.51.100.3"]
    assert [e["outcome"] for e in _audit(admin, account="bob")] == [audit.REQUEST_NOT_AUTHORISED]
    every = _audit(admin)
    assert every and all(e["intact"] for e in every)
    assert set(every[0]) == {"seq", "time", "epoch", "event", "account", "client", "source",
                             "outcome", "intact"}
    with pytest.raises(InvalidToken):           # locked now: the reason is in the log only
        distribution.verify("alice", "111111", source="198.51.100.4")
    assert _audit(admin, account="alice")[-1]["outcome"] == audit.LOCKED


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_admin_tools_lists_flag_edited_rows(admin, distribution):
    admin.add_account("alice", "hotp")
    admin.add_client("phone", account="alice")
    admin.add_client("vpn", verifier=True)
    admin.add_authority(3)
    conn = admin.store._conn()
    conn.execute("UPDATE clients SET verifier = 1, account = NULL WHERE name = 'phone'")
    conn.execute("UPDATE authorities SET created_at = 1 WHERE id = 3")
    conn.execute("UPDATE audit SET source = 'elsewhere' WHERE seq = 2")
    assert [c.name for c in admin.clients()] == ["vpn"]      # refused, as a login refuses it
    assert admin.authorities() == []
    assert [e["seq"] for e in _audit(admin) if not e["intact"]] == [2]   # the next chains on
    with pytest.raises(InvalidParameter):
        admin.delete_client("phone")


def test_admin_tools_hash_chain_uses_left_and_exhaustion(admin, distribution, clock):
    admin.add_account("chain", "hashchain", chain_length=2)
    phone = distribution.login("phone", admin.add_client("phone", account="chain"))
    assert describe(admin.account("chain"), clock())["uses_left"] == 2
    otps = [_request(distribution, phone, "chain") for _ in range(2)]
    assert describe(admin.account("chain"), clock())["uses_left"] == 0
    with pytest.raises(Refused) as refused:
        distribution.request(phone, "chain")
    assert str(refused.value) == ""                     # the reply stays generic
    for otp in otps:                                    # issued ones still verify
        distribution.verify("chain", otp, source="cli")
    with pytest.raises(InvalidToken) as rejected:
        distribution.verify("chain", otps[-1], source="cli")
    assert str(rejected.value) == ""
    distribution.flush_refusals(everything=True)
    outcomes = [e["outcome"] for e in _audit(admin, account="chain") if e["event"] != "admin"]
    assert outcomes == ["issued", "issued", audit.REQUEST_EXHAUSTED, "accepted", "accepted",
                        audit.EXHAUSTED]


def test_admin_tools_describe_other_types_have_no_uses_left(admin):
    admin.add_account("t", "totp")
    assert "uses_left" not in describe(admin.account("t"), FakeClock()())


def test_admin_tools_verifier_session_ends_with_rotation_and_deletion(admin, distribution):
    admin.add_account("alice", "hotp")
    key = bytes.fromhex(admin.account("alice").material["key"])
    rp = distribution.login("rp", admin.add_client("rp", verifier=True))
    distribution.verify("alice", HOTP(key).generate(0), source="192.0.2.1", client=rp)
    fresh = distribution.login("rp", admin.rotate_client("rp"))
    with pytest.raises(InvalidToken):      # the session of the old credential: refused
        distribution.verify("alice", HOTP(key).generate(1), source="192.0.2.1", client=rp)
    distribution.verify("alice", HOTP(key).generate(1), source="192.0.2.1", client=fresh)
    admin.delete_client("rp")
    with pytest.raises(InvalidToken):
        distribution.verify("alice", HOTP(key).generate(2), source="192.0.2.1", client=fresh)
    distribution.flush_refusals(everything=True)
    assert [e["outcome"] for e in _audit(admin, account="alice") if e["event"] == "verify"] == [
        "accepted", audit.REVOKED, "accepted", audit.REVOKED]


def test_admin_tools_new_account_revokes_devices_left_by_an_old_deletion(admin, distribution):
    """A store where an account was deleted before deletion revoked its clients: the new
    account of that name does not inherit the old device."""
    admin.add_account("alice", "hotp")
    phone = admin.add_client("phone", account="alice")
    with admin.store.transaction() as tx:        # what `account delete` used to do
        tx.delete_account("alice")
        tx.audit(1.0, "admin", "alice", "-", "cli", "account-deleted")
    admin.add_account("alice", "hotp")
    assert admin.clients() == []
    with pytest.raises(Refused):
        distribution.login("phone", phone)
    assert admin.store.verify_audit().ok


def test_admin_tools_deleted_authority_session_contributes_nothing(admin, keyserver):
    credential = admin.add_authority(6)
    admin.add_authority(7)
    admin.add_account("carol", "hotp", authorities=[7])
    admin.add_account("dave", "hotp", authorities=[6])
    info = _authority_login(keyserver, 6, credential, "192.0.2.6")
    admin.delete("dave")
    admin.delete_authority(6)
    admin.add_account("erin", "hotp", authorities=[7])
    with pytest.raises(Refused):
        keyserver.contribute(info, "carol", b"x")
    assert _audit(admin, result="refused")[-1]["outcome"] == audit.REVOKED



def test_admin_tools_rotation_by_another_process_ends_the_session(tmp_path):
    """The verify path keeps the clients it read (SQLite: until another connection commits):
    a rotation or deletion written by another process (another store on the same database)
    still ends the old session at its next batch."""
    path, head, key = str(tmp_path / "store.db"), str(tmp_path / "audit.head"), new_key()
    store = SQLiteStore(path, key, head_path=head, create=True)
    admin, distribution = Admin(store, clock=FakeClock()), Distribution(store, clock=FakeClock())
    admin.add_account("alice", "hotp")
    secret = bytes.fromhex(admin.account("alice").material["key"])
    rp = distribution.login("rp", admin.add_client("rp", verifier=True))
    distribution.verify("alice", HOTP(secret).generate(0), source="192.0.2.1", client=rp)
    for counter, change in ((1, "rotate_client"), (2, "delete_client")):
        other = SQLiteStore(path, key, head_path=head)
        try:
            getattr(Admin(other, clock=FakeClock()), change)("rp")
        finally:
            other.close()
        with pytest.raises(InvalidToken):       # the right OTP, from a revoked session
            distribution.verify("alice", HOTP(secret).generate(counter), source="192.0.2.1", client=rp)
        if change == "rotate_client":           # the new credential's session verifies
            rp = distribution.login("rp", admin.rotate_client("rp"))
            distribution.verify("alice", HOTP(secret).generate(counter), source="192.0.2.1", client=rp)
    distribution.flush_refusals(everything=True)
    assert [e["outcome"] for e in _audit(admin, account="alice") if e["event"] == "verify"] == [
        "accepted", audit.REVOKED, "accepted", audit.REVOKED]
    store.close()
