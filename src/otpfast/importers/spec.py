"""TokenSpec: one imported (or exported) OATH token, validated, and the helpers its readers share.

A reader turns a whole file into a list of TokenSpec or raises InvalidParameter: all or
nothing. The error's ``field`` names where in the file it failed ("line 3",
"KeyPackage 2 (serial 987654321)"), its message what was wrong; no secret is ever echoed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from otpfast.errors import InvalidParameter
from otpfast.hotp import validate_key
from otpfast.services import policy

__all__ = ["TokenSpec", "TYPES", "decode_lines", "check_unique"]

TYPES = ("hotp", "totp")
TEXT_MAX = 256  # issuer and description: free text, bounded
MAX_COUNTER = 2**64 - 1
MAX_T0 = 2**63 - 1
MAX_DRIFT_SECONDS = 86_400  # the resync window of issue 10: a clock off by more is refused


@dataclass(frozen=True, kw_only=True)
class TokenSpec:
    """One HOTP or TOTP token. HOTP uses ``counter`` (period, t0 and drift are None); TOTP
    uses ``period``, ``t0`` (seconds) and ``drift`` (the device's clock drift in steps;
    counter is None). ``source`` says where it came from, for error messages."""

    source: str
    type: str
    secret: bytes = field(repr=False)
    digits: int = 6
    algorithm: str = "sha1"
    counter: int | None = None
    period: int | None = None
    t0: int | None = None
    drift: int | None = None
    serial: str | None = None
    user: str | None = None
    issuer: str | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        try:
            self._validate()
        except InvalidParameter as exc:
            raise InvalidParameter(self.source, f"{exc.field}: {exc.message}") from None

    def _validate(self) -> None:
        if self.type not in TYPES:
            raise InvalidParameter("type", f"must be hotp or totp, got {self.type!r}")
        validate_key(self.secret)
        # the same limits `account add` applies (digits 6..8, algorithm, period 1..3600)
        policy.account_params(self.type, digits=self.digits, algorithm=self.algorithm,
                              period=self.period if self.type == "totp" else None)
        if self.algorithm != self.algorithm.lower():
            raise InvalidParameter("algorithm", "must be lower case (sha1, sha256, sha512)")
        if self.type == "hotp":
            _int(self.counter, "counter", 0, MAX_COUNTER)
            for name in ("period", "t0", "drift"):
                if getattr(self, name) is not None:
                    raise InvalidParameter(name, "only TOTP tokens have one")
        else:
            if self.counter is not None:
                raise InvalidParameter("counter", "only HOTP tokens have one")
            if self.period is None:
                raise InvalidParameter("period", "a TOTP token needs one")
            _int(self.t0, "t0", 0, MAX_T0)
            limit = MAX_DRIFT_SECONDS // self.period
            _int(self.drift, "drift", -limit, limit)
        if self.serial is not None:
            policy.validate_name(self.serial, "serial")
        if self.user is not None:
            policy.validate_name(self.user, "user")
        for name in ("issuer", "description"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.isprintable()
                                      or len(value) > TEXT_MAX):
                raise InvalidParameter(name, f"must be at most {TEXT_MAX} printable characters")


def _int(value: object, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameter(name, f"must be an integer from {low} to {high}, got {value!r}")


def decode_lines(data: bytes, fmt: str) -> list[str]:
    """The lines of a UTF-8 text file (a leading BOM dropped); a bad byte is named by line."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidParameter(fmt, "the file content must be bytes")
    data = bytes(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InvalidParameter(f"line {line}", "not UTF-8 text") from None
    return text.splitlines()


def check_unique(specs: list[TokenSpec]) -> list[TokenSpec]:
    """Refuse a file that names one serial twice (which one would win is a guess)."""
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.serial is None:
            continue
        if spec.serial in seen:
            raise InvalidParameter(spec.source, f"serial {spec.serial!r} was already given "
                                   f"by {seen[spec.serial]}")
        seen[spec.serial] = spec.source
    return specs
