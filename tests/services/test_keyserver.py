import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from otpfast import phrase
from otpfast.errors import Refused
from otpfast.services import derivation
from otpfast.services.keyserver import KeyServer, encrypt_phrase
from otpfast.store import ACCOUNT_ACTIVE, ACCOUNT_PENDING

AUTHORITIES = (1, 2, 3, 4)


def independent_secret(account, phrases, contributions, iterations):
    """The token secret recomputed from the phrases, without otpfast's derivation code."""
    ikm = b"".join(
        hashlib.pbkdf2_hmac("sha256", phrases[c.authority_id], c.salt, iterations, 32)
        for c in sorted(contributions, key=lambda c: c.authority_id))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"otpfast ceremony v1",
                info=b"otpfast token secret\0" + account.encode()).derive(ikm)


def material_key(secret, label, length):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=b"otpfast material v1",
                info=b"otpfast " + label).derive(secret)


@pytest.fixture
def authorities(admin):
    return {i: admin.add_authority(i) for i in AUTHORITIES}


@pytest.fixture
def phrases():
    out = {}
    for i, value in zip(AUTHORITIES, (11, 22, 33, 44)):
        p = phrase.secret_phrase(i, value)
        out[i] = p.data
    assert [len(out[i]) for i in AUTHORITIES] == [32, 64, 48, 64]   # sha256/512/384/512
    return out


def run_ceremony(keyserver, authorities, phrases, account, order=AUTHORITIES):
    pem = keyserver.public_key_pem()
    receipts, ciphertexts = {}, {}
    for i in order:
        ciphertexts[i] = encrypt_phrase(pem, phrases[i])
        receipts[i] = keyserver.contribute(account, i, authorities[i], ciphertexts[i])
    return receipts, ciphertexts


@pytest.mark.parametrize("order", [AUTHORITIES, (3, 1, 4, 2)], ids=["in-order", "shuffled"])
def test_keyserver_ceremony_four_authorities(keyserver, admin, store, authorities, phrases, order):
    admin.add_account("alice", "totp", authorities=AUTHORITIES)
    assert store.account("alice").state == ACCOUNT_PENDING
    receipts, ciphertexts = run_ceremony(keyserver, authorities, phrases, "alice", order)
    record = store.account("alice")
    assert record.state == ACCOUNT_ACTIVE
    contributions = store.contributions("alice")
    assert len({c.salt for c in contributions}) == 4     # one salt per record
    secret = independent_secret("alice", phrases, contributions, keyserver.iterations)
    assert record.material == {"key": material_key(secret, b"hotp key", 20).hex()}
    # receipts: each binds its ciphertext; the last one is the transcript binding all
    ct_hash = {i: hashlib.sha256(ciphertexts[i]).digest() for i in AUTHORITIES}
    transcript = hashlib.sha256(b"otpfast transcript v1\0alice\0" + b"".join(
        struct.pack(">I", i) + ct_hash[i] for i in AUTHORITIES)).digest()
    assert receipts[order[-1]] == transcript == record.transcript
    for i in order[:-1]:
        assert receipts[i] == hashlib.sha256(b"otpfast receipt v1\0alice\0" + struct.pack(">I", i)
                                             + ct_hash[i]).digest()
    assert store.verify_audit().ok


def test_keyserver_same_contributions_same_secret(keyserver, store):
    digests = [hashlib.sha256(bytes([i])).digest() for i in range(4)]
    assert derivation.token_secret("a", digests) == derivation.token_secret("a", list(digests))
    assert derivation.token_secret("a", digests) != derivation.token_secret("b", digests)
    assert derivation.token_secret("a", digests) != derivation.token_secret("a", digests[::-1])


def test_keyserver_hashchain_ceremony(keyserver, admin, store, authorities, phrases):
    admin.add_account("chain", "hashchain", authorities=(2, 4), chain_length=5)
    run_ceremony(keyserver, authorities, phrases, "chain", order=(4, 2))
    record = store.account("chain")
    secret = independent_secret("chain", phrases, store.contributions("chain"), keyserver.iterations)
    seed = material_key(secret, b"hashchain seed", 32)
    assert record.material == {"seed": seed.hex()}
    anchor = seed
    for _ in range(5):
        anchor = hashlib.sha256(anchor).digest()
    assert record.chain_last == anchor


def test_keyserver_default_iterations_at_least_600k(store, rsa_key):
    assert KeyServer(store, rsa_key).iterations >= 600_000 == derivation.DEFAULT_ITERATIONS


def test_keyserver_public_key_is_pem(keyserver):
    pem = keyserver.public_key_pem()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")


# -- refusals: one generic error, nothing changes -------------------------------------------
def _pkcs1v15(pem, data):
    from cryptography.hazmat.primitives import serialization
    return serialization.load_pem_public_key(pem).encrypt(data, padding.PKCS1v15())


REFUSALS = {
    "unknown-authority": lambda ks, creds, ph: ("alice", 9, creds[1], ph(1)),
    "wrong-credential": lambda ks, creds, ph: ("alice", 1, creds[2], ph(1)),
    "empty-credential": lambda ks, creds, ph: ("alice", 1, b"", ph(1)),
    "no-credential": lambda ks, creds, ph: ("alice", 1, None, ph(1)),
    "ciphertext-not-bytes": lambda ks, creds, ph: ("alice", 1, creds[1], "text"),
    "unknown-account": lambda ks, creds, ph: ("nobody", 1, creds[1], ph(1)),
    "account-without-ceremony": lambda ks, creds, ph: ("direct", 1, creds[1], ph(1)),
    "authority-not-named": lambda ks, creds, ph: ("alice", 4, creds[4], ph(4)),
    "second-contribution": lambda ks, creds, ph: ("alice", 2, creds[2], ph(2)),
    "garbage-ciphertext": lambda ks, creds, ph: ("alice", 1, creds[1], b"\x00" * 256),
    "pkcs1v15-ciphertext": lambda ks, creds, ph: (
        "alice", 1, creds[1], _pkcs1v15(ks.public_key_pem(), b"phrase")),
    "other-server-key": lambda ks, creds, ph: (
        "alice", 1, creds[1], rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key().encrypt(b"phrase", padding.OAEP(padding.MGF1(hashes.SHA256()),
                                                       hashes.SHA256(), None))),
    "authority-id-not-int": lambda ks, creds, ph: ("alice", "1", creds[1], ph(1)),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_keyserver_refusals(case, keyserver, admin, store, authorities, phrases, state_of):
    admin.add_account("alice", "hotp", authorities=(1, 2, 3))
    admin.add_account("direct", "hotp")
    pem = keyserver.public_key_pem()
    keyserver.contribute("alice", 2, authorities[2], encrypt_phrase(pem, phrases[2]))
    before = state_of(store)
    audit_before = len(list(store.audit_entries()))
    args = REFUSALS[case](keyserver, authorities, lambda i: encrypt_phrase(pem, phrases[i]))
    with pytest.raises(Refused) as info:
        keyserver.contribute(*args)
    assert str(info.value) == ""
    assert state_of(store) == before
    entries = list(store.audit_entries())
    assert len(entries) == audit_before + 1 and entries[-1].outcome == "refused"
    assert store.verify_audit().ok


def test_keyserver_refuses_after_completion(keyserver, admin, store, authorities, phrases,
                                            state_of):
    admin.add_account("alice", "hotp", authorities=(1,))
    run_ceremony(keyserver, authorities, phrases, "alice", order=(1,))
    before = state_of(store)
    with pytest.raises(Refused):
        keyserver.contribute("alice", 1, authorities[1],
                             encrypt_phrase(keyserver.public_key_pem(), phrases[1]))
    assert state_of(store) == before


def test_keyserver_audit_holds_no_secret(keyserver, admin, store, authorities, phrases):
    admin.add_account("alice", "hotp", authorities=(1, 2))
    run_ceremony(keyserver, authorities, phrases, "alice", order=(1, 2))
    text = repr(list(store.audit_entries()))
    for secret in list(phrases.values()) + [c.encode() for c in authorities.values()]:
        assert secret.hex() not in text and repr(secret)[2:-1] not in text
