"""One port for both services (``otpfast serve``): the opening message (Hello or AuthStart) picks
the conversation."""
from . import distribution, keyserver
from ._connection import CLIENT, CONNECTION_CLOSED, NEED_DATA, SERVER, Connection as _Connection

CONVERSATION = {**keyserver.CONVERSATION, **distribution.CONVERSATION}

__all__ = ["CLIENT", "SERVER", "NEED_DATA", "CONNECTION_CLOSED", "CONVERSATION", "Connection"]


class Connection(_Connection):
    """A conversation with the combined server: key-server or distribution, chosen by the peer."""

    def __init__(self, role, **kwargs):
        super().__init__(role, CONVERSATION, **kwargs)
