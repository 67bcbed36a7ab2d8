"""Public facade over the native core: picks otpfast._core, or _core_py when
OTPFAST_NO_EXTENSIONS=1. A missing or broken build raises; it never falls back silently."""
from typing import TYPE_CHECKING

from ._compat import NO_EXTENSIONS

if TYPE_CHECKING or NO_EXTENSIONS:
    from . import _core_py as _impl

    IMPLEMENTATION = "py"
else:
    try:
        from . import _core as _impl
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ImportError(
            "otpfast's compiled core (otpfast._core) failed to import; rebuild it "
            "(pip install .) or set OTPFAST_NO_EXTENSIONS=1 for the pure-Python core"
        ) from exc
    IMPLEMENTATION = "c"

OPENMP_ENABLED = bool(getattr(_impl, "OPENMP_ENABLED", False))
