import importlib.util
import os
import subprocess
import sys

import pytest

from otpfast._compat import NO_EXTENSIONS


def _implementation(env_value, name="IMPLEMENTATION"):
    env = dict(os.environ)
    env.pop("OTPFAST_NO_EXTENSIONS", None)
    if env_value is not None:
        env["OTPFAST_NO_EXTENSIONS"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", f"import otpfast.core as c; print(c.{name})"],
        capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(NO_EXTENSIONS, reason="pure-Python run")
def test_impl_selection_prefers_c_extension():
    assert _implementation(None) == "c"
    assert _implementation("0") == "c"


def test_impl_selection_no_extensions_forces_python():
    assert _implementation("1") == "py"


def test_impl_selection_cli_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "otpfast", "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "otpfast" in out.stdout


def test_impl_selection_ristretto_follows_the_switch():
    """otpfast._ristretto where built (optional: libsodium-dev), else the ctypes twin."""
    built = importlib.util.find_spec("otpfast._ristretto") is not None
    assert _implementation("1", "RISTRETTO_IMPLEMENTATION") == "py"
    if not NO_EXTENSIONS:
        assert _implementation(None, "RISTRETTO_IMPLEMENTATION") == ("c" if built else "py")
