"""Distribution-server conversation: AuthStart -> Challenge, AuthProof -> AuthOk, then
Request -> Issued and Verify -> Accept | Reject | TryAgain, pipelined, replies in request order."""
from ._connection import CLIENT, CONNECTION_CLOSED, NEED_DATA, SERVER, Connection as _Connection
from .messages import (Accept, AuthOk, AuthProof, AuthStart, Challenge, Issued, Reject, Request,
                       TryAgain, Verify, VerifyOnce)

REQUESTS = {AuthProof: (AuthOk,), Request: (Issued,), Verify: (Accept, Reject, TryAgain),
            VerifyOnce: (Accept, Reject, TryAgain)}
CONVERSATION = {AuthStart: ((Challenge,), REQUESTS)}

__all__ = ["CLIENT", "SERVER", "NEED_DATA", "CONNECTION_CLOSED", "CONVERSATION", "Connection"]


class Connection(_Connection):
    """A distribution conversation seen from ``role`` (CLIENT = device or verifier)."""

    def __init__(self, role, **kwargs):
        super().__init__(role, CONVERSATION, **kwargs)
