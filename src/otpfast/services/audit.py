"""Audit events and checking the audit chain.

Entries record who did what and how it ended: event, account, client, source, outcome and
time. Never an OTP, a credential, a phrase or any other secret (callers pass only names and
the outcome words below). The store chains entries with HMAC-SHA256 under a key derived from
the at-rest key (otpfast.store.atrest) and mirrors the head outside the database.
"""
from otpfast.store import AuditReport, Store

# events
VERIFY = "verify"
REQUEST = "request"
AUTHENTICATE = "authenticate"
CONTRIBUTE = "contribute"
CEREMONY_COMPLETE = "ceremony-complete"
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
NO_MATCH = "rejected:wrong-expired-or-used"


def verify_chain(store: Store) -> AuditReport:
    """The store's audit chain check (what ``otpfast audit verify`` runs)."""
    return store.verify_audit()
