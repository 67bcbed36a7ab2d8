"""Without libsodium (neither otpfast._ristretto built nor libsodium's shared library, as on
a Debian machine without libsodium-dev / libsodium23): otpfast imports and `otpfast demo`
runs; threshold tokens fail with the install hint (the CLI exits 1, no traceback). Simulated
in a child process: the extension's import is blocked and ctypes finds no libsodium."""
import subprocess
import sys

import pytest

HINT = ("threshold (tprf) tokens need libsodium: apt-get install libsodium23 "
        "(libsodium-dev to build the fast path)")
NO_SODIUM = """
import ctypes.util, sys
sys.modules["otpfast._ristretto"] = None  # import otpfast._ristretto -> ImportError
_find = ctypes.util.find_library
ctypes.util.find_library = lambda name: None if name == "sodium" else _find(name)
"""
CLI = NO_SODIUM + "from otpfast_cli.main import cli\ncli(prog_name='otpfast')\n"

CHECKS = NO_SODIUM + """
import otpfast, otpfast.core as core
from otpfast import tprf
from otpfast.errors import ThresholdUnavailable
assert core.RISTRETTO_IMPLEMENTATION == "py", core.RISTRETTO_IMPLEMENTATION
calls = [tprf.require, tprf.random_scalar, lambda: tprf.hash_to_group(b"x"),
         lambda: tprf.derive_key_pair(bytes(32), b"info"),
         lambda: tprf.is_element(bytes(32)), lambda: tprf.scalar_add(b"bad", b"bad"),
         lambda: tprf.evaluate_inputs(bytes(32), [b"x"]), lambda: tprf.prf(bytes(32), b"x"),
         lambda: tprf.split(bytes(32), 2, 3), lambda: tprf.lagrange_coefficients([1, 2]),
         lambda: core.r255_mul_many(bytes(32), []), lambda: core.r255_scalar_random()]
for call in calls:
    try:
        call()
    except ThresholdUnavailable as exc:
        assert str(exc) == %r, str(exc)
    else:
        raise AssertionError(f"{call} ran without libsodium")
print("all refused")
""" % HINT


def _run(code, *args, timeout=120):
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout)


def test_no_sodium_tprf_entry_points_name_the_package():
    out = _run(CHECKS)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "all refused"


def test_no_sodium_demo_runs():
    out = _run(CLI, "demo")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "demo ok: every step behaved"


@pytest.mark.parametrize("args", [
    ["demo", "--threshold"],
    ["token", "add", "alice", "--type", "tprf", "--cluster", "/nonexistent/cluster.json"],
    ["share-server", "serve", "--data-dir", "/nonexistent"],
], ids=["demo-threshold", "token-add-tprf", "share-server"])
def test_no_sodium_threshold_commands_exit_1_with_the_hint(args):
    out = _run(CLI, *args, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.strip() == f"Error: {HINT}"
    assert "Traceback" not in out.stderr
