"""A file of otpauth:// URIs, one per line (blank lines and lines starting with # skipped).

Each URI goes through ``otpfast.keyuri.parse_uri`` (strict: see its docstring); the URI's
account becomes the token's user and no serial is set. Errors name the line.
"""
from __future__ import annotations

from otpfast import keyuri
from otpfast.errors import InvalidParameter

from .spec import TokenSpec, decode_lines

__all__ = ["read_uris"]


def read_uris(data: bytes) -> list[TokenSpec]:
    """All the tokens of the file, or InvalidParameter naming the first bad line."""
    specs: list[TokenSpec] = []
    for number, line in enumerate(decode_lines(data, "uri"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        source = f"line {number}"
        try:
            parsed = keyuri.parse_uri(line)
        except InvalidParameter as exc:
            raise InvalidParameter(source, f"{exc.field}: {exc.message}") from None
        except ValueError:
            raise InvalidParameter(source, "not a valid otpauth:// URI") from None
        totp = parsed.kind == "totp"
        specs.append(TokenSpec(
            source=source, type=parsed.kind, secret=parsed.secret, digits=parsed.digits,
            algorithm=parsed.algorithm, counter=None if totp else parsed.counter,
            period=parsed.period if totp else None, t0=0 if totp else None,
            drift=0 if totp else None, user=parsed.account, issuer=parsed.issuer))
    if not specs:
        raise InvalidParameter("uri", "the file holds no otpauth:// URI")
    return specs
