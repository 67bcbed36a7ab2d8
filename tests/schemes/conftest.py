import json
import pathlib
import shutil
import subprocess

import pytest

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "vectors"


@pytest.fixture(scope="session")
def vectors():
    """``vectors(name)`` -> the parsed JSON file tests/vectors/<name>."""
    def load(name):
        return json.loads((VECTORS / name).read_text("utf-8"))
    return load


@pytest.fixture(scope="session")
def oathtool(require_service):
    """``oathtool(*args)`` -> stdout lines of the oath-toolkit CLI (skips outside CI if absent)."""
    path = shutil.which("oathtool")
    require_service(path is not None, "oathtool (Debian package oathtool)")

    def run(*args):
        out = subprocess.run([path, *args], capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.split()
    return run
