import os
import sys

import pytest

from otpfast._compat import NO_EXTENSIONS, load_impl


def _impl_params():
    params = [pytest.param("py", id="py")]
    if not NO_EXTENSIONS:
        params.insert(0, pytest.param("c", id="c"))
    return params


@pytest.fixture(scope="session", params=_impl_params())
def impl(request):
    return load_impl(request.param)


# bench/ is not a package (pytest imports its files by path): its helper modules
# (_measure) are imported from here
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
