"""Key server over the network: Hello -> PublicKey; AuthStart -> Challenge, AuthProof -> AuthOk
(the authority authenticates first); then Contribute -> Receipt, TranscriptRequest -> Transcript."""
import asyncio
import concurrent.futures
import functools

from ..protocol import keyserver as keyserver_protocol
from ..protocol.messages import (AuthOk, AuthProof, AuthStart, Contribute, Error, Hello, PublicKey, Receipt,
                                 Transcript, TranscriptRequest)
from ..services import credentials
from . import tls
from ._auth import Authentication, peer_host
from ._stream import Reply, ServerLimits, start_server


def _receipt(signed):
    return Receipt(signed.receipt, signed.signature, signed.remaining)


def _transcript(signed):
    return Transcript(*signed)


class KeyServerHandler:
    """Per-connection handler. ``executor`` runs the service calls (store, RSA, PBKDF2); nothing
    but Hello and the challenge is answered before the authority has authenticated."""

    def __init__(self, keyserver, public_key_pem, executor, binding):
        self._keyserver = keyserver
        self._public_key = Reply(PublicKey(public_key_pem))
        self._executor = executor
        self._auth = Authentication(credentials.AUTHORITY, binding)
        self.authority = None
        self.source = "-"
        self._greeted = False

    @property
    def authenticated(self):
        return self.authority is not None

    def connection_made(self, transport):
        self.source = peer_host(transport)

    def _run(self, fn, *args, **kwargs):
        return asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

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
            future = self._run(self._keyserver.authenticate, exchange, event.proof, source=self.source)
            return Reply(future=future, convert=self._authenticated, barrier=True)
        if self.authority is None:
            return Reply(Error())      # no RSA work, no store write for an unauthenticated peer
        if kind is Contribute:
            future = self._run(self._keyserver.contribute, self.authority, event.account, event.ciphertext)
            return Reply(future=future, convert=_receipt)
        if kind is TranscriptRequest:
            return Reply(future=self._run(self._keyserver.transcript, self.authority, event.account),
                         convert=_transcript)
        return Reply(Error())


def keyserver_executor():
    """One thread: contributions are rare and each one is a single store transaction."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="otpfast-keyserver")


async def serve_keyserver(keyserver, ssl_context, host, port, *, limits=None, executor=None):
    """Serve the key server with TLS on (host, port); return a Listener. ``ssl_context`` as for
    serve_distribution."""
    executor = executor or keyserver_executor()
    pem = keyserver.public_key_pem()
    binding = tls.server_end_point(ssl_context)

    def make_handler():
        return KeyServerHandler(keyserver, pem, executor, binding)

    return await start_server(keyserver_protocol.Connection, make_handler, ssl_context, host, port, limits,
                              executor=executor)


__all__ = ["serve_keyserver", "KeyServerHandler", "ServerLimits"]
