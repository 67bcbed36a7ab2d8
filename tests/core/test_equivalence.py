"""The compiled core agrees with the pure-Python spec on random inputs."""
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otpfast._compat import NO_EXTENSIONS, load_impl
from otpfast.errors import InvalidParameter

pytestmark = [pytest.mark.c_extension,
              pytest.mark.skipif(NO_EXTENSIONS, reason="OTPFAST_NO_EXTENSIONS=1: no compiled core")]

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def twins():
    return load_impl("c"), load_impl("py")


def _same(twins, name, *args, **kwargs):
    """Both twins return the same value, or both raise InvalidParameter on the same field."""
    results = []
    for impl in twins:
        try:
            results.append(("ok", getattr(impl, name)(*args, **kwargs)))
        except InvalidParameter as exc:
            results.append(("error", exc.field))
    assert results[0] == results[1], (name, args, kwargs)
    return results[0]


polys = st.integers(min_value=2, max_value=64).flatmap(
    lambda L: st.integers(min_value=0, max_value=(1 << L) - 1).map(lambda low: (1 << L) | low | 1))
any_polys = st.integers(min_value=-3, max_value=(1 << 66))


@SETTINGS
@given(poly=polys, state=st.integers(min_value=0, max_value=1 << 64), k=st.integers(0, (1 << 64) - 1))
def test_equivalence_lfsr_step_fill_advance(twins, poly, state, k):
    _same(twins, "lfsr_step", poly, state)
    _same(twins, "lfsr_fill", poly, state, 40)
    _same(twins, "lfsr_fill", poly, state, 203)  # the 8-lane path (L >= 8, n >= 64)
    _same(twins, "lfsr_advance", poly, state, k)


@SETTINGS
@given(poly=st.one_of(polys, any_polys))
def test_equivalence_lfsr_is_primitive(twins, poly):
    _same(twins, "lfsr_is_primitive", poly)


@SETTINGS
@given(degree=st.integers(min_value=0, max_value=66))
def test_equivalence_lfsr_count_primitive(twins, degree):
    _same(twins, "lfsr_count_primitive", degree)


@settings(max_examples=25, deadline=None)
@given(degree=st.integers(min_value=1, max_value=40), k=st.integers(min_value=-1, max_value=60))
def test_equivalence_lfsr_primitive_at(twins, degree, k):
    _same(twins, "lfsr_primitive_at", degree, k)


@pytest.mark.parametrize("degree", list(range(2, 17)) + [20])
def test_equivalence_lfsr_primitive_all(twins, degree):
    _same(twins, "lfsr_primitive_all", degree)


@SETTINGS
@given(base=st.integers(min_value=-1, max_value=1 << 80), exp=st.integers(min_value=-1, max_value=1 << 64),
       mod=st.integers(min_value=0, max_value=(1 << 63) + 1))
def test_equivalence_modexp(twins, base, exp, mod):
    kind, value = _same(twins, "modexp", base, exp, mod)
    if kind == "ok":
        assert value == pow(base, exp, mod)


@SETTINGS
@given(bases=st.lists(st.integers(min_value=0, max_value=(1 << 64) - 1), max_size=50),
       exp=st.integers(min_value=0, max_value=1 << 40), mod=st.integers(min_value=2, max_value=(1 << 63) - 1))
def test_equivalence_modexp_batch(twins, bases, exp, mod):
    _same(twins, "modexp_batch", bases, exp, mod)


def _semiprime_params(draw):
    primes = [p for p in range(3, 3000) if all(p % q for q in range(2, math.isqrt(p) + 1))]
    p = draw(st.sampled_from(primes))
    q = draw(st.sampled_from([x for x in primes if x != p]))
    lam = math.lcm(p - 1, q - 1)
    e = draw(st.integers(min_value=2, max_value=lam + 5))
    return p * q, e, lam


@st.composite
def rsa_cases(draw):
    n, e, lam = _semiprime_params(draw)
    if draw(st.booleans()):
        n = draw(st.integers(min_value=0, max_value=(1 << 32) + 1))  # any modulus, edge cases too
    degree = draw(st.integers(min_value=2, max_value=max(2, min(n.bit_length() + 3, 30))))
    return n, e, degree


@SETTINGS
@given(case=rsa_cases(), data=st.data())
def test_equivalence_rsa_lfsr(twins, case, data):
    n, e, degree = case
    c = twins[0]
    k = data.draw(st.integers(min_value=0, max_value=30))
    poly = c.lfsr_primitive_at(degree, min(k, c.lfsr_count_primitive(degree) - 1))
    state = data.draw(st.integers(min_value=0, max_value=(1 << degree)))
    count = data.draw(st.integers(min_value=0, max_value=300))
    method = data.draw(st.sampled_from(["auto", "crt", "sqm"]))
    kind, value = _same(twins, "rsa_lfsr_generate", n, e, poly, state, count, method=method)
    if kind == "ok":
        otps, _ = value
        d = data.draw(st.integers(min_value=1, max_value=1 << 20))
        wrong = [x ^ data.draw(st.integers(0, 3)) for x in otps]
        _same(twins, "rsa_lfsr_verify_mask", n, d, poly, state, wrong, method=method)


@SETTINGS
@given(case=rsa_cases(), data=st.data())
def test_equivalence_rsa_primroot(twins, case, data):
    n, e, _ = case
    prime = data.draw(st.sampled_from([3, 5, 7, 11, 101, 997, 65537, 999983, 1000003, 4294967291]))
    generator = data.draw(st.integers(min_value=0, max_value=12))
    start = data.draw(st.integers(min_value=-1, max_value=1 << 70))
    count = data.draw(st.integers(min_value=0, max_value=200))
    method = data.draw(st.sampled_from(["auto", "crt", "sqm"]))
    kind, value = _same(twins, "rsa_primroot_generate", n, e, prime, generator, start, count, method=method)
    if kind == "ok":
        otps, _ = value
        d = data.draw(st.integers(min_value=1, max_value=1 << 20))
        _same(twins, "rsa_primroot_verify_mask", n, d, prime, generator, start, list(otps), method=method)


@SETTINGS
@given(values=st.lists(st.integers(min_value=0, max_value=(1 << 64) - 1), max_size=40),
       digits=st.integers(min_value=0, max_value=21))
def test_equivalence_format_decimal(twins, values, digits):
    _same(twins, "format_decimal", values, digits)


def test_equivalence_same_public_api(twins):
    import inspect
    c, py = twins
    names = [n for n in dir(py) if not n.startswith("_") and callable(getattr(py, n))
             and getattr(getattr(py, n), "__module__", "") == "otpfast._core_py"]
    assert "rsa_lfsr_generate" in names and len(names) >= 17
    for name in names:
        assert str(inspect.signature(getattr(c, name))) == str(inspect.signature(getattr(py, name))), name
    assert c.OPENMP_ENABLED in (True, False) and py.OPENMP_ENABLED is False
