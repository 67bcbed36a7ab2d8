"""Exception hierarchy. Imports nothing."""


class OtpfastError(Exception):
    """Base of every otpfast error."""


class InvalidParameter(OtpfastError, ValueError):
    """A user-given parameter is wrong; ``field`` names it."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TprfError(InvalidParameter):
    """A threshold-PRF value is unusable; ``field`` names it."""


class InvalidElement(TprfError):
    """Not the encoding of a ristretto255 group element other than the identity."""


class InvalidScalar(TprfError):
    """Not a canonical non-zero ristretto255 scalar (little-endian, below the group order)."""


class ThresholdUnavailable(OtpfastError, RuntimeError):
    """libsodium, which threshold (tprf) tokens need, is not installed."""

    def __init__(self):
        super().__init__("threshold (tprf) tokens need libsodium: apt-get install libsodium23 "
                         "(libsodium-dev to build the fast path)")


class NotFound(InvalidParameter):
    """The user, token or client a parameter names does not exist."""


class Conflict(InvalidParameter):
    """The user, token or client a parameter names exists already."""


class InvalidToken(OtpfastError):
    """An OTP did not verify (wrong, expired, replayed, locked out).

    Deliberately carries no detail that a network peer could learn from.
    """


class Refused(OtpfastError):
    """A request was refused (authentication, authorisation or state). Generic on purpose."""


class StoreError(OtpfastError):
    """The store is unusable (missing, wrong schema, wrong at-rest key)."""


class NotInitialised(StoreError):
    """The data directory does not exist or holds no store (``otpfast init`` makes one)."""


class StoreOutdated(StoreError):
    """The store's schema is older than this otpfast's, and this opening may not upgrade it
    (only ``otpfast init --upgrade`` and the servers' start do)."""

    def __init__(self, version, current):
        super().__init__(f"the store has schema version {version}, this otpfast uses {current}: "
                         "run `otpfast init --upgrade` (the servers upgrade it too when they start)")
        self.version = version
        self.current = current


class StoreBusy(StoreError):
    """``transaction(wait=False)``: another writer holds the store's write lock right now."""

    def __init__(self, message="the store is busy: another writer holds its write lock"):
        super().__init__(message)


class ProtocolError(OtpfastError):
    """A wire-protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol does not allow (our bug)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""

class StoreUnavailable(StoreError):
    """The store could not be reached or failed mid-transaction (lost connection, timeout,
    a server that is not the current primary): "try again", never "refused".
    ``committed``: False - nothing of the transaction was written (a retry is safe);
    None - the outcome of its COMMIT is unknown (the lookup failed too)."""

    def __init__(self, message, committed=False):
        super().__init__(message)
        self.committed = committed


class TryAgain(OtpfastError):
    """The server could not decide now (its store is unavailable); nothing was accepted:
    ask again, here or at another server."""
