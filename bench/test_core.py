"""Core kernels: LFSR stepping and jumps, primitive polynomials, word modexp, text output."""
import array
import random

import pytest

POLY = 0x100009


@pytest.fixture
def size(impl):
    """Work per call: 10^6 for the compiled core, 10^4 for the pure-Python twin."""
    return 10**6 if impl.__name__.endswith("._core") else 10**4


def test_lfsr_fill(benchmark, impl, size):
    benchmark.group = "lfsr-fill"
    benchmark.extra_info.update(impl=impl.__name__, count=size)
    states = benchmark(impl.lfsr_fill, POLY, 1, size)
    assert len(states) == size and states[1] == 2 and states[20] == 0x9
    assert states[-1] == impl.lfsr_advance(POLY, 1, size - 1)


def test_lfsr_advance(benchmark, impl):
    benchmark.group = "lfsr-advance"
    poly64 = (1 << 64) | 0x1B
    s = benchmark(impl.lfsr_advance, poly64, 0x123456789ABCDEF, (1 << 64) - 2)
    assert impl.lfsr_step(poly64, s) == 0x123456789ABCDEF   # period 2^64 - 1


def test_lfsr_primitive_all_degree_20(benchmark, impl):
    benchmark.group = "lfsr-primitive-all-20"
    benchmark.extra_info.update(impl=impl.__name__)
    if impl.__name__.endswith("._core"):
        polys = benchmark(impl.lfsr_primitive_all, 20)
    else:
        polys = benchmark.pedantic(impl.lfsr_primitive_all, args=(20,), rounds=1)
    assert len(polys) == 24000 and polys[0] == POLY


def test_lfsr_is_primitive_degree_64(benchmark, impl):
    benchmark.group = "lfsr-is-primitive"
    assert benchmark(impl.lfsr_is_primitive, (1 << 64) | 0x1B) is True


def test_modexp_word(benchmark, impl):
    benchmark.group = "modexp"
    m = (1 << 63) - 25
    assert benchmark(impl.modexp, 0x1234567, (1 << 64) - 59, m) == pow(0x1234567, (1 << 64) - 59, m)


def test_modexp_batch(benchmark, impl, size):
    benchmark.group = "modexp-batch"
    benchmark.extra_info.update(impl=impl.__name__, count=size // 10)
    rng = random.Random(1)
    m = (1 << 61) - 1
    bases = array.array("Q", (rng.randrange(m) for _ in range(size // 10)))
    got = benchmark(impl.modexp_batch, bases, 65537, m)
    assert got[:5].tolist() == [pow(b, 65537, m) for b in bases[:5]]


def test_format_decimal(benchmark, impl, size):
    benchmark.group = "format-decimal"
    benchmark.extra_info.update(impl=impl.__name__, count=size)
    values = array.array("I", range(0, size * 3, 3))
    text = benchmark(impl.format_decimal, values, 7)
    assert len(text) == 8 * size and text[:16] == b"0000000\n0000003\n"
