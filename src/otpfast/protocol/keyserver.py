"""Key-server conversation: Hello -> PublicKey; then AuthStart -> Challenge, AuthProof -> AuthOk
(the authority authenticates), Contribute -> Receipt and TranscriptRequest -> Transcript."""
from ._connection import CLIENT, CONNECTION_CLOSED, NEED_DATA, SERVER, Connection as _Connection
from .messages import (AuthOk, AuthProof, AuthStart, Challenge, Contribute, Hello, PublicKey, Receipt,
                       Transcript, TranscriptRequest)

REQUESTS = {Hello: (PublicKey,), AuthStart: (Challenge,), AuthProof: (AuthOk,), Contribute: (Receipt,),
            TranscriptRequest: (Transcript,)}
CONVERSATION = {Hello: ((PublicKey,), REQUESTS)}

__all__ = ["CLIENT", "SERVER", "NEED_DATA", "CONNECTION_CLOSED", "CONVERSATION", "Connection"]


class Connection(_Connection):
    """A key-server conversation seen from ``role`` (CLIENT = authority, SERVER = key server)."""

    def __init__(self, role, **kwargs):
        super().__init__(role, CONVERSATION, **kwargs)
