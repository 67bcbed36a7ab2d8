"""The server's half of the challenge-response every handler runs (services.credentials)."""
from ..protocol.messages import Challenge, Error
from ..services import credentials
from . import tls
from ._stream import Reply


def peer_host(transport):
    """The peer's address (no port) for audit and throttling, or "-"."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "-"


class Authentication:
    """The server's half of one challenge-response (services.credentials): AuthStart once,
    then AuthProof once; anything else in between is refused."""

    __slots__ = ("kind", "binding", "exchange", "proved")

    def __init__(self, kind, binding):
        self.kind = kind
        self.binding = binding
        self.exchange = None
        self.proved = False

    def connection_made(self, transport):
        """Bind to the certificate this connection was handshaken with (tls.ServerIdentity
        may have loaded a newer one since the listener started)."""
        self.binding = tls.connection_end_point(transport, self.binding)

    def start(self, event):
        """The Challenge for an AuthStart, or Error (a second start, a short nonce)."""
        if self.exchange is not None or len(event.client_nonce) < credentials.MIN_NONCE_BYTES:
            return Reply(Error())
        server_nonce = credentials.new_nonce()
        self.exchange = credentials.Exchange(self.kind, event.principal, event.client_nonce,
                                             server_nonce, self.binding)
        return Reply(Challenge(server_nonce))

    def proof(self):
        """The exchange to check an AuthProof against, or None (refuse)."""
        if self.exchange is None or self.proved:
            return None
        self.proved = True
        return self.exchange


class AuthenticatingHandler:
    """What every TLS handler with a challenge-response login shares: the peer's address
    (``source``) and the server half of its login (``_auth``), bound to the connection."""

    def __init__(self, kind, binding):
        self._auth = Authentication(kind, binding)
        self.source = "-"

    def connection_made(self, transport):
        self.source = peer_host(transport)
        self._auth.connection_made(transport)
