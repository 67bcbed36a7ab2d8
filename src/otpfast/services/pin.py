"""PINs and recovery codes: salted keyed hashes under the store's pepper.

A PIN (``otpfast account set-pin``) is stored in the account's params as
``{"salt": hex, "hash": hex}``: HMAC-SHA256 under ``AtRestKeys.pin_mac`` (a key derived from
the at-rest key, never in the database) of the salt, the user and the PIN. A stolen store
alone cannot be searched even for 4-digit PINs; a check costs microseconds (no memory-hard
KDF: whoever also holds the at-rest key can mint OTPs anyway).

Recovery codes (``token add USER --type recovery``) are 12 base32 characters (60 bits),
shown once as ``xxxx-xxxx-xxxx``; the token keeps only their keyed hashes (under the same
pepper, with the serial) in its encrypted material, and a bit per code in its counter once
used.
"""
import base64
import hmac
import secrets

from otpfast.errors import InvalidParameter

MIN_PIN, MAX_PIN = 4, 64            # characters (policy: the minimum a PIN must have)
SALT_BYTES = 16
RECOVERY_CHARS = 12                 # base32: 5 bits each, 60 bits a code
RECOVERY_GROUP = 4
DEFAULT_RECOVERY_COUNT, MAX_RECOVERY_COUNT = 10, 50
_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def validate_pin(pin: str) -> str:
    if (not isinstance(pin, str) or not MIN_PIN <= len(pin) <= MAX_PIN
            or not pin.isprintable()):
        raise InvalidParameter("pin", f"must be {MIN_PIN}..{MAX_PIN} printable characters")
    return pin


def pin_hash(keys, user: str, salt: bytes, pin: str) -> bytes:
    return keys.pin_mac(b"pin\0%b\0%b\0%b" % (salt, user.encode(), pin.encode()))


def new_pin_record(keys, user: str, pin: str) -> dict:
    salt = secrets.token_bytes(SALT_BYTES)
    return {"salt": salt.hex(), "hash": pin_hash(keys, user, salt, validate_pin(pin)).hex()}


class PinCheck:
    """The PIN of one user, for the verification hot path (salt and hash decoded once)."""

    __slots__ = ("_keys", "_user", "_salt", "_hash")

    def __init__(self, keys, user: str, record: dict):
        self._keys, self._user = keys, user
        self._salt = bytes.fromhex(record["salt"])
        self._hash = bytes.fromhex(record["hash"])

    def check(self, pin: str) -> bool:
        """Constant-time; the same work for any input (a hash of it, one compare)."""
        return hmac.compare_digest(pin_hash(self._keys, self._user, self._salt, pin),
                                   self._hash)


def new_recovery_codes(count: int) -> list[str]:
    codes = []
    for _ in range(count):
        raw = base64.b32encode(secrets.token_bytes(8)).decode()[:RECOVERY_CHARS]
        codes.append("-".join(raw[i:i + RECOVERY_GROUP]
                              for i in range(0, RECOVERY_CHARS, RECOVERY_GROUP)))
    return codes


def normalise_code(text: str) -> str | None:
    """A typed recovery code without ASCII spaces and dashes, upper-case; None if it is not
    one (wrong length or alphabet)."""
    code = text.replace(" ", "").replace("-", "").upper()
    if len(code) != RECOVERY_CHARS or not set(code) <= _BASE32:
        return None
    return code


def recovery_hash(keys, serial: str, code: str) -> bytes:
    return keys.pin_mac(b"recovery\0%b\0%b" % (serial.encode(), code.encode()))


def split_recovery(field: str) -> tuple[str, str]:
    """(PIN, code) of ``PIN + code``: the code is the last RECOVERY_CHARS characters other
    than spaces and dashes, with the separators among them."""
    seen = 0
    for index in range(len(field) - 1, -1, -1):
        if field[index] not in " -":
            seen += 1
            if seen == RECOVERY_CHARS:
                return field[:index], field[index:]
    return "", field
