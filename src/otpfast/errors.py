"""Exception hierarchy. Imports nothing."""


class OtpfastError(Exception):
    """Base of every otpfast error."""


class InvalidParameter(OtpfastError, ValueError):
    """A user-given parameter is wrong; ``field`` names it."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidToken(OtpfastError):
    """An OTP did not verify (wrong, expired, replayed, locked out).

    Deliberately carries no detail that a network peer could learn from.
    """


class Refused(OtpfastError):
    """A request was refused (authentication, authorisation or state). Generic on purpose."""


class StoreError(OtpfastError):
    """The store is unusable (missing, wrong schema, wrong at-rest key)."""


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
