"""The combined server (``otpfast serve``): key server and distribution server on one port."""
from ..protocol import combined as combined_protocol
from ..protocol.messages import Hello
from . import tls
from ._stream import ServerLimits, start_server
from .distribution import DistributionHandler
from .keyserver import ContributionQueue, KeyServerHandler, keyserver_executor


class CombinedHandler:
    """The opening message (Hello or AuthStart) picks the conversation; the protocol layer
    keeps the two apart afterwards."""

    def __init__(self, keyserver_handler, distribution_handler):
        self._keyserver = keyserver_handler
        self._distribution = distribution_handler
        self._chosen = None

    @property
    def authenticated(self):
        return self._chosen is not None and self._chosen.authenticated

    @property
    def metrics(self):
        """The native front end's series (net._stream counts refusals there)."""
        return self._distribution.metrics

    def connection_made(self, transport):
        self._keyserver.connection_made(transport)
        self._distribution.connection_made(transport)

    def handle(self, event):
        if self._chosen is None:
            self._chosen = self._keyserver if type(event) is Hello else self._distribution
        return self._chosen.handle(event)


async def serve_combined(keyserver, verifier, ssl_context, host, port, *, limits=None, executor=None, sock=None):
    """Serve both services with TLS on one (host, port) or bound socket ``sock``; return a Listener."""
    executor = executor or keyserver_executor()
    queue = ContributionQueue(executor)
    pem = keyserver.public_key_pem()
    binding = tls.server_end_point(ssl_context)

    def make_handler():
        return CombinedHandler(KeyServerHandler(keyserver, pem, queue, binding),
                               DistributionHandler(verifier, binding))

    return await start_server(combined_protocol.Connection, make_handler, ssl_context, host, port, limits,
                              executor=executor, sock=sock)


__all__ = ["serve_combined", "ServerLimits"]
