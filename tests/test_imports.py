"""Layering: each module imports alone, without warnings, and loads nothing above its layer."""
import json
import pkgutil
import subprocess
import sys

import pytest

import otpfast


def _modules():
    names = ["otpfast"]
    for info in pkgutil.walk_packages(otpfast.__path__, "otpfast."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return sorted(names)


# the package itself: no side effects
PACKAGE_FORBIDDEN = ["click", "asyncio", "otpfast_cli", "otpfast._core", "otpfast._core_py",
                     "otpfast._ristretto", "otpfast._core_py_ristretto"]
# module prefix -> modules it (and its submodules) must never load
FORBIDDEN = {
    "otpfast": ["click", "otpfast_cli"],
    "otpfast.protocol": ["asyncio", "otpfast._core", "otpfast.core", "otpfast.net", "otpfast.store"],
    "otpfast.radius.codec": ["asyncio", "otpfast.net", "otpfast.store"],
    "otpfast._core_py": ["otpfast.core", "otpfast.net", "otpfast.store"],
    "otpfast._ristretto": ["otpfast.core", "otpfast.net", "otpfast.store"],
    "otpfast.errors": ["otpfast.core"],
    "otpfast.store": ["otpfast.net", "otpfast.radius", "asyncio"],
    "otpfast.services": ["otpfast.net", "otpfast.radius", "asyncio"],
    # readers take bytes: no transport (otpfast.services, for policy, loads the store)
    "otpfast.importers": ["otpfast.net", "otpfast.radius", "asyncio"],
}


def _loaded_after_import(module):
    code = (
        "import importlib, json, sys; importlib.import_module(%r); "
        "print(json.dumps(sorted(sys.modules)))" % module
    )
    out = subprocess.run([sys.executable, "-W", "error", "-c", code],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module", _modules())
def test_imports_module_alone_respects_layers(module):
    loaded = _loaded_after_import(module)
    for prefix, banned in FORBIDDEN.items():
        if module == prefix or module.startswith(prefix + "."):
            for b in banned:
                hits = [m for m in loaded if m == b or m.startswith(b + ".")]
                assert not hits, f"{module} loads {hits}"


def test_imports_package_is_free_of_side_effects():
    loaded = _loaded_after_import("otpfast")
    assert not loaded & set(PACKAGE_FORBIDDEN)
