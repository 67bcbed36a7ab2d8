"""PSKC (RFC 6030) key containers, read and written through python-pskc.

Reading: plaintext keys, keys encrypted under a pre-shared key (AES-CBC with an HMAC over
each value, RFC 6030 §6.1) and keys under a PBKDF2-derived key (§6.2). Rules on top of the
library's, each closing a hole a hostile or damaged file could use:

* every CBC-encrypted value must carry a MAC, and every MAC must match (python-pskc skips the
  check when the <ValueMAC> element is simply left out); a bad MAC imports nothing;
* when a key or password is given, every secret must be encrypted: a <PlainValue> secret
  slipped into an encrypted file (which python-pskc would prefer over the encrypted one) is
  refused;
* no DOCTYPE (no entity tricks), a bounded PBKDF2 cost, HOTP and TOTP only, decimal
  responses only, no key policy we do not understand (RFC 6030 §5 says such a key must not
  be used).

Carried over: serial (<SerialNo>; a Key Id only names a key inside one file), counter, time
step (<TimeInterval>), <Time> as T0 counted in time steps (python-pskc's reading),
<TimeDrift> (steps), digits (<ResponseFormat Length>), hash (<Suite>, default HMAC-SHA1),
issuer, friendly name and <UserId> (kept verbatim as the token's user). Errors name the
KeyPackage and its serial.

Writing: ``export_pskc`` always encrypts the secrets (AES-CBC + HMAC-SHA1 under a pre-shared
key, or under a PBKDF2-HMAC-SHA1 key from a password); counters and time steps stay in
plaintext, as RFC 6030 allows.
"""
from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any
from xml.parsers import expat

import pskc
from pskc.exceptions import PSKCError
from pskc.key import EncryptedValue

from otpfast.errors import InvalidParameter

from .spec import TokenSpec, check_unique

__all__ = ["read_pskc", "export_pskc", "PBKDF2_ITERATIONS", "MAX_PBKDF2_ITERATIONS"]

PBKDF2_ITERATIONS = 100_000  # what we write: python-pskc's default
# a hostile file must not make an import spin: ~1 s of PBKDF2-HMAC-SHA1 on this machine
MAX_PBKDF2_ITERATIONS = 2_000_000
_AES_KEY_BYTES = (16, 24, 32)
_MAC_HASHES = ("hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512")
_URN = "urn:ietf:params:xml:ns:keyprov:pskc:"
# what a failed decryption most likely means, for the admin reading the error
_WRONG_KEY = " (a wrong pre-shared key or password, or an altered file: nothing imported)"
_HINTS = {"Invalid padding": _WRONG_KEY, "MAC value does not match": _WRONG_KEY}
_FIELDS = ("secret", "counter", "time_offset", "time_interval", "time_drift")


def read_pskc(data: bytes, *, psk: bytes | None = None,
              password: str | None = None) -> list[TokenSpec]:
    """All the keys of a PSKC file, or InvalidParameter: nothing is returned from a file
    with one bad key, one bad MAC or the wrong key/password."""
    if psk is not None and password is not None:
        raise InvalidParameter("pskc", "give a pre-shared key or a password, not both")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidParameter("pskc", "the file content must be bytes")
    data = bytes(data)
    _check_xml(data)
    try:
        container = pskc.PSKC(io.BytesIO(data))
    except Exception:  # third-party parser over untrusted bytes: any failure means unreadable
        raise InvalidParameter("pskc", "not a readable PSKC (RFC 6030) key container") from None
    encrypted = _unlock(container, psk, password)
    specs: list[TokenSpec] = []
    for number, device in enumerate(container.devices, 1):
        for index, key in enumerate(device.keys, 1):
            source = f"KeyPackage {number}"
            if len(device.keys) > 1:
                source += f" key {index}"
            if key.serial:  # a hostile serial must not garble the error message
                shown = key.serial[:64]
                source += f" (serial {shown if shown.isprintable() else repr(shown)})"
            specs.append(_token(container, key, source, encrypted))
    if not specs:
        raise InvalidParameter("pskc", "the file holds no KeyPackage")
    return check_unique(specs)


def _check_xml(data: bytes) -> None:
    """Well-formed XML without a DOCTYPE (PSKC needs none; entities are an attack surface)."""
    def refuse(*_args: object) -> None:
        raise InvalidParameter("pskc", "a DOCTYPE or entity declaration is not allowed")

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise InvalidParameter("pskc", f"not well-formed XML (line {exc.lineno}: "
                               f"{expat.ErrorString(exc.code)})") from None


def _stored(key: pskc.key.Key, name: str) -> object:
    # python-pskc keeps each data field as "_<name>": a plain value or an EncryptedValue
    return vars(key).get("_" + name)


def _unlock(container: pskc.PSKC, psk: bytes | None, password: str | None) -> bool:
    """Give python-pskc the decryption key; True when the file is encrypted."""
    derivation = container.encryption.derivation
    # encrypted: any value is, or the container declares a cipher, a derived key or a MAC
    # (a <PlainValue> next to an <EncryptedValue> hides the latter from the first test)
    encrypted = any(isinstance(_stored(key, name), EncryptedValue)
                    for key in container.keys for name in _FIELDS) or any(
        (container.encryption.algorithm, derivation.algorithm, container.mac.algorithm))
    if psk is None and password is None:
        if encrypted:
            raise InvalidParameter("pskc", "the keys are encrypted: give the pre-shared key "
                                   "or the password")
        return False
    if not encrypted:
        raise InvalidParameter("pskc", "a key or password was given but the file is not "
                               "encrypted (and so has no integrity check)")
    if psk is not None:
        if derivation.algorithm is not None:
            raise InvalidParameter("pskc", "the file is protected by a password (PBKDF2), "
                                   "not a pre-shared key")
        if not isinstance(psk, bytes) or len(psk) not in _AES_KEY_BYTES:
            raise InvalidParameter("psk", "a pre-shared key is 16, 24 or 32 bytes")
        container.encryption.key = psk
        return True
    if derivation.algorithm is None:
        raise InvalidParameter("pskc", "the file is protected by a pre-shared key, "
                               "not a password")
    if not isinstance(password, str) or not password:
        raise InvalidParameter("password", "must be a non-empty string")
    iterations = derivation.pbkdf2_iterations
    if not isinstance(iterations, int) or not 1 <= iterations <= MAX_PBKDF2_ITERATIONS:
        raise InvalidParameter("pskc", f"PBKDF2 iteration count {iterations!r} is outside "
                               f"1..{MAX_PBKDF2_ITERATIONS}")
    if derivation.pbkdf2_key_length not in _AES_KEY_BYTES:
        raise InvalidParameter("pskc", "PBKDF2 key length must be 16, 24 or 32 bytes")
    try:
        container.encryption.derive_key(password)
    except (PSKCError, ValueError, TypeError) as exc:
        raise InvalidParameter("pskc", f"cannot derive the key from the password: {exc}") from None
    return True


def _value(container: pskc.PSKC, key: pskc.key.Key, name: str, source: str,
           encrypted: bool) -> Any:
    stored = _stored(key, name)
    label = name.replace("_", " ")
    if isinstance(stored, EncryptedValue):
        algorithm = stored.algorithm or container.encryption.algorithm or ""
        if algorithm.endswith("-cbc"):
            if not stored.mac_value:
                raise InvalidParameter(source, f"the encrypted {label} has no MAC (RFC 6030 "
                                       "requires one with CBC encryption)")
            if container.mac.algorithm is None or not container.mac.algorithm.endswith(_MAC_HASHES):
                raise InvalidParameter(source, f"unsupported MAC algorithm "
                                       f"{container.mac.algorithm!r}")
    elif stored is not None and encrypted and name == "secret":
        raise InvalidParameter(source, "the secret is in plaintext inside an encrypted file")
    try:
        return getattr(key, name)
    except (PSKCError, ValueError, TypeError, ArithmeticError) as exc:
        hint = _HINTS.get(str(exc), "")
        raise InvalidParameter(source, f"cannot read the {label}: {exc}{hint}") from None


def _token(container: pskc.PSKC, key: pskc.key.Key, source: str,
           encrypted: bool) -> TokenSpec:
    values = {name: _value(container, key, name, source, encrypted) for name in _FIELDS}
    kind = (key.algorithm or "").rsplit("#", 1)[-1].rsplit(":", 1)[-1].lower()
    if kind not in ("hotp", "totp"):
        raise InvalidParameter(source, f"algorithm {key.algorithm!r} is not supported "
                               "(HOTP and TOTP only)")
    if values["secret"] is None:
        raise InvalidParameter(source, "the file holds no secret for this key")
    if key.response_encoding not in (None, "DECIMAL") or key.response_check:
        raise InvalidParameter(source, "only decimal responses without a check digit are "
                               "supported")
    if key.policy.unknown_policy_elements:
        raise InvalidParameter(source, "the key has a policy otpfast does not understand "
                               "(RFC 6030 §5: it must not be used)")
    suite = (key.algorithm_suite or "HMAC-SHA1").lower().replace("-", "")
    common = dict(
        source=source, type=kind, secret=values["secret"],
        digits=6 if key.response_length is None else key.response_length,
        algorithm=suite.removeprefix("hmac"), serial=key.serial,
        user=key.key_userid or key.device_userid, issuer=key.issuer,
        description=key.friendly_name)
    if kind == "hotp":
        return TokenSpec(counter=values["counter"] or 0, **common)
    period = values["time_interval"] or 30
    t0 = (values["time_offset"] or 0) * period
    return TokenSpec(period=period, t0=t0, drift=values["time_drift"] or 0, **common)


def export_pskc(specs: Iterable[TokenSpec], *, psk: bytes | None = None,
                password: str | None = None,
                iterations: int = PBKDF2_ITERATIONS) -> bytes:
    """An encrypted PSKC file of `specs`: secrets under AES-CBC + HMAC-SHA1 with the
    pre-shared key `psk` (16, 24 or 32 bytes), or under a PBKDF2 key from `password`."""
    if (psk is None) == (password is None):
        raise InvalidParameter("pskc", "give exactly one of a pre-shared key or a password")
    container = pskc.PSKC()
    for number, spec in enumerate(specs, 1):
        if not isinstance(spec, TokenSpec):
            raise InvalidParameter("pskc", f"item {number} is not a TokenSpec")
        key = container.add_key(
            id=spec.serial or str(number), serial=spec.serial, secret=spec.secret,
            algorithm=_URN + spec.type, response_length=spec.digits,
            response_encoding="DECIMAL", issuer=spec.issuer, friendly_name=spec.description,
            key_userid=spec.user)
        if spec.algorithm != "sha1":
            key.algorithm_suite = "HMAC-" + spec.algorithm.upper()
        if spec.type == "hotp":
            key.counter = spec.counter
        else:
            assert spec.period is not None and spec.t0 is not None
            if spec.t0 % spec.period:
                raise InvalidParameter(spec.source, "t0 must be a whole number of time steps "
                                       "to be written as PSKC <Time>")
            key.time_interval = spec.period
            key.time_offset = spec.t0 // spec.period
            if spec.drift:
                key.time_drift = spec.drift
    if not container.keys:
        raise InvalidParameter("pskc", "nothing to export")
    if psk is not None:
        if not isinstance(psk, bytes) or len(psk) not in _AES_KEY_BYTES:
            raise InvalidParameter("psk", "a pre-shared key is 16, 24 or 32 bytes")
        container.encryption.setup_preshared_key(
            key=psk, algorithm=f"aes{len(psk) * 8}-cbc", key_name="Pre-shared-key")
    else:
        if not isinstance(password, str) or not password:
            raise InvalidParameter("password", "must be a non-empty string")
        if not 1 <= iterations <= MAX_PBKDF2_ITERATIONS:
            raise InvalidParameter("iterations", f"must be 1..{MAX_PBKDF2_ITERATIONS}")
        container.encryption.setup_pbkdf2(password, iterations=iterations)
    out = io.BytesIO()
    container.write(out)
    return out.getvalue()
