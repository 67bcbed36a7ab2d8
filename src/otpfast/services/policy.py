"""Account types and the validated, non-secret settings of an account.

Limits (each a documented choice):

* ``ttl``: how long an issued OTP stays valid, default 300 s. Accepted 1..86400 s; the
  paper's 2-15 minutes (120..900 s) lies inside. Only server-issued OTPs expire.
* ``lockout``: recent failed verifications before the account locks, default 10, 1..100.
  Failures leak away (one per ``FAILURE_LEAK``); a success does not reset them. Reaching
  the lockout locks the account for ``FIRST_LOCK``, twice as long at each repeated lock up
  to ``MAX_LOCK``, and the lock lifts by itself (``lockout_policy`` "temporary", the
  default); with "permanent" it holds until ``otpfast account unlock``. ``otpfast account
  lock`` locks any account for good; ``unlock`` clears failures, lock and back-off.
* ``window``: HOTP look-ahead for authenticator apps (and hash-chain values skipped by
  requests never verified), default 10, 0..100. TOTP accepts the current step +-1.
* ``digits``: HOTP/TOTP 6..8 (RFC 4226); RSA types as ``rsaparams`` allows (paper: 6).
* ``chain_length``: hash-chain uses, default 1000, 1..1,000,000.
* ``authorities``: distinct positive authority ids; the ceremony combines their
  contributions in ascending id order.
"""
import hashlib

from otpfast.errors import InvalidParameter
from otpfast.store import LOCKED_FOR_GOOD

from .throttle import Rate

TYPES = ("hotp", "totp", "hashchain", "rsa-prf", "rsa-lfsr", "rsa-primroot")
INSECURE_TYPES = ("rsa-lfsr", "rsa-primroot")
SERVER_ISSUED = ("hotp", "hashchain", "rsa-prf", "rsa-lfsr", "rsa-primroot")
RSA_TYPES = ("rsa-prf", "rsa-lfsr", "rsa-primroot")

DEFAULT_TTL, MIN_TTL, MAX_TTL = 300, 1, 86_400
DEFAULT_LOCKOUT, MAX_LOCKOUT = 10, 100
LOCKOUT_POLICIES = ("temporary", "permanent")
DEFAULT_LOCKOUT_POLICY = "temporary"    # a lock anyone can trigger must not last for ever
# One failure leaks away per hour: an occasional typo is forgotten within a working day, and
# a guesser who never trips the lock gets at most 24 tries a day at an account.
FAILURE_LEAK = 3600
# The first lock lasts 5 minutes (long for a script, short for a person who mistyped), each
# repeated one twice as long, at most 4 hours: a guesser then gets about one try per lock
# (failures start leaking only when a lock ends), and the owner is back the same day.
FIRST_LOCK = 300
MAX_LOCK = 4 * 3600
# Failed verifications and authentications a source address, and a client name, may cause:
# a burst of 100, then 5 a second. A relay (RADIUS NAS, verifier service) passes on the
# failures of all its users and reaches that only at thousands of logins a second; above
# it requests are refused before any account is read, so a hot source can neither lock
# accounts fast (at most one every 2 s at the default lockout) nor cost a write per guess.
FAILED_PER_SOURCE = Rate(rate=5.0, burst=100)
FAILED_PER_CLIENT = Rate(rate=5.0, burst=100)
DEFAULT_WINDOW, MAX_WINDOW = 10, 100
DEFAULT_CHAIN_LENGTH, MAX_CHAIN_LENGTH = 1000, 1_000_000
DEFAULT_PERIOD = 30
HOTP_ALGORITHMS = ("sha1", "sha256", "sha512")
CHAIN_ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")
RSA_DIGITS = (4, 9)
NAME_MAX = 128


def _int(value, field, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameter(field, f"must be an integer from {low} to {high}, got {value!r}")
    return value


def validate_name(name: str, field: str = "name") -> str:
    if (not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX or not name.isprintable()
            or name != name.strip()):
        raise InvalidParameter(field, f"must be 1..{NAME_MAX} printable characters without "
                               "leading/trailing spaces")
    return name


def parse_authorities(text: str) -> tuple[int, ...]:
    """``"1,2,3,4"`` -> (1, 2, 3, 4)."""
    try:
        ids = [int(part.strip(), 10) for part in text.split(",")]
    except ValueError:
        raise InvalidParameter("authorities", "must be a comma-separated list of authority "
                               "ids, e.g. 1,2,3,4") from None
    return validate_authorities(ids)


def validate_authorities(ids) -> tuple[int, ...]:
    ids = tuple(ids)
    if not ids or any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in ids):
        raise InvalidParameter("authorities", "must be one or more positive authority ids")
    if len(set(ids)) != len(ids):
        raise InvalidParameter("authorities", "an authority is listed twice")
    return tuple(sorted(ids))


def lock_duration(locks: int) -> int:
    """How long the ``locks``-th temporary lock in a row lasts (s)."""
    return min(FIRST_LOCK << min(locks - 1, 32), MAX_LOCK)


def leaked(failures: int, failed_at: int, now: float) -> tuple[int, int]:
    """(failures, failed_at) at ``now``: one failure gone per FAILURE_LEAK since failed_at.
    Times are whole seconds in the store."""
    if failures and now > failed_at:
        gone = int((now - failed_at) // FAILURE_LEAK)
        if gone >= failures:
            return 0, int(now)
        if gone:
            return failures - gone, failed_at + gone * FAILURE_LEAK
    return failures, failed_at


def after_failure(failures: int, failed_at: int, locked_until: int, locks: int,
                  lockout: int, permanent: bool, now: float) -> tuple[int, int, int, int]:
    """The (failures, failed_at, locked_until, locks) of an unlocked account after one more
    failed verification at ``now``."""
    failures, failed_at = leaked(failures, failed_at, now)
    if not failures:
        failed_at = int(now)
        locks = 0               # every earlier failure leaked away: the back-off starts over
    failures += 1
    if failures < lockout:
        return failures, failed_at, locked_until, locks
    if permanent:
        return lockout, failed_at, LOCKED_FOR_GOOD, locks + 1
    locks += 1
    until = int(now) + lock_duration(locks)
    return lockout, until, until, locks     # the failures leak only once the lock ends


def account_params(type: str, *, digits: int | None = None, ttl: int | None = None,
                   algorithm: str | None = None, chain_length: int | None = None,
                   lockout: int | None = None, window: int | None = None,
                   period: int | None = None, authorities=None,
                   insecure_paper_mode: bool = False,
                   lockout_policy: str | None = None) -> dict:
    """Validate the settings of a new account; returns its ``params`` dict."""
    if type not in TYPES:
        raise InvalidParameter("type", f"must be one of {', '.join(TYPES)}, got {type!r}")
    if type in INSECURE_TYPES and not insecure_paper_mode:
        raise InvalidParameter("insecure-paper-mode", f"{type} is the paper's predictable "
                               "RSA-type OTP (insecure, for study only); confirm with "
                               "--insecure-paper-mode")
    params: dict = {
        "lockout": _int(DEFAULT_LOCKOUT if lockout is None else lockout, "lockout", 1,
                        MAX_LOCKOUT),
        "authorities": list(validate_authorities(authorities)) if authorities else [],
    }
    lockout_policy = DEFAULT_LOCKOUT_POLICY if lockout_policy is None else lockout_policy
    if lockout_policy not in LOCKOUT_POLICIES:
        raise InvalidParameter("lockout-policy", f"must be one of {', '.join(LOCKOUT_POLICIES)}")
    if lockout_policy != DEFAULT_LOCKOUT_POLICY:
        params["lockout_policy"] = lockout_policy
    if type in SERVER_ISSUED:
        params["ttl"] = _int(DEFAULT_TTL if ttl is None else ttl, "ttl", MIN_TTL, MAX_TTL)
    elif ttl is not None:
        raise InvalidParameter("ttl", f"{type} OTPs are not issued by the server")
    if type in ("hotp", "totp"):
        params["digits"] = _int(6 if digits is None else digits, "digits", 6, 8)
        algorithm = (algorithm or "sha1").lower()
        if algorithm not in HOTP_ALGORITHMS:
            raise InvalidParameter("algorithm", f"must be one of {', '.join(HOTP_ALGORITHMS)}")
        params["algorithm"] = algorithm
    elif type == "hashchain":
        if digits is not None:
            raise InvalidParameter("digits", "hash-chain OTPs are hex digests")
        algorithm = (algorithm or "sha256").lower()
        if algorithm not in CHAIN_ALGORITHMS:
            raise InvalidParameter("algorithm", f"must be one of {', '.join(CHAIN_ALGORITHMS)}")
        params["algorithm"] = algorithm
        params["chain_length"] = _int(DEFAULT_CHAIN_LENGTH if chain_length is None
                                      else chain_length, "chain-length", 1, MAX_CHAIN_LENGTH)
        params["hex_length"] = 2 * hashlib.new(algorithm).digest_size
    else:
        params["digits"] = _int(6 if digits is None else digits, "digits", *RSA_DIGITS)
        if algorithm is not None:
            raise InvalidParameter("algorithm", f"{type} has no hash algorithm to choose")
    if chain_length is not None and type != "hashchain":
        raise InvalidParameter("chain-length", "only hash-chain accounts have a length")
    if type in ("hotp", "hashchain"):
        params["window"] = _int(DEFAULT_WINDOW if window is None else window, "window", 0,
                                MAX_WINDOW)
    elif window is not None:
        raise InvalidParameter("window", f"{type} has no look-ahead window")
    if type == "totp":
        params["period"] = _int(DEFAULT_PERIOD if period is None else period, "period", 1, 3600)
    elif period is not None:
        raise InvalidParameter("period", "only TOTP accounts have a period")
    if type in INSECURE_TYPES:
        params["insecure"] = True
    return params
