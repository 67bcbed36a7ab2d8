"""Threshold-PRF partial evaluations H1(x)^k_j (hash to ristretto255, then one scalar
multiplication) per second: the compiled core's batch (GIL released; 1 thread, all threads)
vs pysodium from Python vs the ctypes twin, plus the full F_k(x) and a DLEQ proof. Every
benchmark checks its partials against the RFC 9497 vector and one another.

Partials per second = extra_info["partials"] / mean. Run:
    python -m pytest bench/test_tprf.py --benchmark-enable --benchmark-group-by=group
"""
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest

from otpfast import tprf
from otpfast._compat import NO_EXTENSIONS, load_ristretto

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "rfc9497_ristretto255.json"
N_FAST = 20_000
N_SLOW = 2_000
CORES = len(os.sched_getaffinity(0))
DST = b"HashToGroup-" + tprf.context_string(tprf.MODE_OPRF)

pytestmark = pytest.mark.benchmark(group="tprf-partial")


@pytest.fixture(scope="module")
def rfc():
    """The OPRF-mode key and vector 2 (input 5a..5a): F_k(x) as the RFC gives it."""
    suite = json.loads(VECTORS.read_text())["OPRF"]
    sk, _ = tprf.derive_key_pair(bytes.fromhex(suite["Seed"]), bytes.fromhex(suite["KeyInfo"]))
    vector = suite["vectors"][1]
    return sk, bytes.fromhex(vector["Input"][0]), bytes.fromhex(vector["Output"][0])


def _inputs(rfc, n):
    """n inputs, the RFC's first (so its output can be checked), then distinct counters."""
    return [rfc[1]] + [b"alice|T1|%d" % c for c in range(1, n)]


def _check(rfc, inputs, partials):
    sk, x, output = rfc
    assert len(partials) == len(inputs)
    assert tprf.finalize(x, partials[0]) == output
    assert partials[-1] == tprf.evaluate(sk, tprf.hash_to_group(inputs[-1]))


@pytest.mark.skipif(NO_EXTENSIONS or importlib.util.find_spec("otpfast._ristretto") is None,
                    reason="needs the compiled otpfast._ristretto")
@pytest.mark.parametrize("threads", [1, CORES], ids=["1-thread", "all-threads"])
def test_tprf_partials_core_batch(benchmark, rfc, threads):
    c = load_ristretto("c")
    inputs = _inputs(rfc, N_FAST)
    benchmark.extra_info.update(partials=N_FAST, threads=threads, openmp=c.OPENMP_ENABLED)
    partials = benchmark(c.r255_hash_mul_many, rfc[0], inputs, DST, threads)
    _check(rfc, inputs, partials)


def test_tprf_partials_pysodium(benchmark, rfc):
    pysodium = pytest.importorskip("pysodium")
    inputs = _inputs(rfc, N_SLOW)
    dst_prime = DST + bytes([len(DST)])
    k = rfc[0]

    def loop():
        out = []
        for x in inputs:  # expand_message_xmd(x, DST, 64) with hashlib, the group with pysodium
            b0 = hashlib.sha512(bytes(128) + x + b"\x00\x40\x00" + dst_prime).digest()
            uniform = hashlib.sha512(b0 + b"\x01" + dst_prime).digest()
            point = pysodium.crypto_core_ristretto255_from_hash(uniform)
            out.append(pysodium.crypto_scalarmult_ristretto255(k, point))
        return out

    benchmark.extra_info.update(partials=N_SLOW)
    _check(rfc, inputs, benchmark(loop))


def test_tprf_partials_ctypes_twin(benchmark, rfc):
    py = load_ristretto("py")
    inputs = _inputs(rfc, N_SLOW)
    benchmark.extra_info.update(partials=N_SLOW)
    _check(rfc, inputs, benchmark(py.r255_hash_mul_many, rfc[0], inputs, DST))


@pytest.mark.benchmark(group="tprf-prove")
def test_tprf_partial_with_proof(benchmark, rfc):
    """What a share server does per request: one partial and its DLEQ proof."""
    k = rfc[0]
    public = tprf.public_key(k)

    def answer():
        h = tprf.hash_to_group(b"alice|T1|7", tprf.MODE_VOPRF)
        e = tprf.evaluate(k, h)
        return h, e, tprf.prove(k, public, [h], [e])

    benchmark.extra_info.update(partials=1)
    h, e, proof = benchmark(answer)
    assert tprf.verify_proof(public, [h], [e], proof)


@pytest.mark.benchmark(group="tprf-combine")
def test_tprf_verify_and_combine_three(benchmark, rfc):
    """What a device does per OTP with t = 3: check three proofs, combine, finalize, digits."""
    k = rfc[0]
    shares = dict(tprf.split(k, 3, 5))
    x = b"alice|T1|7"
    h = tprf.hash_to_group(x, tprf.MODE_VOPRF)
    answers = {j: (tprf.public_key(shares[j]), tprf.evaluate(shares[j], h)) for j in (1, 3, 5)}
    answers = {j: (pk, e, tprf.prove(shares[j], pk, [h], [e])) for j, (pk, e) in answers.items()}

    def device():
        assert all(tprf.verify_proof(pk, [h], [e], p) for pk, e, p in answers.values())
        element = tprf.combine({j: e for j, (_, e, _) in answers.items()})
        return tprf.otp_digits(tprf.finalize(x, element), 6)

    benchmark.extra_info.update(partials=3)
    assert benchmark(device) == tprf.otp_digits(tprf.prf(k, x, tprf.MODE_VOPRF), 6)
