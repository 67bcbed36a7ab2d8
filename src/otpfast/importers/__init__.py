"""Token import and export: PSKC (RFC 6030), OATH CSV and files of otpauth:// URIs.

Library layer only: readers take the file's bytes (and, for encrypted PSKC, the pre-shared
key or password) and return every token as a validated ``TokenSpec``, or raise
``InvalidParameter`` naming the line or KeyPackage that failed: all tokens or none. Storing
them is the caller's single transaction.
"""
from __future__ import annotations

from otpfast.errors import InvalidParameter

from .oathcsv import read_oathcsv
from .pskc import export_pskc, read_pskc
from .spec import TokenSpec
from .uri import read_uris

__all__ = ["FORMATS", "TokenSpec", "read_tokens", "read_pskc", "read_oathcsv", "read_uris",
           "export_pskc"]

FORMATS = ("pskc", "oathcsv", "uri")


def read_tokens(data: bytes, format: str, *, psk: bytes | None = None,  # noqa: A002
                password: str | None = None) -> list[TokenSpec]:
    """Read every token of `data` in `format` ("pskc", "oathcsv" or "uri")."""
    if format == "pskc":
        return read_pskc(data, psk=psk, password=password)
    if format not in FORMATS:
        raise InvalidParameter("format", f"must be one of {', '.join(FORMATS)}, got {format!r}")
    if psk is not None or password is not None:
        raise InvalidParameter("format", f"{format} files are not encrypted: a pre-shared key "
                               "or password only goes with pskc")
    return read_oathcsv(data) if format == "oathcsv" else read_uris(data)
