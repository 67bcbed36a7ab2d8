"""Key-server conversation: Hello -> PublicKey, then Contribute -> Receipt (repeatable)."""
from ._connection import CLIENT, CONNECTION_CLOSED, NEED_DATA, SERVER, Connection as _Connection
from .messages import Contribute, Hello, PublicKey, Receipt

REQUESTS = {Hello: (PublicKey,), Contribute: (Receipt,)}
CONVERSATION = {Hello: ((PublicKey,), REQUESTS)}

__all__ = ["CLIENT", "SERVER", "NEED_DATA", "CONNECTION_CLOSED", "CONVERSATION", "Connection"]


class Connection(_Connection):
    """A key-server conversation seen from ``role`` (CLIENT = authority, SERVER = key server)."""

    def __init__(self, role, **kwargs):
        super().__init__(role, CONVERSATION, **kwargs)
