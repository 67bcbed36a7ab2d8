"""OTPs as people type them. Authenticator apps show "123 456": the ASCII spaces are
removed before verification, on every path (one call at the start of
Distribution.verify_many). Nothing else is rewritten: any other character, non-ASCII digits
("١٢٣٤٥٦", fullwidth "１２３４５６") included, stays and is refused like any wrong OTP; the
CLI names the problem first (``typed_otp_problem``)."""
import dataclasses

_GROUPED = frozenset("0123456789abcdefABCDEF ")   # digits, hash-chain hex, and spaces
_DIGITS = frozenset("0123456789")


def normalise(otp):
    """``otp`` without its ASCII spaces if it is only digits (or hex, with at least one
    digit) grouped by spaces; anything else unchanged: a PIN + OTP field with other
    characters, or words (RFC 2289's six words, even "A BAD CAB ...") stay as typed."""
    if type(otp) is str and " " in otp and _GROUPED.issuperset(otp) and not _DIGITS.isdisjoint(otp):
        return otp.replace(" ", "")
    return otp


def normalise_items(items):
    """The VerifyItems with their OTPs normalised; the same list when none has a space."""
    if not any(type(item.otp) is str and " " in item.otp for item in items):
        return items
    return [dataclasses.replace(item, otp=otp) if (otp := normalise(item.otp)) is not item.otp else item
            for item in items]


def typed_otp_problem(otp: str) -> str | None:
    """Why a typed OTP cannot be right, for a local user (None: it may be): non-ASCII
    digits or characters. Never tells anything about the account."""
    if otp.isascii():
        return None
    if any(ch.isdigit() and not ch.isascii() for ch in otp):
        return ("contains non-ASCII digits (e.g. Arabic-Indic or fullwidth): type the OTP "
                "with the ASCII digits 0-9")
    return "contains non-ASCII characters: an OTP is ASCII digits 0-9 (hex for hash chains)"
