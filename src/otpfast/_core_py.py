"""Pure-Python twin of otpfast._core: the executable spec."""
OPENMP_ENABLED = False
from ._core_py_hash import *  # noqa: E402,F401,F403
