"""TOTP (RFC 6238): time-based HOTP with T = floor((unix_time - T0) / step).

The clock is injected (``clock=time.time`` by default) so tests and servers control time.
``verify`` returns the matched time step; with ``after_step`` only later steps are accepted, so
a caller that stores the last accepted step forbids reuse of an OTP.
"""
import math
import time

from .errors import InvalidParameter, InvalidToken
from .hotp import (
    HOTP,
    check_otp_format,
    generate_key,
    parse_key,
    validate_algorithm,
    validate_digits,
    validate_key,
)

__all__ = ["TOTP", "batch_values", "generate_key", "parse_key", "timecode"]

_MAX_STEP = 2**64 - 1


def timecode(at, *, step=30, t0=0):
    """RFC 6238 §4.2: T = floor((at - T0) / step)."""
    if isinstance(at, bool) or not isinstance(at, (int, float)) or (isinstance(at, float) and not math.isfinite(at)):
        raise InvalidParameter("time", f"must be a finite number of seconds, got {at!r}")
    if isinstance(at, int) and isinstance(t0, int):
        t = (at - t0) // step
    else:
        t = math.floor((at - t0) / step)
    if not 0 <= t <= _MAX_STEP:
        raise InvalidParameter("time", "the time is before T0 or too far in the future")
    return t


class TOTP:
    """RFC 6238 TOTP for one key."""

    __slots__ = ("_hotp", "digits", "algorithm", "step", "t0", "clock")

    def __init__(self, key, *, digits=6, algorithm="sha1", step=30, t0=0, clock=time.time):
        key = validate_key(key)
        self.digits = validate_digits(digits)
        self.algorithm = validate_algorithm(algorithm)
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise InvalidParameter("step", f"must be a positive integer number of seconds, got {step!r}")
        if isinstance(t0, bool) or not isinstance(t0, int) or t0 < 0:
            raise InvalidParameter("t0", f"must be a non-negative integer, got {t0!r}")
        self.step = step
        self.t0 = t0
        self.clock = clock
        self._hotp = HOTP(key, digits=digits, algorithm=self.algorithm)

    def __repr__(self):
        return f"TOTP(digits={self.digits}, algorithm={self.algorithm!r}, step={self.step}, t0={self.t0})"

    def timecode(self, at):
        return timecode(at, step=self.step, t0=self.t0)

    def _now(self, at):
        return self.clock() if at is None else at

    def generate(self, at=None):
        """The OTP for time `at` (unix seconds; default: the clock)."""
        return self._hotp.generate(self.timecode(self._now(at)))

    def generate_step(self, step_index):
        """The OTP of time step `step_index`."""
        return self._hotp.generate(step_index)

    def values(self, first_step, count):
        """OTPs of steps first_step .. first_step+count-1 as integers (array('I'))."""
        return self._hotp.values(first_step, count)

    def verify(self, otp, *, at=None, window=1, after_step=None):
        """Accept `otp` within ±`window` steps of time `at`; return the matched step.
        Steps <= `after_step` are never accepted (replay protection). Raises InvalidToken."""
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise InvalidParameter("window", f"must be a non-negative integer, got {window!r}")
        check_otp_format(otp, self.digits)
        now = self.timecode(self._now(at))
        first = max(now - window, 0)
        if after_step is not None:
            if isinstance(after_step, bool) or not isinstance(after_step, int):
                raise InvalidParameter("after_step", f"must be an integer or None, got {after_step!r}")
            first = max(first, after_step + 1)
        last = min(now + window, _MAX_STEP)
        if first > last:
            raise InvalidToken()
        try:
            return self._hotp.verify(otp, first, window=last - first)
        except InvalidToken:
            raise InvalidToken() from None


def batch_values(key, *, time, count, step=30, t0=0, digits=6, algorithm="sha1", num_threads=None):
    """TOTP values for `count` consecutive steps from floor((time - t0) / step), as array('I')."""
    key = validate_key(key)
    digits = validate_digits(digits)
    algorithm = validate_algorithm(algorithm)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise InvalidParameter("step", f"must be a positive integer number of seconds, got {step!r}")
    first = timecode(time, step=step, t0=t0)
    return first, HOTP(key, digits=digits, algorithm=algorithm).values(first, count, num_threads=num_threads)
