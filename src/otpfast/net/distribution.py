"""Distribution server over the network: Auth, then Request -> Issued, Verify -> Accept/Reject."""
from ..protocol import distribution as distribution_protocol
from ..protocol.messages import Accept, Auth, AuthOk, Error, Issued, Reject, Request, Verify
from ._stream import Reply, ServerLimits, start_server

_ACCEPT = Accept()
_REJECT = Reject()
_AUTH_OK = AuthOk()


def _verdict(ok):
    return _ACCEPT if ok else _REJECT


def _issued(issued):
    return Issued(issued.nonce, issued.masked, max(0, int(issued.expires_at * 1000)))


class DistributionHandler:
    """Per-connection handler; every service call goes through the AsyncVerifier (store on the loop's thread)."""

    def __init__(self, verifier):
        self._verifier = verifier
        self._distribution = verifier.distribution
        self.client = None
        self.source = "protocol"        # the peer's address, once connected (_stream)

    def _authenticated(self, client):
        self.client = client
        return _AUTH_OK

    def handle(self, event):
        kind = type(event)
        if kind is Verify:
            reply = Reply.waiting(_verdict)
            self._verifier.verify_callback(event.account, event.otp, reply, source=self.source,
                                           client=self.client)
            return reply
        if kind is Request:
            return Reply(future=self._verifier.call_future(
                self._distribution.request, self.client, event.account), convert=_issued)
        if kind is Auth:
            future = self._verifier.call_future(self._distribution.authenticate, event.client, event.credential)
            return Reply(future=future, convert=self._authenticated, barrier=True)
        return Reply(Error())


async def serve_distribution(verifier, ssl_context, host, port, *, limits=None, sock=None):
    """Serve the distribution server with TLS on (host, port) or bound socket ``sock``;
    ``verifier`` is an AsyncVerifier; return a Listener."""

    def make_handler():
        return DistributionHandler(verifier)

    return await start_server(distribution_protocol.Connection, make_handler, ssl_context, host, port, limits,
                              sock=sock)


__all__ = ["serve_distribution", "DistributionHandler", "ServerLimits"]
