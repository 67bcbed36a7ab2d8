"""Per-type token operations over the scheme classes: material from a secret, issuing the
next OTP, and the OTP syntax of each type. Pure functions: no store, no clock.

Material (JSON-safe, encrypted at rest by the store):

* hotp / totp: ``key`` (hex; 20/32/64 bytes for sha1/256/512)
* hashchain:   ``seed`` (hex, 32 bytes); the store keeps the anchor h(n) as ``chain_last``
* rsa-prf:     ``key`` (hex, 32 bytes), ``p``, ``q``, ``n``, ``e``, ``d``
* rsa-lfsr:    ``p``, ``q``, ``n``, ``e``, ``d``, ``poly_index`` and ``poly`` (the customer's
               primitive polynomial: core.lfsr_primitive_at(20, index mod count)), ``state``
* rsa-primroot: ``p``, ``q``, ``n``, ``e``, ``d``, ``prime``, ``generator``, ``start``
  (see rsa_material.py)

Every value is derived from the account secret through HKDF / an HMAC-DRBG with its own
label, so one derived value reveals nothing about another.
"""
import hashlib
import hmac

from otpfast.errors import InvalidToken, Refused

from .derivation import CHAIN_SEED_BYTES, HOTP_KEY_BYTES, _subkey

_ASCII_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdef")


def derive_material(type: str, params: dict, secret: bytes) -> tuple[dict, bytes | None, int]:
    """(material, initial chain_last, initial counter) of an account from its secret."""
    if type in ("hotp", "totp"):
        key = _subkey(secret, "hotp key", HOTP_KEY_BYTES[params["algorithm"]])
        return {"key": key.hex()}, None, 0
    if type == "hashchain":
        seed = _subkey(secret, "hashchain seed", CHAIN_SEED_BYTES)
        anchor = chain_value(seed, params["chain_length"], params["algorithm"])
        return {"seed": seed.hex()}, anchor, 0
    from . import rsa_material
    return rsa_material.derive(type, params, secret), None, 0


def uses_left(record) -> int | None:
    """Hash chains: the uses the server can still issue (0: exhausted); None for other
    types."""
    if record.type != "hashchain":
        return None
    return max(0, record.params["chain_length"] - record.counter)


def chain_value(seed: bytes, k: int, algorithm: str) -> bytes:
    """h(k) = H^k(seed)."""
    value = seed
    for _ in range(k):
        value = hashlib.new(algorithm, value).digest()
    return value


def hotp_token(record):
    from otpfast.hotp import HOTP
    return HOTP(bytes.fromhex(record.material["key"]), digits=record.params["digits"],
                algorithm=record.params["algorithm"])


class HotpMatcher:
    """The look-ahead check of HOTP verification for one account's key, built once and
    cached by the distribution service: HOTP.verify (constant-time scan of the window)."""

    __slots__ = ("_hotp",)

    def __init__(self, record):
        self._hotp = hotp_token(record)

    def match(self, otp: str, counter: int, window: int) -> int | None:
        """The counter in [counter, counter+window] whose OTP is ``otp``, else None."""
        try:
            return self._hotp.verify(otp, counter, window=window)
        except InvalidToken:
            return None


def totp_token(record):
    from otpfast.totp import TOTP
    return TOTP(bytes.fromhex(record.material["key"]), digits=record.params["digits"],
                algorithm=record.params["algorithm"], step=record.params["period"])


def issue(record) -> tuple[str, int]:
    """The next OTP of a server-issued account and the counter to store after it.
    Raises Refused when the account cannot issue (exhausted chain)."""
    if record.type == "hotp":
        return hotp_token(record).generate(record.counter), record.counter + 1
    if record.type == "hashchain":
        length = record.params["chain_length"]
        if record.counter >= length:
            raise Refused()
        use = record.counter + 1
        seed = bytes.fromhex(record.material["seed"])
        return chain_value(seed, length - use, record.params["algorithm"]).hex(), use
    from . import rsa_material
    return rsa_material.issue(record)


def well_formed(record, otp) -> bool:
    """Exact syntax: ASCII digits of the account's length, or lower/upper-case hex of the
    digest length for hash chains. Nothing else (no spaces, no other scripts' digits)."""
    if not isinstance(otp, str):
        return False
    if record.type == "hashchain":
        return len(otp) == record.params["hex_length"] and set(otp.lower()) <= _HEX
    return len(otp) == record.params["digits"] and set(otp) <= _ASCII_DIGITS


def chain_match(record, otp: str) -> bool:
    """Paper Algorithm 1: H(x) == last accepted value; values skipped by requests that were
    never verified are allowed within the account's window (H^k(x) == last, k <= window+1)."""
    value = bytes.fromhex(otp)
    last = record.chain_last
    algorithm = record.params["algorithm"]
    matched = False
    for _ in range(record.params["window"] + 1):
        value = hashlib.new(algorithm, value).digest()
        matched |= hmac.compare_digest(value, last)
    return matched
