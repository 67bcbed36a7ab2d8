import os

import pytest

from otpfast._compat import NO_EXTENSIONS, load_impl

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_addoption(parser):
    parser.addoption("--no-c-extensions", action="store_true", default=False,
                     help="test only the pure-Python core")


def _impl_params():
    params = [pytest.param("py", id="py")]
    if not NO_EXTENSIONS:
        params.insert(0, pytest.param("c", id="c", marks=pytest.mark.c_extension))
    return params


@pytest.fixture(scope="session", params=_impl_params())
def impl(request):
    """Each core twin in turn: otpfast._core ([c]) and otpfast._core_py ([py])."""
    if request.param == "c" and request.config.getoption("--no-c-extensions"):
        pytest.skip("--no-c-extensions")
    return load_impl(request.param)


def _require_service(available, what):
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def require_service():
    """``require_service(available, what)``: skip a test that needs a system service
    (KDC, PostgreSQL, oathtool, radclient) outside CI; in CI a missing service fails it."""
    return _require_service
