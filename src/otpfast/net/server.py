"""The combined server (``otpfast serve``): key server and distribution server on one port."""
from ..protocol import combined as combined_protocol
from ..protocol.messages import Contribute, Hello
from ._stream import ServerLimits, handler_authenticated, start_server
from .distribution import DistributionHandler
from .keyserver import ContributionQueue, KeyServerHandler, keyserver_executor


class CombinedHandler:
    """The opening message (Hello or Auth) picks the conversation; the protocol layer keeps
    the two apart afterwards."""

    def __init__(self, keyserver_handler, distribution_handler):
        self._keyserver = keyserver_handler
        self._distribution = distribution_handler

    def handle(self, event):
        if type(event) is Hello or type(event) is Contribute:
            return self._keyserver.handle(event)
        return self._distribution.handle(event)

    @property
    def authenticated(self):
        return self._keyserver.authenticated or handler_authenticated(self._distribution)


async def serve_combined(keyserver, verifier, ssl_context, host, port, *, limits=None, executor=None, sock=None):
    """Serve both services with TLS on one (host, port) or bound socket ``sock``; return a Listener."""
    executor = executor or keyserver_executor()
    queue = ContributionQueue(executor)
    pem = keyserver.public_key_pem()

    def make_handler():
        return CombinedHandler(KeyServerHandler(keyserver, pem, queue), DistributionHandler(verifier))

    return await start_server(combined_protocol.Connection, make_handler, ssl_context, host, port, limits,
                              executor=executor, sock=sock)


__all__ = ["serve_combined", "ServerLimits"]
