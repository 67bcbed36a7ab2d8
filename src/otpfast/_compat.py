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
