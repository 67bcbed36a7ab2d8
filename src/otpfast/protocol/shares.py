"""Share-server conversation (tprf tokens): Hello -> PublicKey (the server's RSA key, for the
DKG), AuthStart -> Challenge, AuthProof -> AuthOk, then ShareStatus -> ShareState,
Evaluate -> Partial | Reject, Outcome -> Accept and CeremonyStep -> CeremonyReply, pipelined,
replies in request order."""
from ._connection import CLIENT, CONNECTION_CLOSED, NEED_DATA, SERVER, Connection as _Connection
from .messages import (Accept, AuthOk, AuthProof, AuthStart, CeremonyReply, CeremonyStep, Challenge, Evaluate,
                       Hello, Outcome, Partial, PublicKey, Reject, ShareState, ShareStatus)

REQUESTS = {Hello: (PublicKey,), AuthStart: (Challenge,), AuthProof: (AuthOk,), ShareStatus: (ShareState,),
            Evaluate: (Partial, Reject), Outcome: (Accept,), CeremonyStep: (CeremonyReply,)}
CONVERSATION = {Hello: ((PublicKey,), REQUESTS), AuthStart: ((Challenge,), REQUESTS)}

__all__ = ["CLIENT", "SERVER", "NEED_DATA", "CONNECTION_CLOSED", "CONVERSATION", "Connection"]


class Connection(_Connection):
    """A share-server conversation seen from ``role`` (CLIENT = device, verifier or the DKG's
    orchestrator; SERVER = share server)."""

    def __init__(self, role, **kwargs):
        super().__init__(role, CONVERSATION, **kwargs)
