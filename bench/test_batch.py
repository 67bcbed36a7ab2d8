"""Batch RSA-type OTP generation: the core vs what a user would write instead.

Paper parameters: N = 991 * 997 = 988027 (20 bits), a 20-bit e, LFSR x^20 + x^3 + 1.
The core runs 10^6 OTPs per call; the Python `pow` loop and gmpy2.powmod_base_list run
10^5 and the pure-Python twin 10^4 (each benchmark's extra_info["count"] gives the size,
so compare per-OTP times: mean / count).
"""
import math

import gmpy2
import pytest
from click.testing import CliRunner

from otpfast._compat import NO_EXTENSIONS, load_impl

N, P, Q = 988027, 991, 997
LAM = math.lcm(P - 1, Q - 1)
E = next(e for e in range((1 << 19) + 1, 1 << 20, 2) if math.gcd(e, LAM) == 1)   # 20-bit e
D = pow(E, -1, LAM)
POLY, STATE = 0x100009, 0x5A5A5
COUNT = 10**6
SLOW_COUNT = 10**5
PY_COUNT = 10**4

c_only = pytest.mark.skipif(NO_EXTENSIONS, reason="OTPFAST_NO_EXTENSIONS=1")


def _used_candidates(count):
    """The first `count` used a's of the stream, by the skip rule (plain Python)."""
    out, s = [], STATE
    while len(out) < count:
        if s < N and math.gcd(s, N) == 1:
            out.append(s)
        s <<= 1
        if s >> 20:
            s ^= POLY
    return out


@pytest.fixture(scope="module")
def reference():
    used = _used_candidates(COUNT)
    return used, [pow(a, E, N) for a in used[:SLOW_COUNT]]


@pytest.fixture(scope="module")
def c_core():
    return load_impl("c")


@c_only
@pytest.mark.parametrize("method", ["crt", "sqm"])
@pytest.mark.parametrize("threads", [1, -1], ids=["1thread", "allthreads"])
def test_rsa_lfsr_generate_core(benchmark, c_core, reference, method, threads):
    benchmark.group = "rsa-lfsr-generate"
    benchmark.extra_info.update(impl="c", method=method, count=COUNT,
                                threads=c_core.effective_num_threads(threads), openmp=c_core.OPENMP_ENABLED)
    otps, _ = benchmark(c_core.rsa_lfsr_generate, N, E, POLY, STATE, COUNT, threads, method)
    assert len(otps) == COUNT and otps[:SLOW_COUNT].tolist() == reference[1]


def test_rsa_lfsr_generate_python_pow_loop(benchmark, reference):
    benchmark.group = "rsa-lfsr-generate"
    benchmark.extra_info.update(impl="python-pow-loop", count=SLOW_COUNT)
    used = reference[0][:SLOW_COUNT]

    def pow_loop():
        return [pow(a, E, N) for a in used]
    assert benchmark(pow_loop) == reference[1]


def test_rsa_lfsr_generate_gmpy2_powmod_base_list(benchmark, reference):
    benchmark.group = "rsa-lfsr-generate"
    benchmark.extra_info.update(impl="gmpy2.powmod_base_list", count=SLOW_COUNT)
    bases = [gmpy2.mpz(a) for a in reference[0][:SLOW_COUNT]]
    result = benchmark(gmpy2.powmod_base_list, bases, E, N)
    assert [int(x) for x in result] == reference[1]


def test_rsa_lfsr_generate_python_twin(benchmark, reference):
    py = load_impl("py")
    benchmark.group = "rsa-lfsr-generate"
    benchmark.extra_info.update(impl="py", count=PY_COUNT)
    otps, _ = benchmark.pedantic(py.rsa_lfsr_generate, args=(N, E, POLY, STATE, PY_COUNT), rounds=3)
    assert otps.tolist() == reference[1][:PY_COUNT]


@c_only
@pytest.mark.parametrize("method", ["crt", "sqm"])
@pytest.mark.parametrize("threads", [1, -1], ids=["1thread", "allthreads"])
def test_rsa_lfsr_verify_core(benchmark, c_core, reference, method, threads):
    benchmark.group = "rsa-lfsr-verify"
    benchmark.extra_info.update(impl="c", method=method, count=COUNT, threads=c_core.effective_num_threads(threads))
    otps, _ = c_core.rsa_lfsr_generate(N, E, POLY, STATE, COUNT)
    assert benchmark(c_core.rsa_lfsr_verify, N, D, POLY, STATE, otps, threads, method) == COUNT


@c_only
@pytest.mark.parametrize("method", ["crt", "sqm"])
def test_rsa_primroot_generate_core(benchmark, c_core, method):
    benchmark.group = "rsa-primroot-generate"
    benchmark.extra_info.update(impl="c", method=method, count=COUNT)
    otps, nxt = benchmark(c_core.rsa_primroot_generate, N, E, 999983, 5, 0, COUNT, None, method)
    assert len(otps) == COUNT and otps[0] == 1 and otps[1] == pow(5, E, N)


@c_only
def test_rsa_lfsr_in_memory_1e7(benchmark, c_core):
    benchmark.group = "rsa-lfsr-cli-u32"
    benchmark.extra_info.update(impl="c in memory", count=10 * COUNT)
    otps, _ = benchmark(c_core.rsa_lfsr_generate, N, E, POLY, STATE, 10 * COUNT)
    assert len(otps) == 10 * COUNT


@c_only
def test_rsa_lfsr_cli_u32_devnull_1e7(benchmark):
    from otpfast_cli.main import cli
    benchmark.group = "rsa-lfsr-cli-u32"
    benchmark.extra_info.update(impl="cli --format u32 --out /dev/null", count=10 * COUNT)
    args = ["batch", "rsa-lfsr", "--p", str(P), "--q", str(Q), "--e", str(E), "--poly", hex(POLY),
            "--state", hex(STATE), "--count", str(10 * COUNT), "--format", "u32", "--out", "/dev/null"]
    result = benchmark(CliRunner().invoke, cli, args, catch_exceptions=False)
    assert result.exit_code == 0 and result.stdout == ""


@c_only
def test_rsa_lfsr_cli_text_1e6(benchmark, c_core, tmp_path):
    from otpfast_cli.main import cli
    benchmark.group = "rsa-lfsr-cli-text"
    benchmark.extra_info.update(impl="cli --format text", count=COUNT)
    out = tmp_path / "otps.txt"
    args = ["batch", "rsa-lfsr", "--p", str(P), "--q", str(Q), "--e", str(E), "--poly", hex(POLY),
            "--state", hex(STATE), "--count", str(COUNT), "--out", str(out)]
    result = benchmark(CliRunner().invoke, cli, args, catch_exceptions=False)
    assert result.exit_code == 0 and out.stat().st_size == 7 * COUNT


# --- batch hotp: the streamed CLI against one in-memory core call ---

HOTP_KEY = bytes.fromhex("3132333435363738393031323334353637383930")
HOTP_COUNT = 10**7


@c_only
def test_hotp_in_memory_1e7(benchmark, c_core):
    benchmark.group = "hotp-cli-u32"
    benchmark.extra_info.update(impl="c in memory", count=HOTP_COUNT)
    values = benchmark(c_core.hotp_batch, HOTP_KEY, 0, HOTP_COUNT, 6, "sha1")
    assert len(values) == HOTP_COUNT and values[0] == 755224


@c_only
@pytest.mark.parametrize("fmt", ["u32", "text"])
def test_hotp_cli_devnull_1e7(benchmark, fmt):
    from otpfast_cli.main import cli
    benchmark.group = "hotp-cli-u32"
    benchmark.extra_info.update(impl=f"cli --format {fmt} --out /dev/null (streamed)", count=HOTP_COUNT)
    args = ["batch", "hotp", "--secret", HOTP_KEY.hex(), "--count", str(HOTP_COUNT), "--format", fmt,
            "--out", "/dev/null"]
    result = benchmark(CliRunner().invoke, cli, args, catch_exceptions=False)
    assert result.exit_code == 0 and result.stdout == ""
