"""Distribution server over the network: AuthStart -> Challenge, AuthProof -> AuthOk, then
Request -> Issued, Verify -> Accept/Reject (TryAgain when the store could not decide)."""
import time

from ..protocol import distribution as distribution_protocol
from ..errors import StoreError
from ..protocol.messages import (Accept, AuthOk, AuthProof, AuthStart, Error, Issued, Reject, Request,
                                 TryAgain, Verify, VerifyOnce)
from ..services import credentials
from . import tls
from ._auth import AuthenticatingHandler
from ._stream import Reply, ServerLimits, error_reply, start_server

_ACCEPT = Accept()
_REJECT = Reject()
_TRY_AGAIN = TryAgain()


def _issued(issued):
    return Issued(issued.nonce, issued.masked, issued.expires_at_ms)


class _VerifyReply(Reply):
    """The reply to Verify/VerifyOnce, filled by the AsyncVerifier's callback: Accept or
    Reject, TryAgain when the store could not decide (unreachable, timed out: nothing
    accepted); each decision counted in the front end's metrics."""

    __slots__ = ("decided", "started")

    def __init__(self, decided):
        super().__init__()
        self.waiting_result = True
        self.decided, self.started = decided, time.perf_counter()

    def __call__(self, ok, exc):
        self.waiting_result = False
        if exc is None:
            self.decided(ok, self.started)
            self.message = _ACCEPT if ok else _REJECT
        else:
            self.decided(None, self.started)
            self.message = _TRY_AGAIN if isinstance(exc, StoreError) else error_reply(exc)
        return self.owner


class DistributionHandler(AuthenticatingHandler):
    """Per-connection handler; every service call goes through the AsyncVerifier (store on the
    loop's thread). ``binding``: the server certificate's channel binding (tls.end_point)."""

    def __init__(self, verifier, binding):
        self._verifier = verifier
        self._distribution = verifier.distribution
        super().__init__(credentials.CLIENT, binding)
        self.metrics = verifier.metrics.native   # also counts the listener's refusals (net._stream)
        self.client = None

    @property
    def authenticated(self):
        return self.client is not None

    def _authenticated(self, client):
        self.client = client
        return AuthOk(credentials.server_signature(client.session_key))

    def handle(self, event):
        kind = type(event)
        client = self.client
        if (kind is Verify or kind is VerifyOnce) and client is not None:
            reply = _VerifyReply(self.metrics.decided)
            self._verifier.verify_callback(event.account, event.otp, reply, source=self.source, client=client,
                                           request_id=event.request_id if kind is VerifyOnce else None)
            return reply
        if kind is Request and client is not None:
            return Reply(future=self._verifier.call_future(
                self._distribution.request, client, event.account), convert=_issued)
        if kind is AuthStart:
            return self._auth.start(event)
        if kind is AuthProof:
            exchange = self._auth.proof()
            if exchange is not None:
                future = self._verifier.call_future(self._distribution.authenticate, exchange, event.proof,
                                                    source=self.source)
                return Reply(future=future, convert=self._authenticated, barrier=True)
        return Reply(Error())


async def serve_distribution(verifier, ssl_context, host, port, *, limits=None, sock=None):
    """Serve the distribution server with TLS on (host, port) or bound socket ``sock``;
    ``verifier`` is an AsyncVerifier; return a Listener. ``ssl_context`` must come from
    tls.server_context (or have its certificate recorded with tls.remember_end_point)."""
    binding = tls.server_end_point(ssl_context)

    def make_handler():
        return DistributionHandler(verifier, binding)

    return await start_server(distribution_protocol.Connection, make_handler, ssl_context, host, port, limits,
                              sock=sock)


__all__ = ["serve_distribution", "DistributionHandler", "ServerLimits"]
