"""Selection between the compiled core and its pure-Python twin."""
import importlib
import os

NO_EXTENSIONS = os.environ.get("OTPFAST_NO_EXTENSIONS", "") not in ("", "0")
USE_EXTENSIONS = not NO_EXTENSIONS


def load_impl(name):
    """Return the core module: ``"c"`` -> otpfast._core, ``"py"`` -> otpfast._core_py."""
    if name == "c":
        return importlib.import_module("otpfast._core")
    if name == "py":
        return importlib.import_module("otpfast._core_py")
    raise ValueError(f"unknown implementation {name!r}")


def load_ristretto(name):
    """Return the ristretto255 module: ``"c"`` -> otpfast._ristretto (optional, built only
    with libsodium-dev), ``"py"`` -> otpfast._core_py_ristretto (ctypes, needs libsodium23)."""
    if name == "c":
        return importlib.import_module("otpfast._ristretto")
    if name == "py":
        return importlib.import_module("otpfast._core_py_ristretto")
    raise ValueError(f"unknown implementation {name!r}")
