"""Key server over the network: Hello -> PublicKey; AuthStart -> Challenge, AuthProof -> AuthOk
(the authority authenticates first); then Contribute -> Receipt, TranscriptRequest -> Transcript.

Service calls (store, RSA, PBKDF2) are rationed: one at a time per connection (each is a
barrier: the connection's later requests wait, unread), at most ``CONTRIBUTION_QUEUE`` queued
or running across the server (beyond that the request is refused at once: one Error,
connection closed), and a call not started yet is cancelled when its connection goes.
Nothing but Hello and the challenge is answered before the authority has authenticated.
"""
import asyncio
import concurrent.futures
import functools
import logging
import threading

from ..protocol import keyserver as keyserver_protocol
from ..protocol.messages import (AuthOk, AuthProof, AuthStart, Contribute, Error, Hello, PublicKey, Receipt,
                                 Transcript, TranscriptRequest)
from ..services import credentials
from ..services.throttle import Rate, RateLimiter
from . import tls
from ._auth import AuthenticatingHandler
from ._stream import Reply, ServerLimits, start_server

log = logging.getLogger("otpfast.net")

# Key-server calls queued or running at once, server-wide: a ceremony has a handful of
# authorities; more than this waiting means a flood, and the queue's tail would wait for
# seconds of PBKDF2 anyway.
CONTRIBUTION_QUEUE = 8


class ContributionQueue:
    """The key server's executor behind a bound: ``submit(fn, *args, **kwargs)`` returns an
    asyncio future, or None when ``limit`` calls are already queued or running."""

    def __init__(self, executor, limit=CONTRIBUTION_QUEUE):
        self.executor = executor
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._log_limit = RateLimiter(Rate(rate=0.2, burst=3), max_keys=1)
        self.refused = 0

    def submit(self, fn, *args, **kwargs):
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            if self._log_limit.allow("full"):
                log.warning("key-server request refused: %d already queued (%d refused so far)",
                            self.limit, self.refused)
            return None
        try:
            work = self.executor.submit(functools.partial(fn, *args, **kwargs))
        except BaseException:
            self._slots.release()
            raise
        work.add_done_callback(self._release)   # also when cancelled before it started
        return asyncio.wrap_future(work)

    def _release(self, _work):
        self._slots.release()


def _receipt(signed):
    return Receipt(signed.receipt, signed.signature, signed.remaining)


def _transcript(signed):
    return Transcript(*signed)


class KeyServerHandler(AuthenticatingHandler):
    """Per-connection handler; ``queue`` (a ContributionQueue) runs the service calls."""

    def __init__(self, keyserver, public_key_pem, queue, binding):
        self._keyserver = keyserver
        self._public_key = Reply(PublicKey(public_key_pem))
        self._queue = queue
        super().__init__(credentials.AUTHORITY, binding)
        self.authority = None
        self._greeted = False

    @property
    def authenticated(self):
        return self.authority is not None

    def _call(self, convert, fn, *args, **kwargs):
        future = self._queue.submit(fn, *args, **kwargs)
        if future is None:
            return Reply(Error(), barrier=True)
        return Reply(future=future, convert=convert, barrier=True)

    def _authenticated(self, authority):
        self.authority = authority
        return AuthOk(credentials.server_signature(authority.session_key))

    def handle(self, event):
        kind = type(event)
        if kind is Hello:
            if self._greeted:           # once per connection: no reply amplification
                return Reply(Error())
            self._greeted = True
            return self._public_key
        if kind is AuthStart:
            return self._auth.start(event)
        if kind is AuthProof:
            exchange = self._auth.proof()
            if exchange is None:
                return Reply(Error())
            return self._call(self._authenticated, self._keyserver.authenticate, exchange, event.proof,
                              source=self.source)
        if self.authority is None:
            return Reply(Error())      # no RSA work, no store write for an unauthenticated peer
        if kind is Contribute:
            return self._call(_receipt, self._keyserver.contribute, self.authority, event.account,
                              event.ciphertext)
        if kind is TranscriptRequest:
            return self._call(_transcript, self._keyserver.transcript, self.authority, event.account)
        return Reply(Error())


def keyserver_executor():
    """One thread: contributions are rare and each one is a single store transaction."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="otpfast-keyserver")


async def serve_keyserver(keyserver, ssl_context, host, port, *, limits=None, executor=None):
    """Serve the key server with TLS on (host, port); return a Listener. ``ssl_context`` as for
    serve_distribution."""
    executor = executor or keyserver_executor()
    queue = ContributionQueue(executor)
    pem = keyserver.public_key_pem()
    binding = tls.server_end_point(ssl_context)

    def make_handler():
        return KeyServerHandler(keyserver, pem, queue, binding)

    return await start_server(keyserver_protocol.Connection, make_handler, ssl_context, host, port, limits,
                              executor=executor)


__all__ = ["serve_keyserver", "KeyServerHandler", "ContributionQueue", "ServerLimits"]
