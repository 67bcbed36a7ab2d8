"""Audit events, checking the audit chain and the store's rows, and archiving old entries.

Entries record who did what and how it ended: event, account, client, source, outcome and
time. Never an OTP, a credential, a phrase or any other secret (callers pass only names and
the outcome words below). The store chains entries with HMAC-SHA256 under a key derived from
the at-rest key (otpfast.store.atrest), mirrors the head outside the database (MACed), and
binds every authenticated row to the entry that last wrote it (otpfast.store.rows).
"""
import datetime
import time

from otpfast.errors import InvalidParameter
from otpfast.store import AuditReport, Store
from otpfast.store import archive as _archive

# events
VERIFY = "verify"
REQUEST = "request"
AUTHENTICATE = "authenticate"
CONTRIBUTE = "contribute"
CEREMONY_COMPLETE = "ceremony-complete"
TRANSCRIPT = "transcript"
ADMIN = "admin"

# outcomes
ACCEPTED = "accepted"
ISSUED = "issued"
REFUSED = "refused"
THROTTLED = "refused:throttled"      # the source or client failed too often (no account read)
NO_ACCOUNT = "rejected:unknown-account"
NOT_AUTHORISED = "rejected:not-authorised"
PENDING = "rejected:ceremony-pending"
LOCKED = "rejected:locked"
BAD_FORMAT = "rejected:format"
NO_MATCH = "rejected:wrong-expired-or-used"     # also a wrong PIN (services.pin)
PIN_REQUIRED = "rejected:pin-required"          # serve --require-pin, a user without one
EXHAUSTED = "rejected:chain-exhausted"          # a hash chain with no use left
# Refusals of authentications, requests and contributions: "refused:" and the reason (the
# network reply never carries it; `otpfast audit list --result refused` finds them all).
UNKNOWN_PRINCIPAL = "refused:unknown-principal"
BAD_PROOF = "refused:wrong-credential"
REQUEST_NOT_AUTHORISED = "refused:not-authorised"   # a verifier, or a device of another account
REVOKED = "refused:credential-revoked"  # a session of a credential since rotated
REQUEST_NO_ACCOUNT = "refused:unknown-account"
REQUEST_PENDING = "refused:ceremony-pending"
REQUEST_NOT_ISSUED = "refused:not-server-issued"    # totp: the app makes them, not the server
REQUEST_LOCKED = "refused:locked"
REQUEST_EXHAUSTED = "refused:chain-exhausted"
REQUEST_DISABLED = "refused:token-disabled"     # the main token is disabled
NOT_WAITING = "refused:not-waiting"     # no ceremony waits for this authority's phrase
UNDECRYPTABLE = "refused:undecryptable"
EMPTY_PHRASE = "refused:empty-phrase"
MALFORMED = "refused:format"


def verify_chain(store: Store) -> AuditReport:
    """The store's audit chain and row check (what ``otpfast audit verify`` runs)."""
    return store.verify_audit()


def verify_archives(store: Store, paths) -> list[str]:
    """Prove archive files (``audit archive``) and that they join the store's chain; one
    line per file. Raises StoreError naming what is wrong."""
    return _archive.verify_files(store, list(paths))


def archive(store: Store, before: float, path: str, *, clock=time.time):
    """Move the entries dated before ``before`` (seconds since the epoch) to the new file
    ``path``; the rest of the chain stays provable (``audit verify``). Refused (StoreError)
    unless the whole check passes first."""
    return store.archive_audit(before, path, clock())


def parse_time(text: str, field: str = "since", *, epoch: bool = True) -> float:
    """Seconds since the epoch from ISO 8601 (UTC unless it names a zone) or, with
    ``epoch``, from the number itself (digits, optionally a fraction); InvalidParameter
    naming ``field``."""
    if epoch and text.isascii() and text.replace(".", "", 1).isdigit():
        return float(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParameter(field, "not an ISO 8601 date or time (e.g. 2026-01-31 or "
                               "2026-01-31T12:00:00Z)"
                               + (" nor seconds since the epoch" if epoch else "")) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()
