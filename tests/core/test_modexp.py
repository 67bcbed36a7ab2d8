import array
import random

import pytest

from otpfast import core
from otpfast.errors import InvalidParameter

MODULI = [2, 3, 4, 988027, 991, (1 << 32) - 5, (1 << 32), (1 << 62) + 135, (1 << 63) - 25, (1 << 63) - 1,
          (1 << 40) * 3]


@pytest.mark.parametrize("mod", MODULI)
def test_modexp_equals_pow(impl, mod):
    rng = random.Random(mod)
    for _ in range(50):
        base, exp = rng.randrange(1 << 70), rng.randrange(1 << 64)
        assert impl.modexp(base, exp, mod) == pow(base, exp, mod)
    assert impl.modexp(0, 0, mod) == 1
    assert impl.modexp(mod - 1, 2, mod) == 1
    assert impl.modexp(7, (1 << 64) - 1, mod) == pow(7, (1 << 64) - 1, mod)


def test_modexp_batch_equals_pow(impl):
    rng = random.Random(5)
    mod, exp = 988027, 524309
    bases = [rng.randrange(1 << 64) for _ in range(2000)] + [0, 1, mod - 1, mod, (1 << 64) - 1]
    got = impl.modexp_batch(bases, exp, mod)
    assert isinstance(got, array.array) and got.typecode == "Q"
    assert got.tolist() == [pow(b, exp, mod) for b in bases]
    assert impl.modexp_batch(array.array("Q", bases), exp, mod, num_threads=1) == got


def test_modexp_batch_thread_counts_agree(impl):
    bases = array.array("Q", range(1, 70001))
    one = impl.modexp_batch(bases, 65537, (1 << 61) - 1, num_threads=1)
    assert one == impl.modexp_batch(bases, 65537, (1 << 61) - 1, num_threads=2)
    assert one == impl.modexp_batch(bases, 65537, (1 << 61) - 1, num_threads=-1)
    assert one[:10].tolist() == [pow(b, 65537, (1 << 61) - 1) for b in range(1, 11)]


@pytest.mark.parametrize("call, field", [
    (lambda m: m.modexp(2, 3, 1), "mod"),
    (lambda m: m.modexp(2, 3, 1 << 63), "mod"),
    (lambda m: m.modexp(2, -1, 7), "exp"),
    (lambda m: m.modexp(2, 1 << 64, 7), "exp"),
    (lambda m: m.modexp(-2, 3, 7), "base"),
    (lambda m: m.modexp(2.0, 3, 7), "base"),
    (lambda m: m.modexp_batch([1, -1], 3, 7), "bases"),
    (lambda m: m.modexp_batch([1], 3, 7, num_threads=0), "num_threads"),
    (lambda m: m.modexp_batch([1], 3, 7, num_threads="2"), "num_threads"),
])
def test_modexp_bad_input_names_the_field(impl, call, field):
    with pytest.raises(InvalidParameter) as info:
        call(impl)
    assert info.value.field == field


def test_core_modexp_routes_big_numbers_to_gmp():
    m = (1 << 127) - 1
    assert core.modexp(3, 1 << 100, m) == pow(3, 1 << 100, m)
    assert core.modexp(3, 1 << 70, 1000003) == pow(3, 1 << 70, 1000003)
    assert core.modexp(3, 65537, 988027) == pow(3, 65537, 988027)
    with pytest.raises(InvalidParameter) as info:
        core.modexp(3, -1, m)
    assert info.value.field == "exp"


def test_format_decimal_zero_pads(impl):
    values = [0, 7, 123456, 988026, 42]
    assert impl.format_decimal(values, 6) == b"000000\n000007\n123456\n988026\n000042\n"
    assert impl.format_decimal(array.array("I", values), 6) == impl.format_decimal(values, 6)
    assert impl.format_decimal(array.array("Q", [10**19]), 20) == b"%020d\n" % 10**19
    assert impl.format_decimal([], 6) == b""


def test_format_decimal_wider_values_are_not_truncated(impl):
    assert impl.format_decimal([1234567, 5], 6) == b"1234567\n000005\n"


def test_format_decimal_large_batch(impl):
    values = array.array("I", range(0, 300000, 3))
    assert impl.format_decimal(values, 7) == b"".join(b"%07d\n" % v for v in values)


@pytest.mark.parametrize("digits", [0, 21, "6"])
def test_format_decimal_bad_digits(impl, digits):
    with pytest.raises(InvalidParameter) as info:
        impl.format_decimal([1], digits)
    assert info.value.field == "digits"


def test_num_threads_rules(impl):
    assert impl.effective_num_threads(1) == 1
    assert impl.effective_num_threads(10**30) >= 1          # capped, never an overflow
    assert impl.effective_num_threads(-10**30) == 1
    assert impl.effective_num_threads(None) >= 1
    if impl.OPENMP_ENABLED:
        import os
        assert impl.effective_num_threads(-1) == os.cpu_count()
        assert impl.effective_num_threads(2) == 2
