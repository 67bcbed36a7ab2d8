"""OATH CSV, the seed-file format of privacyIDEA's and LinOTP's token import.

One token per line, comma-separated, spaces around fields ignored, "quoted" fields allowed;
blank lines and lines starting with # are skipped. Accepted columns::

    serial, key, [type], [digits], [counter | time step], [algorithm]

* ``serial`` (required): the token's serial; a serial given twice is refused.
* ``key`` (required): the secret in hex, at least 128 bits.
* ``type``: ``hotp`` (the default, as privacyIDEA) or ``totp``; OCRA, TAN and other types
  are refused.
* ``digits``: 6 (default), 7 or 8.
* 5th column: for HOTP the counter (default 0, as privacyIDEA reads it), for TOTP the time
  step in seconds (default 30).
* ``algorithm``: ``sha1`` (default), ``sha256`` or ``sha512`` (LinOTP's 6th column).
  privacyIDEA and LinOTP guess SHA-256/512 from the key's length, and disagree; otpfast
  does not guess: without this column a token is SHA-1.

privacyIDEA's "version 2" files (first line ``# version: 2``) put ``user, resolver, realm``
before these columns: the user name is kept as the token's user, resolver and realm (which
mean nothing to otpfast) are ignored. Errors name the line.
"""
from __future__ import annotations

import csv
import re

from otpfast.errors import InvalidParameter
from otpfast.hotp import parse_key

from .spec import TokenSpec, check_unique, decode_lines

__all__ = ["read_oathcsv"]

_VERSION = re.compile(r"#\s*version:\s*(\S+)\s*$", re.IGNORECASE)
_USER_COLUMNS = 3  # version 2: user, resolver, realm


def read_oathcsv(data: bytes) -> list[TokenSpec]:
    """All the tokens of the file, or InvalidParameter naming the first bad line."""
    lines = decode_lines(data, "oathcsv")
    version = "1"
    specs: list[TokenSpec] = []
    for number, line in enumerate(lines, 1):
        source = f"line {number}"
        stripped = line.strip()
        match = _VERSION.match(stripped)
        if match and not specs:
            version = match.group(1)
            if version not in ("1", "2"):
                raise InvalidParameter(source, f"unknown OATH CSV version {version!r} (1 or 2)")
            continue
        if not stripped or stripped.startswith("#"):
            continue
        try:
            fields = next(csv.reader([line], skipinitialspace=True))
        except csv.Error as exc:
            raise InvalidParameter(source, f"not CSV: {exc}") from None
        fields = [f.strip() for f in fields]
        user = None
        if version == "2":
            if len(fields) < _USER_COLUMNS:
                raise InvalidParameter(source, "a version 2 line starts with user, resolver, realm")
            user = fields[0] or None
            fields = fields[_USER_COLUMNS:]
        specs.append(_token(fields, source, user))
    if not specs:
        raise InvalidParameter("oathcsv", "the file holds no token")
    return check_unique(specs)


def _token(fields: list[str], source: str, user: str | None) -> TokenSpec:
    if len(fields) < 2 or not fields[0] or not fields[1]:
        raise InvalidParameter(source, "needs at least a serial and a hex key")
    if len(fields) > 6:
        raise InvalidParameter(source, f"has {len(fields)} columns; at most 6 are known "
                               "(serial, key, type, digits, counter or time step, algorithm)")
    fields += [""] * (6 - len(fields))
    serial, key, kind, digits, fifth, algorithm = fields
    try:
        secret = parse_key(hex=key)
    except InvalidParameter as exc:
        raise InvalidParameter(source, f"key: {exc.message}") from None
    kind = (kind or "hotp").lower()
    if kind not in ("hotp", "totp"):
        raise InvalidParameter(source, f"type {kind!r} is not supported (hotp or totp)")
    common = dict(source=source, type=kind, secret=secret, serial=serial, user=user,
                  digits=_number(digits or "6", "digits", source),
                  algorithm=(algorithm or "sha1").lower().replace("-", ""))
    if kind == "hotp":
        return TokenSpec(counter=_number(fifth or "0", "counter", source), **common)
    return TokenSpec(period=_number(fifth or "30", "time step", source), t0=0, drift=0,
                     **common)


def _number(text: str, name: str, source: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise InvalidParameter(source, f"{name}: must be a decimal number, got {text!r}")
    return int(text)
