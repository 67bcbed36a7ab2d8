"""Hash-chain steps: the C kernel (one compression per step on a pre-padded block) vs a Python
hashlib loop, for the Lamport chain (sha256) and RFC 2289 (md5, sha1 with folding).

Per-step time = mean / extra_info["steps"]. Run:
    python -m pytest bench/test_hashchain.py --benchmark-enable --benchmark-group-by=group
"""
import hashlib

import pytest

from otpfast._compat import NO_EXTENSIONS, load_impl

SEED = bytes(range(32))
N_FAST = 1_000_000
N_SLOW = 200_000


def _python_chain(seed, n, algorithm):
    h = seed
    for _ in range(n):
        h = hashlib.new(algorithm, h).digest()
    return h


@pytest.mark.benchmark(group="hashchain-sha256")
@pytest.mark.skipif(NO_EXTENSIONS, reason="needs the compiled core")
def test_hashchain_c(benchmark):
    c = load_impl("c")
    benchmark.extra_info.update(steps=N_FAST)
    out = benchmark(c.hashchain_batch, SEED, N_FAST, "sha256")
    assert out[:32] == _python_chain(SEED, N_FAST, "sha256")


@pytest.mark.benchmark(group="hashchain-sha256")
def test_hashchain_python_hashlib(benchmark):
    sha256 = hashlib.sha256
    benchmark.extra_info.update(steps=N_SLOW)

    def loop():
        h = SEED
        for _ in range(N_SLOW):
            h = sha256(h).digest()
        return h
    assert benchmark(loop) == load_impl("py").hashchain_batch(SEED, N_SLOW, "sha256")[:32]


@pytest.mark.benchmark(group="rfc2289-md5")
@pytest.mark.skipif(NO_EXTENSIONS, reason="needs the compiled core")
def test_rfc2289_c(benchmark):
    c = load_impl("c")
    start = SEED[:8]
    benchmark.extra_info.update(steps=N_FAST)
    out = benchmark(c.rfc2289_batch, start, N_FAST, 1, "md5")
    assert out == load_impl("py").rfc2289_batch(start, N_FAST, 1, "md5")


@pytest.mark.benchmark(group="rfc2289-md5")
def test_rfc2289_python_hashlib(benchmark):
    md5 = hashlib.md5
    benchmark.extra_info.update(steps=N_SLOW)

    def loop():
        s = SEED[:8]
        for _ in range(N_SLOW):
            d = md5(s).digest()
            s = bytes(a ^ b for a, b in zip(d[:8], d[8:]))
        return s
    assert benchmark(loop) == load_impl("py").rfc2289_batch(SEED[:8], N_SLOW, 1, "md5")
