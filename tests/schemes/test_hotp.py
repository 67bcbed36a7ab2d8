import base64
import hmac

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otpfast.errors import InvalidParameter, InvalidToken
from otpfast.hotp import HOTP, generate_key, parse_key

KEY = b"12345678901234567890"


def test_hotp_rfc4226_appendix_d(vectors):
    data = vectors("rfc4226_appendix_d.json")
    gen = HOTP(data["secret_ascii"].encode("ascii"), digits=data["digits"])
    for case in data["cases"]:
        assert gen.generate(case["count"]) == case["hotp"]
        assert gen.verify(case["hotp"], case["count"]) == case["count"]


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=16, max_size=80), counter=st.integers(0, 2**64 - 1),
       digits=st.integers(6, 8), algorithm=st.sampled_from(["sha1", "sha256", "sha512"]))
def test_hotp_equals_pyotp(key, counter, digits, algorithm):
    import hashlib
    ref = pyotp.HOTP(base64.b32encode(key).decode(), digits=digits, digest=getattr(hashlib, algorithm))
    assert HOTP(key, digits=digits, algorithm=algorithm).generate(counter) == ref.at(counter)


@settings(max_examples=15, deadline=None)
@given(key=st.binary(min_size=16, max_size=64), counter=st.integers(0, 2**31),
       digits=st.integers(6, 8), algorithm=st.sampled_from(["sha1", "sha256", "sha512"]))
def test_hotp_equals_oathtool(oathtool, key, counter, digits, algorithm):
    if algorithm == "sha1":
        expected = oathtool("--hotp", "-d", str(digits), "-c", str(counter), "-w", "4", key.hex())
    else:  # oathtool's HOTP mode is SHA-1 only; TOTP with a 1 s step at time C is HOTP(C)
        expected = oathtool(f"--totp={algorithm}", "-s", "1", "-N", f"@{counter}", "-d", str(digits),
                            "-w", "4", key.hex())
    gen = HOTP(key, digits=digits, algorithm=algorithm)
    assert [gen.generate(counter + i) for i in range(5)] == expected


def test_hotp_verify_window_returns_matched_counter():
    gen = HOTP(KEY)
    otp = gen.generate(17)
    assert gen.verify(otp, 10, window=10) == 17
    with pytest.raises(InvalidToken):
        gen.verify(otp, 10, window=6)
    with pytest.raises(InvalidToken):
        gen.verify(otp, 18, window=100)


@pytest.mark.parametrize("bad", ["١٢٣٤٥٦", " 755224", "755224 ", "75522", "7552240", "75 224", "", "７５５２２４", 755224, b"755224"])
def test_hotp_verify_rejects_malformed(bad):
    with pytest.raises(InvalidToken):
        HOTP(KEY).verify(bad, 0)


def test_hotp_verify_wrong_code():
    gen = HOTP(KEY)
    wrong = f"{(int(gen.generate(0)) + 1) % 10**6:06d}"
    with pytest.raises(InvalidToken):
        gen.verify(wrong, 0)


def test_hotp_resync_two_consecutive():
    gen = HOTP(KEY, digits=8, algorithm="sha256")
    assert gen.resync(gen.generate(57), gen.generate(58), 0, window=100) == 59
    with pytest.raises(InvalidToken):
        gen.resync(gen.generate(57), gen.generate(59), 0, window=100)
    with pytest.raises(InvalidToken):
        gen.resync(gen.generate(57), gen.generate(58), 0, window=50)


@pytest.mark.parametrize("kwargs,field", [
    (dict(key=b"x" * 15), "secret"),
    (dict(key=KEY, digits=5), "digits"),
    (dict(key=KEY, digits=9), "digits"),
    (dict(key=KEY, digits=11), "digits"),
    (dict(key=KEY, digits=True), "digits"),
    (dict(key=KEY, algorithm="md5"), "algorithm"),
    (dict(key="12345678901234567890"), "secret"),
])
def test_hotp_rejects_bad_parameters(kwargs, field):
    key = kwargs.pop("key")
    with pytest.raises(InvalidParameter) as info:
        HOTP(key, **kwargs)
    assert info.value.field == field
    assert "1234567890" not in str(info.value)


def test_hotp_counter_limits():
    gen = HOTP(KEY)
    assert gen.generate(2**64 - 1) == pyotp.HOTP(base64.b32encode(KEY).decode()).at(2**64 - 1)
    for bad in (-1, 2**64):
        with pytest.raises(InvalidParameter):
            gen.generate(bad)


def test_generate_key_is_random_and_long_enough():
    a, b = generate_key(), generate_key()
    assert len(a) == 20 and a != b
    with pytest.raises(InvalidParameter):
        generate_key(8)


@pytest.mark.parametrize("kwargs", [
    dict(hex="3132333435363738393031323334353637383930"),
    dict(hex="31 32 33 34 35 36 37 38 39 30 31 32 33 34 35 36 37 38 39 30"),
    dict(hex="0x3132333435363738393031323334353637383930"),
    dict(base32="GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
    dict(base32="gezd gnbv gy3t qojq gezd gnbv gy3t qojq"),
    dict(base32="GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ===="),
])
def test_parse_key_hex_and_base32(kwargs):
    assert parse_key(**kwargs) == KEY


@pytest.mark.parametrize("kwargs,field", [
    (dict(hex="31323"), "secret"),
    (dict(hex="zz"), "secret"),
    (dict(hex="31323334"), "secret"),
    (dict(base32="GEZDGNBV"), "secret-base32"),
    (dict(base32="GEZDGNB1GY3TQOJQGEZDGNBVGY3TQOJQ"), "secret-base32"),
    (dict(hex="31", base32="GE"), "secret"),
    (dict(), "secret"),
])
def test_parse_key_errors(kwargs, field):
    with pytest.raises(InvalidParameter) as info:
        parse_key(**kwargs)
    assert info.value.field == field


def test_hotp_comparison_is_constant_time_api(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)
    monkeypatch.setattr("otpfast.hotp.hmac.compare_digest", spy)
    gen = HOTP(KEY)
    gen.verify(gen.generate(3), 0, window=5)
    assert len(calls) == 6  # the whole window is compared, not just up to the match
