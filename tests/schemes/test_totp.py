import base64
import hashlib

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otpfast.errors import InvalidParameter, InvalidToken
from otpfast.totp import TOTP, batch_values, timecode

KEY = b"12345678901234567890"


def test_totp_rfc6238_appendix_b_all_hashes(vectors):
    data = vectors("rfc6238_appendix_b.json")
    for algorithm, seed in data["seeds_ascii"].items():
        gen = TOTP(seed.encode("ascii"), digits=data["digits"], algorithm=algorithm, step=data["step"])
        for case in data["cases"]:
            assert gen.timecode(case["time"]) == int(case["T_hex"], 16)
            assert gen.generate(case["time"]) == case[algorithm], (algorithm, case["time"])
            assert gen.verify(case[algorithm], at=case["time"], window=0) == int(case["T_hex"], 16)


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=16, max_size=64), at=st.integers(0, 2**34),
       digits=st.integers(6, 8), algorithm=st.sampled_from(["sha1", "sha256", "sha512"]),
       step=st.sampled_from([15, 30, 60]))
def test_totp_equals_pyotp(key, at, digits, algorithm, step):
    ref = pyotp.TOTP(base64.b32encode(key).decode(), digits=digits, digest=getattr(hashlib, algorithm),
                     interval=step)
    assert TOTP(key, digits=digits, algorithm=algorithm, step=step).generate(at) == ref.at(at)


@settings(max_examples=10, deadline=None)
@given(key=st.binary(min_size=16, max_size=64), at=st.integers(10**9, 4 * 10**9),
       digits=st.integers(6, 8), algorithm=st.sampled_from(["sha1", "sha256", "sha512"]))
def test_totp_equals_oathtool(oathtool, key, at, digits, algorithm):
    (expected,) = oathtool(f"--totp={algorithm}", "-d", str(digits), "-N", f"@{at}", key.hex())
    assert TOTP(key, digits=digits, algorithm=algorithm).generate(at) == expected


def test_totp_injected_clock_and_window():
    now = [1_000_000_000]
    gen = TOTP(KEY, clock=lambda: now[0])
    step = gen.timecode(now[0])
    previous = gen.generate(now[0] - 30)
    assert gen.verify(gen.generate()) == step
    assert gen.verify(previous, window=1) == step - 1
    with pytest.raises(InvalidToken):
        gen.verify(previous, window=0)
    with pytest.raises(InvalidToken):
        gen.verify(gen.generate(now[0] - 90), window=2)


def test_totp_after_step_forbids_reuse():
    gen = TOTP(KEY)
    at = 1_500_000_000
    otp = gen.generate(at)
    matched = gen.verify(otp, at=at)
    with pytest.raises(InvalidToken):
        gen.verify(otp, at=at, after_step=matched)
    assert gen.verify(gen.generate(at + 30), at=at, after_step=matched) == matched + 1


def test_totp_t0_and_step():
    gen = TOTP(KEY, step=60, t0=100)
    assert gen.timecode(159) == 0 and gen.timecode(160) == 1
    ref = pyotp.HOTP(base64.b32encode(KEY).decode())
    assert gen.generate(100 + 60 * 7) == ref.at(7)
    with pytest.raises(InvalidParameter):
        gen.generate(99)


@pytest.mark.parametrize("kwargs,field", [
    (dict(step=0), "step"), (dict(t0=-1), "t0"), (dict(digits=5), "digits"), (dict(algorithm="sha3"), "algorithm"),
])
def test_totp_rejects_bad_parameters(kwargs, field):
    with pytest.raises(InvalidParameter) as info:
        TOTP(KEY, **kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("bad", ["١٢٣٤٥٦", "12345", "1234567", " 123456"])
def test_totp_verify_rejects_malformed(bad):
    with pytest.raises(InvalidToken):
        TOTP(KEY).verify(bad, at=59)


def test_totp_batch_values_are_consecutive_steps():
    first, values = batch_values(KEY, time=1_111_111_109, count=5, digits=8)
    assert first == 0x23523EC
    gen = TOTP(KEY, digits=8)
    assert [f"{v:08d}" for v in values] == [gen.generate_step(first + i) for i in range(5)]


def test_timecode_rejects_non_finite():
    for bad in (float("nan"), float("inf"), "59", True):
        with pytest.raises(InvalidParameter):
            timecode(bad)
