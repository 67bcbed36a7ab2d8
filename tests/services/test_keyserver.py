import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from otpfast import phrase
from otpfast.errors import Refused
from otpfast.services import credentials, derivation
from otpfast.services.keyserver import KeyServer, check_receipt, check_transcript, encrypt_phrase
from otpfast.store import ACCOUNT_ACTIVE, ACCOUNT_PENDING

AUTHORITIES = (1, 2, 3, 4)


def independent_secret(account, phrases, salts, iterations):
    """The token secret recomputed from the phrases, without otpfast's derivation code."""
    ikm = b"".join(hashlib.pbkdf2_hmac("sha256", phrases[i], salts[i], iterations, 32)
                   for i in sorted(salts))
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


@pytest.fixture
def salts(monkeypatch):
    """The salt of each phrase, recorded as the key server draws it (the store forgets it)."""
    recorded = {}
    digest = derivation.contribution_digest

    def spy(phrase_data, salt, iterations):
        recorded[phrase_data] = salt
        return digest(phrase_data, salt, iterations)
    monkeypatch.setattr(derivation, "contribution_digest", spy)
    return recorded


BINDING = hashlib.sha256(b"the server certificate").digest()


def exchange(authority_id, binding=BINDING, kind=credentials.AUTHORITY):
    return credentials.Exchange(kind, str(authority_id), credentials.new_nonce(),
                                credentials.new_nonce(), binding)


def login(keyserver, authority_id, credential):
    ex = exchange(authority_id)
    proof, session_key = credentials.prove(credential, ex)
    info = keyserver.authenticate(ex, proof)
    assert info.authority_id == authority_id and info.session_key == session_key
    return info


def run_ceremony(keyserver, authorities, phrases, account, order=AUTHORITIES):
    pem = keyserver.public_key_pem()
    receipts, ciphertexts = {}, {}
    for i in order:
        ciphertexts[i] = encrypt_phrase(pem, phrases[i], account, i)
        receipts[i] = keyserver.contribute(login(keyserver, i, authorities[i]), account,
                                           ciphertexts[i])
    return receipts, ciphertexts


@pytest.mark.parametrize("order", [AUTHORITIES, (3, 1, 4, 2)], ids=["in-order", "shuffled"])
def test_keyserver_ceremony_four_authorities(keyserver, admin, store, authorities, phrases, salts,
                                             order):
    admin.add_account("alice", "totp", authorities=AUTHORITIES)
    assert store.account("alice").state == ACCOUNT_PENDING
    receipts, ciphertexts = run_ceremony(keyserver, authorities, phrases, "alice", order)
    record = store.account("alice")
    assert record.state == ACCOUNT_ACTIVE
    assert len({salts[phrases[i]] for i in AUTHORITIES}) == 4     # one salt per record
    secret = independent_secret("alice", phrases, {i: salts[phrases[i]] for i in AUTHORITIES},
                                keyserver.iterations)
    assert record.material == {"key": material_key(secret, b"hotp key", 20).hex()}
    assert [receipts[i].remaining for i in order] == [3, 2, 1, 0]
    # receipts: each binds its ciphertext and is signed by the key server
    pem = keyserver.public_key_pem()
    ct_hash = {i: hashlib.sha256(ciphertexts[i]).digest() for i in AUTHORITIES}
    for i in order:
        assert receipts[i].receipt == hashlib.sha256(
            b"otpfast receipt v1\0alice\0" + struct.pack(">I", i) + ct_hash[i]).digest()
        assert check_receipt(pem, "alice", i, ciphertexts[i], receipts[i].receipt,
                             receipts[i].signature)
    # every authority receives the signed transcript, binding every ciphertext
    transcript = hashlib.sha256(b"otpfast transcript v1\0alice\0" + b"".join(
        struct.pack(">I", i) + ct_hash[i] for i in AUTHORITIES)).digest()
    assert record.transcript == transcript
    for i in AUTHORITIES:
        got, signature = keyserver.transcript(login(keyserver, i, authorities[i]), "alice")
        assert got == transcript and check_transcript(pem, "alice", got, signature)
    assert store.verify_audit().ok


def test_keyserver_deletes_digests_when_the_account_completes(keyserver, admin, store, authorities,
                                                              phrases):
    """Finding 10: the digests (with the at-rest key, the secret) are gone after completion."""
    admin.add_account("alice", "hotp", authorities=(1, 2))
    run_ceremony(keyserver, authorities, phrases, "alice", order=(1,))
    assert [c.authority_id for c in store.contributions("alice")] == [1]
    run_ceremony(keyserver, authorities, phrases, "alice", order=(2,))
    assert store.contributions("alice") == []
    assert store._conn().execute("SELECT count(*) FROM contributions").fetchone()[0] == 0
    assert store.account("alice").state == ACCOUNT_ACTIVE


def test_keyserver_signatures_fail_when_altered(keyserver, admin, authorities, phrases, rsa_key):
    admin.add_account("alice", "hotp", authorities=(1, 2))
    receipts, ciphertexts = run_ceremony(keyserver, authorities, phrases, "alice", order=(1, 2))
    pem = keyserver.public_key_pem()
    r = receipts[1]
    flipped = bytes([r.signature[0] ^ 1]) + r.signature[1:]
    assert check_receipt(pem, "alice", 1, ciphertexts[1], r.receipt, r.signature)
    assert not check_receipt(pem, "alice", 1, ciphertexts[1], r.receipt, flipped)
    assert not check_receipt(pem, "alice", 2, ciphertexts[1], r.receipt, r.signature)
    assert not check_receipt(pem, "alice", 1, ciphertexts[2], r.receipt, r.signature)
    # the receipt alone (a hash the authority could compute) is not accepted without the signature
    assert not check_receipt(pem, "alice", 1, ciphertexts[1], r.receipt, r.receipt)
    transcript, signature = keyserver.transcript(login(keyserver, 1, authorities[1]), "alice")
    assert check_transcript(pem, "alice", transcript, signature)
    assert not check_transcript(pem, "alice", bytes(32), signature)
    assert not check_transcript(pem, "bob", transcript, signature)
    assert not check_transcript(pem, "alice", transcript, signature[:-1] + bytes([signature[-1] ^ 1]))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = KeyServer(keyserver.store, other)._sign(b"otpfast signed transcript v2\0alice\0" + transcript)
    assert not check_transcript(pem, "alice", transcript, forged)


def test_keyserver_transcript_refused_while_pending_or_to_others(keyserver, admin, authorities,
                                                                 phrases):
    admin.add_account("alice", "hotp", authorities=(1, 2))
    run_ceremony(keyserver, authorities, phrases, "alice", order=(1,))
    with pytest.raises(Refused):
        keyserver.transcript(login(keyserver, 1, authorities[1]), "alice")
    run_ceremony(keyserver, authorities, phrases, "alice", order=(2,))
    with pytest.raises(Refused):
        keyserver.transcript(login(keyserver, 3, authorities[3]), "alice")
    with pytest.raises(Refused):
        keyserver.transcript(login(keyserver, 1, authorities[1]), "nobody")


def test_keyserver_same_contributions_same_secret(keyserver, store):
    digests = [hashlib.sha256(bytes([i])).digest() for i in range(4)]
    assert derivation.token_secret("a", digests) == derivation.token_secret("a", list(digests))
    assert derivation.token_secret("a", digests) != derivation.token_secret("b", digests)
    assert derivation.token_secret("a", digests) != derivation.token_secret("a", digests[::-1])


def test_keyserver_hashchain_ceremony(keyserver, admin, store, authorities, phrases, salts):
    admin.add_account("chain", "hashchain", authorities=(2, 4), chain_length=5)
    run_ceremony(keyserver, authorities, phrases, "chain", order=(4, 2))
    record = store.account("chain")
    secret = independent_secret("chain", phrases, {i: salts[phrases[i]] for i in (2, 4)},
                                keyserver.iterations)
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


def _unlabelled(pem, data):   # protocol v1's OAEP, no label
    from cryptography.hazmat.primitives import serialization
    return serialization.load_pem_public_key(pem).encrypt(
        data, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))


# (authority that sends, account, ciphertext(pem, phrases))
REFUSALS = {
    "ciphertext-not-bytes": (1, "alice", lambda pem, ph: "text"),
    "unknown-account": (1, "nobody", lambda pem, ph: encrypt_phrase(pem, ph[1], "nobody", 1)),
    "account-without-ceremony": (1, "direct", lambda pem, ph: encrypt_phrase(pem, ph[1], "direct", 1)),
    "authority-not-named": (4, "alice", lambda pem, ph: encrypt_phrase(pem, ph[4], "alice", 4)),
    "second-contribution": (2, "alice", lambda pem, ph: encrypt_phrase(pem, ph[2], "alice", 2)),
    "garbage-ciphertext": (1, "alice", lambda pem, ph: b"\x00" * 256),
    "pkcs1v15-ciphertext": (1, "alice", lambda pem, ph: _pkcs1v15(pem, ph[1])),
    "unlabelled-oaep": (1, "alice", lambda pem, ph: _unlabelled(pem, ph[1])),
    "other-server-key": (1, "alice", lambda pem, ph: _unlabelled(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
            *_PEM_ARGS), ph[1])),
    # finding 10: authority 3 submits authority 1's ciphertext as its own
    "other-authoritys-ciphertext": (3, "alice", lambda pem, ph: encrypt_phrase(pem, ph[1], "alice", 1)),
    # finding 10: a ciphertext made for another account
    "ciphertext-of-another-account": (1, "alice", lambda pem, ph: encrypt_phrase(pem, ph[1], "bob", 1)),
    # finding 10: an empty phrase
    "empty-phrase": (1, "alice", lambda pem, ph: encrypt_phrase(pem, b"", "alice", 1)),
}


def _pem_args():
    from cryptography.hazmat.primitives import serialization
    return serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo


_PEM_ARGS = _pem_args()


class CountingKey:
    """The key server's RSA key, counting decryptions."""

    def __init__(self, key):
        self._key = key
        self.decryptions = 0

    def decrypt(self, *args):
        self.decryptions += 1
        return self._key.decrypt(*args)

    def __getattr__(self, name):
        return getattr(self._key, name)


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_keyserver_refusals(case, store, clock, rsa_key, admin, authorities, phrases, state_of):
    key = CountingKey(rsa_key)
    keyserver = KeyServer(store, key, iterations=1000, clock=clock)
    admin.add_account("alice", "hotp", authorities=(1, 2, 3))
    admin.add_account("bob", "hotp", authorities=(1, 2))
    admin.add_account("direct", "hotp")
    pem = keyserver.public_key_pem()
    run_ceremony(keyserver, authorities, phrases, "alice", order=(2,))
    sender, account, make = REFUSALS[case]
    info = login(keyserver, sender, authorities[sender])
    ciphertext = make(pem, phrases)
    before = state_of(store)
    audit_before = len(list(store.audit_entries()))
    decryptions = key.decryptions
    with pytest.raises(Refused) as refused:
        keyserver.contribute(info, account, ciphertext)
    assert str(refused.value) == ""
    assert state_of(store) == before
    entries = list(store.audit_entries())
    assert len(entries) == audit_before + 1 and entries[-1].outcome.startswith("refused:")
    assert store.verify_audit().ok
    if case in ("unknown-account", "account-without-ceremony", "authority-not-named",
                "second-contribution", "ciphertext-not-bytes"):
        assert key.decryptions == decryptions        # refused before any RSA work


AUTH_REFUSALS = {
    "unknown-authority": lambda creds: (exchange(9), creds[1]),
    "wrong-credential": lambda creds: (exchange(1), creds[2]),
    "not-a-number": lambda creds: (exchange("one"), creds[1]),
    "a-client-principal": lambda creds: (exchange(1, kind=credentials.CLIENT), creds[1]),
}


@pytest.mark.parametrize("case", sorted(AUTH_REFUSALS))
def test_keyserver_authentication_refusals(case, keyserver, store, authorities, state_of):
    ex, credential = AUTH_REFUSALS[case](authorities)
    proof, _ = credentials.prove(credential, ex)
    before = state_of(store)
    with pytest.raises(Refused):
        keyserver.authenticate(ex, proof)
    assert state_of(store) == before
    assert list(store.audit_entries())[-1].outcome in ("refused:unknown-principal",
                                                       "refused:wrong-credential")


def test_keyserver_relayed_proof_refused(keyserver, authorities):
    """A proof made for a relay's certificate does not authenticate at the real server."""
    relay = exchange(1, binding=hashlib.sha256(b"the relay's certificate").digest())
    proof, _ = credentials.prove(authorities[1], relay)
    real = credentials.Exchange(relay.kind, relay.principal, relay.client_nonce, relay.server_nonce,
                                BINDING)
    with pytest.raises(Refused):
        keyserver.authenticate(real, proof)


def test_keyserver_refuses_after_completion(keyserver, admin, store, authorities, phrases,
                                            state_of):
    admin.add_account("alice", "hotp", authorities=(1,))
    run_ceremony(keyserver, authorities, phrases, "alice", order=(1,))
    before = state_of(store)
    with pytest.raises(Refused):
        keyserver.contribute(login(keyserver, 1, authorities[1]), "alice",
                             encrypt_phrase(keyserver.public_key_pem(), phrases[1], "alice", 1))
    assert state_of(store) == before


def test_keyserver_audit_holds_no_secret(keyserver, admin, store, authorities, phrases):
    admin.add_account("alice", "hotp", authorities=(1, 2))
    run_ceremony(keyserver, authorities, phrases, "alice", order=(1, 2))
    text = repr(list(store.audit_entries()))
    for secret in list(phrases.values()) + [c.encode() for c in authorities.values()]:
        assert secret.hex() not in text and repr(secret)[2:-1] not in text


def test_keyserver_authentication_flood_is_throttled_and_aggregated(keyserver, store,
                                                                   authorities, monkeypatch):
    """Finding 4 on the key server: failed authority logins from one source cost a bounded
    number of audit commits (the first few one by one, the rest one aggregate), and past the
    source's budget the proof is not even checked."""
    from otpfast.services import policy, refusals
    checked = []
    real_check = credentials.check_proof
    monkeypatch.setattr(credentials, "check_proof",
                        lambda *args: checked.append(1) or real_check(*args))
    commits = []
    real_transaction = store.transaction
    monkeypatch.setattr(store, "transaction", lambda **kw: commits.append(1) or real_transaction(**kw))
    attempts = int(policy.FAILED_PER_SOURCE.burst) + 200
    for _ in range(attempts):
        ex = exchange(1)
        with pytest.raises(Refused):
            keyserver.authenticate(ex, b"x" * 43, source="198.51.100.9")
    assert len(checked) <= policy.FAILED_PER_SOURCE.burst + 1      # then refused unchecked
    assert len(commits) <= refusals.AGGREGATE_AFTER                 # one commit per single entry
    written = keyserver.flush_refusals(everything=True)
    assert written == 1                                             # the rest: one aggregate
    entries = [e for e in store.audit_entries() if e.source == "198.51.100.9"]
    assert len(entries) == refusals.AGGREGATE_AFTER + 1
    assert entries[-1].outcome.startswith(refusals.AGGREGATED)
