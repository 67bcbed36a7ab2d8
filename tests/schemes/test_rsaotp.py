import hashlib
import hmac
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otpfast import core
from otpfast.errors import InvalidParameter, InvalidToken
from otpfast.rsaotp import INSECURE_NOTE, RsaLfsrToken, RsaPrfToken, RsaPrimrootToken, prf_candidate
from otpfast.rsaparams import validate_params

PARAMS = validate_params(991, 997, 65537)  # the paper's N = 988027
POLY = 0x100009  # x^20 + x^3 + 1
KEY = bytes(range(32))


def _used(a, n=PARAMS.n):
    return 1 <= a < n and math.gcd(a, n) == 1


def _lfsr_states(state, count):
    out = []
    for _ in range(count):
        out.append(state)
        state <<= 1
        if state >> 20:
            state ^= POLY
    return out


def test_lfsr_token_follows_design_stream():
    token = RsaLfsrToken(PARAMS, POLY, 0xABCDE)
    expected = [a for a in _lfsr_states(0xABCDE, 200) if _used(a)]
    index, got = 0, []
    while len(got) < 100:
        otp, index = token.generate(index)
        assert len(otp) == 6
        got.append(pow(int(otp), PARAMS.d, PARAMS.n))
    assert got == expected[:100]


def test_lfsr_token_matches_core_batch():
    token = RsaLfsrToken(PARAMS, POLY, 1)
    batch, _ = core.rsa_lfsr_generate(PARAMS.n, PARAMS.e, POLY, 1, 50)
    index, mine = 0, []
    for _ in range(50):
        otp, index = token.generate(index)
        mine.append(int(otp))
    assert mine == list(batch)


def test_primroot_token_matches_core_batch():
    token = RsaPrimrootToken(PARAMS, 999983, 5, 10)
    batch, _ = core.rsa_primroot_generate(PARAMS.n, PARAMS.e, 999983, 5, 10, 40)
    index, mine = 0, []
    for _ in range(40):
        otp, index = token.generate(index)
        mine.append(int(otp))
    assert mine == list(batch)


@pytest.mark.parametrize("make", [
    lambda: RsaLfsrToken(PARAMS, POLY, 0x1234),
    lambda: RsaPrimrootToken(PARAMS, 999983, 5, 0),
    lambda: RsaPrfToken(KEY, PARAMS),
], ids=["lfsr", "primroot", "prf"])
def test_generated_otps_verify_and_others_do_not(make):
    token = make()
    index = 0
    for _ in range(30):
        otp, nxt = token.generate(index)
        assert token.verify(otp, index) == nxt
        wrong = f"{(int(otp) + 1) % PARAMS.n:06d}"
        with pytest.raises(InvalidToken):
            token.verify(wrong, index)
        index = nxt
    for bad in ["١٢٣٤٥٦", "12345", "1234567", " 12345", "999999", ""]:
        with pytest.raises(InvalidToken):
            token.verify(bad, 0)


def test_prf_candidate_definition():
    n = PARAMS.n
    mac = hmac.new(KEY, (7).to_bytes(8, "big") + (0).to_bytes(4, "big"), hashlib.sha256).digest()
    a = int.from_bytes(mac, "big") >> (256 - n.bit_length())
    if _used(a):
        assert prf_candidate(KEY, 7, n) == a
    token = RsaPrfToken(KEY, PARAMS)
    otp, nxt = token.generate(7)
    assert nxt == 8 and pow(int(otp), PARAMS.d, n) == prf_candidate(KEY, 7, n)


@settings(max_examples=30, deadline=None)
@given(index=st.integers(0, 2**64 - 2))
def test_prf_candidates_lie_in_units(index):
    a = prf_candidate(KEY, index, PARAMS.n)
    assert _used(a)


def test_reprs_label_the_insecure_modes_and_hide_the_key():
    assert INSECURE_NOTE in repr(RsaLfsrToken(PARAMS, POLY, 1))
    assert INSECURE_NOTE in repr(RsaPrimrootToken(PARAMS, 999983, 5, 0))
    r = repr(RsaPrfToken(KEY, PARAMS))
    assert "INSECURE" not in r and KEY.hex() not in r


@pytest.mark.parametrize("make,field", [
    (lambda: RsaLfsrToken(PARAMS, 0x100001, 1), "poly"),
    (lambda: RsaLfsrToken(PARAMS, POLY, 0), "state"),
    (lambda: RsaPrimrootToken(PARAMS, 999983, 2, 0), "generator"),
    (lambda: RsaPrfToken(b"short", PARAMS), "secret"),
    (lambda: RsaPrfToken(KEY, (991, 997)), "params"),
])
def test_rsa_tokens_reject_bad_parameters(make, field):
    with pytest.raises(InvalidParameter) as info:
        make()
    assert info.value.field == field


def test_index_is_checked():
    with pytest.raises(InvalidParameter):
        RsaPrfToken(KEY, PARAMS).generate(-1)
