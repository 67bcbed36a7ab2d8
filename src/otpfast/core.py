"""Public facade over the native core: picks otpfast._core, or _core_py when
OTPFAST_NO_EXTENSIONS=1. A missing or broken build raises; it never falls back silently.

ristretto255 (threshold tokens only) needs libsodium, an optional system dependency: it
comes from otpfast._ristretto when that was built (libsodium-dev present at install), else
from the ctypes twin _core_py_ristretto, whose every function raises ThresholdUnavailable
when libsodium's shared library is missing. RISTRETTO_IMPLEMENTATION says which."""
import functools
from typing import TYPE_CHECKING

from ._compat import NO_EXTENSIONS
from .errors import InvalidParameter

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

effective_num_threads = _impl.effective_num_threads
lfsr_step = _impl.lfsr_step
lfsr_fill = _impl.lfsr_fill
lfsr_advance = _impl.lfsr_advance
lfsr_is_primitive = _impl.lfsr_is_primitive
lfsr_count_primitive = _impl.lfsr_count_primitive
lfsr_primitive_at = _impl.lfsr_primitive_at
lfsr_primitive_all = _impl.lfsr_primitive_all
modexp_batch = _impl.modexp_batch
rsa_lfsr_generate = _impl.rsa_lfsr_generate
rsa_lfsr_verify = _impl.rsa_lfsr_verify
rsa_lfsr_verify_mask = _impl.rsa_lfsr_verify_mask
rsa_primroot_generate = _impl.rsa_primroot_generate
rsa_primroot_verify = _impl.rsa_primroot_verify
rsa_primroot_verify_mask = _impl.rsa_primroot_verify_mask
format_decimal = _impl.format_decimal
hotp_batch = _impl.hotp_batch
hashchain_batch = _impl.hashchain_batch
rfc2289_batch = _impl.rfc2289_batch
rfc2289_fold = _impl.rfc2289_fold
row_encode = _impl.row_encode
row_macs = _impl.row_macs
audit_chain_macs = _impl.audit_chain_macs
issued_used_macs = _impl.issued_used_macs
HmacSha256 = _impl.HmacSha256
HmacMd5 = _impl.HmacMd5


def _pick_ristretto():
    if not (TYPE_CHECKING or NO_EXTENSIONS):
        try:
            from . import _ristretto
        except ImportError:  # not built: no libsodium-dev at install time
            pass
        else:
            return _ristretto, "c"
    from . import _core_py_ristretto

    return _core_py_ristretto, "py"


_r255, RISTRETTO_IMPLEMENTATION = _pick_ristretto()
require_ristretto = _r255.require


def _needs_sodium(function):
    if RISTRETTO_IMPLEMENTATION == "c":
        return function

    @functools.wraps(function)
    def call(*args, **kwargs):
        require_ristretto()  # the missing library, before any complaint about the arguments
        return function(*args, **kwargs)
    return call


R255_ORDER = _r255.R255_ORDER
r255_hash_to_group = _needs_sodium(_r255.r255_hash_to_group)
r255_hash_to_scalar = _needs_sodium(_r255.r255_hash_to_scalar)
r255_is_valid = _needs_sodium(_r255.r255_is_valid)
r255_add = _needs_sodium(_r255.r255_add)
r255_sub = _needs_sodium(_r255.r255_sub)
r255_mul = _needs_sodium(_r255.r255_mul)
r255_mul_base = _needs_sodium(_r255.r255_mul_base)
r255_mul_many = _needs_sodium(_r255.r255_mul_many)
r255_hash_mul_many = _needs_sodium(_r255.r255_hash_mul_many)
r255_msm = _needs_sodium(_r255.r255_msm)
r255_scalar_reduce = _needs_sodium(_r255.r255_scalar_reduce)
r255_scalar_add = _needs_sodium(_r255.r255_scalar_add)
r255_scalar_sub = _needs_sodium(_r255.r255_scalar_sub)
r255_scalar_mul = _needs_sodium(_r255.r255_scalar_mul)
r255_scalar_negate = _needs_sodium(_r255.r255_scalar_negate)
r255_scalar_invert = _needs_sodium(_r255.r255_scalar_invert)
r255_scalar_random = _needs_sodium(_r255.r255_scalar_random)

_WORD_MOD = 1 << 63
_WORD_EXP = 1 << 64


def modexp(base, exp, mod):
    """base^exp mod mod for any 1 < mod and exp >= 0: machine words in the core
    (mod < 2^63, exp < 2^64), larger numbers through GMP (gmpy2.powmod)."""
    if isinstance(mod, int) and isinstance(exp, int) and (mod >= _WORD_MOD or exp >= _WORD_EXP):
        if exp < 0:
            raise InvalidParameter("exp", "must not be negative")
        if isinstance(base, int) and base < 0:
            raise InvalidParameter("base", "must not be negative")
        import gmpy2

        return int(gmpy2.powmod(base, exp, mod))
    return _impl.modexp(base, exp, mod)
