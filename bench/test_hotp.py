"""HOTP batch throughput: the C kernel (1 thread, all threads) vs pyotp vs `oathtool --window`
vs a Python hmac loop. Every benchmark checks its codes against RFC 4226 / each other.

Per-OTP time = mean / extra_info["otps"]. Run:
    python -m pytest bench/test_hotp.py --benchmark-enable --benchmark-group-by=group
"""
import base64
import hmac
import os
import shutil
import struct
import subprocess

import pyotp
import pytest

from otpfast._compat import NO_EXTENSIONS, load_impl

KEY = b"12345678901234567890"
RFC4226 = [755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489]
N_FAST = 2_000_000
N_OATHTOOL = 200_000
N_SLOW = 20_000
CORES = len(os.sched_getaffinity(0))

pytestmark = pytest.mark.benchmark(group="hotp")


@pytest.mark.skipif(NO_EXTENSIONS, reason="needs the compiled core")
@pytest.mark.parametrize("threads", [1, CORES], ids=["1-thread", "all-threads"])
def test_hotp_batch_c(benchmark, threads):
    c = load_impl("c")
    benchmark.extra_info.update(otps=N_FAST, threads=threads, openmp=c.OPENMP_ENABLED)
    values = benchmark(c.hotp_batch, KEY, 0, N_FAST, 6, "sha1", num_threads=threads)
    assert list(values[:10]) == RFC4226 and len(values) == N_FAST


def test_hotp_batch_python_twin(benchmark):
    py = load_impl("py")
    benchmark.extra_info.update(otps=N_SLOW)
    values = benchmark(py.hotp_batch, KEY, 0, N_SLOW, 6, "sha1")
    assert list(values[:10]) == RFC4226


def test_hotp_pyotp(benchmark):
    gen = pyotp.HOTP(base64.b32encode(KEY).decode())
    benchmark.extra_info.update(otps=N_SLOW)
    codes = benchmark(lambda: [gen.at(i) for i in range(N_SLOW)])
    assert [int(x) for x in codes[:10]] == RFC4226


def test_hotp_python_hmac_loop(benchmark):
    def loop():
        out = []
        for i in range(N_SLOW):
            mac = hmac.new(KEY, struct.pack(">Q", i), "sha1").digest()
            off = mac[-1] & 15
            out.append((int.from_bytes(mac[off:off + 4], "big") & 0x7FFFFFFF) % 1_000_000)
        return out

    benchmark.extra_info.update(otps=N_SLOW)
    assert benchmark(loop)[:10] == RFC4226


@pytest.mark.skipif(shutil.which("oathtool") is None, reason="oathtool (Debian package) not installed")
def test_hotp_oathtool_window(benchmark):
    cmd = ["oathtool", "--hotp", "-d", "6", "-c", "0", "-w", str(N_OATHTOOL - 1), KEY.hex()]
    benchmark.extra_info.update(otps=N_OATHTOOL)
    out = benchmark.pedantic(lambda: subprocess.run(cmd, capture_output=True, check=True).stdout,
                             rounds=3, iterations=1)
    lines = out.split()
    assert len(lines) == N_OATHTOOL and [int(x) for x in lines[:10]] == RFC4226
