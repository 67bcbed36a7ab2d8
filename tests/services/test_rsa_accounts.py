import hashlib
import hmac
import math
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from otpfast import core, phrase, rsaotp, rsaparams
from otpfast.errors import InvalidParameter, InvalidToken
from otpfast.services import derivation, masking
from otpfast.services.derivation import HmacDrbg
from otpfast.services.keyserver import AuthorityInfo, encrypt_phrase


class IndependentDrbg:
    """HMAC-SHA256(HKDF(secret, 'otpfast drbg <label>'), u64 counter) blocks, read in order."""

    def __init__(self, secret, label):
        self.key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"otpfast material v1",
                        info=b"otpfast drbg " + label.encode()).derive(secret)
        self.stream = b""
        self.counter = 0

    def __call__(self, k):
        n = (k + 7) // 8
        while len(self.stream) < n:
            self.stream += hmac.new(self.key, struct.pack(">Q", self.counter),
                                    hashlib.sha256).digest()
            self.counter += 1
        out, self.stream = self.stream[:n], self.stream[n:]
        return int.from_bytes(out, "big") >> (8 * n - k)


def test_drbg_matches_independent_definition():
    secret = bytes(range(32))
    ours, theirs = HmacDrbg(secret, "x"), IndependentDrbg(secret, "x")
    assert [ours.getrandbits(k) for k in (1, 7, 8, 64, 300, 13)] == \
           [theirs(k) for k in (1, 7, 8, 64, 300, 13)]
    assert HmacDrbg(secret, "x").getrandbits(256) != HmacDrbg(secret, "y").getrandbits(256)
    assert all(1 <= HmacDrbg(secret, "r").randrange(1, 5) < 5 for _ in range(5))


def issue_and_verify(admin, distribution, account, n):
    credential = admin.add_client(account + "-dev", account=account)
    info = distribution.login(account + "-dev", credential)
    otps = []
    for _ in range(n):
        issued = distribution.request(info, account)
        otps.append(masking.unmask(info.session_key, account, issued.nonce, issued.masked,
                                   issued.expires_at_ms))
    for otp in otps:
        distribution.verify(account, otp, source="test")
        with pytest.raises(InvalidToken):
            distribution.verify(account, otp, source="test")
    return otps


def test_rsa_lfsr_account_follows_the_stream(admin, distribution, store):
    admin.add_account("paper", "rsa-lfsr", insecure_paper_mode=True)
    m = store.account("paper").material
    assert m["p"] * m["q"] == m["n"] and len(str(m["n"] - 1)) == 6
    lam = math.lcm(m["p"] - 1, m["q"] - 1)
    assert m["e"] * m["d"] % lam == 1
    assert core.lfsr_is_primitive(m["poly"]) and m["poly"] >> 20 == 1
    otps = issue_and_verify(admin, distribution, "paper", 5)
    expected, _ = core.rsa_lfsr_generate(m["n"], m["e"], m["poly"], m["state"], 5)
    assert otps == [f"{v:06d}" for v in expected]
    # OTP^d mod N walks the LFSR stream from the start state (skipping unusable states)
    state, used = m["state"], []
    while len(used) < 5:
        if 1 <= state < m["n"] and math.gcd(state, m["n"]) == 1:
            used.append(state)
        state = core.lfsr_step(m["poly"], state)
    assert [pow(int(otp), m["d"], m["n"]) for otp in otps] == used


def test_rsa_primroot_account_follows_the_stream(admin, distribution, store):
    admin.add_account("root", "rsa-primroot", insecure_paper_mode=True, digits=7)
    m = store.account("root").material
    assert rsaparams.is_primitive_root(m["generator"], m["prime"]) and m["prime"] == 999983
    otps = issue_and_verify(admin, distribution, "root", 4)
    expected, _ = core.rsa_primroot_generate(m["n"], m["e"], m["prime"], m["generator"],
                                             m["start"], 4)
    assert otps == [f"{v:07d}" for v in expected]


def test_rsa_prf_account(admin, distribution, store):
    admin.add_account("prf", "rsa-prf", digits=8)
    m = store.account("prf").material
    otps = issue_and_verify(admin, distribution, "prf", 3)
    key = bytes.fromhex(m["key"])
    for i, otp in enumerate(otps):
        assert len(otp) == 8
        assert pow(int(otp), m["d"], m["n"]) == rsaotp.prf_candidate(key, i, m["n"])


def test_rsa_prf_wrong_otp_counts_as_failure(admin, distribution, store, clock):
    admin.add_account("prf", "rsa-prf", lockout=2)
    for _ in range(2):
        with pytest.raises(InvalidToken):
            distribution.verify("prf", "000000", source="test")
    assert store.account("prf").locked_at(clock())


def test_rsa_types_need_insecure_flag(admin):
    for kind in ("rsa-lfsr", "rsa-primroot"):
        with pytest.raises(InvalidParameter) as exc:
            admin.add_account("x", kind)
        assert exc.value.field == "insecure-paper-mode"


def test_rsa_lfsr_ceremony_derives_parameters(admin, keyserver, store, monkeypatch):
    for i in (1, 2, 3, 4):
        admin.add_authority(i)
    admin.add_account("paper", "rsa-lfsr", insecure_paper_mode=True, authorities=(1, 2, 3, 4))
    pem = keyserver.public_key_pem()
    salts, digest = {}, derivation.contribution_digest
    monkeypatch.setattr(derivation, "contribution_digest",
                        lambda data, salt, n: salts.setdefault(data, salt) and digest(data, salt, n))
    phrases = {}
    for i in (1, 2, 3, 4):
        phrases[i] = phrase.secret_phrase(i, 1000 + i).data
        keyserver.contribute(AuthorityInfo(i, b""), "paper", encrypt_phrase(pem, phrases[i], "paper", i))
    ikm = b"".join(hashlib.pbkdf2_hmac("sha256", phrases[i], salts[phrases[i]], keyserver.iterations, 32)
                   for i in (1, 2, 3, 4))
    secret = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"otpfast ceremony v1",
                  info=b"otpfast token secret\0paper").derive(ikm)
    params = rsaparams.generate_params(6, randbits=IndependentDrbg(secret, "rsa params"))
    index = IndependentDrbg(secret, "lfsr poly")(64) % 24000
    record = store.account("paper")
    m = record.material
    assert (m["p"], m["q"], m["e"], m["d"]) == (params.p, params.q, params.e, params.d)
    assert (m["poly_index"], m["poly"]) == (index, core.lfsr_primitive_at(20, index))
    assert record.counter == 0 and 1 <= m["state"] < 1 << 20
