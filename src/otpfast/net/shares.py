"""Share server over the network (tprf tokens): Hello -> PublicKey; AuthStart -> Challenge,
AuthProof -> AuthOk; then ShareStatus -> ShareState, Evaluate -> Partial | Reject,
Outcome -> Accept, CeremonyStep -> CeremonyReply (protocol.shares).

Every service call (store, group arithmetic, RSA) runs on one executor thread, in request
order: a counter's mark is committed before its partial is computed and written back.
Nothing but Hello and the challenge is answered before the peer has authenticated.
"""
import asyncio
import concurrent.futures
import functools
import struct

from ..protocol import shares as shares_protocol
from ..protocol.messages import (Accept, AuthOk, AuthProof, AuthStart, CeremonyReply, CeremonyStep, Error,
                                 Evaluate, Hello, Outcome, Partial, PublicKey, Reject, ShareState, ShareStatus)
from ..services import credentials
from ..services.shares import CounterRefused
from . import tls
from ._auth import AuthenticatingHandler
from ._stream import Reply, ServerLimits, start_server


def pack_counters(counters):
    """Counters as the wire carries them (ShareState.outstanding): u64 each, b"\\0" for none."""
    return b"".join(struct.pack(">Q", c) for c in counters) or b"\0"


def unpack_counters(data):
    if len(data) % 8:
        return []
    return [c for (c,) in struct.iter_unpack(">Q", data)]


def _state(result):
    watermark, outstanding = result
    return ShareState(watermark, pack_counters(outstanding))


class ShareServerHandler(AuthenticatingHandler):
    """Per-connection handler over a services.shares.ShareServer."""

    def __init__(self, service, public_key, executor, binding):
        self._service = service
        self._public_key = Reply(PublicKey(public_key))
        self._executor = executor
        super().__init__(credentials.CLIENT, binding)
        self.principal = None
        self._greeted = False

    @property
    def authenticated(self):
        return self.principal is not None

    def _call(self, convert, fn, *args, barrier=False):
        future = asyncio.wrap_future(self._executor.submit(functools.partial(fn, *args)))
        return Reply(future=future, convert=convert, barrier=barrier)

    def _authenticated(self, principal):
        self.principal = principal
        return AuthOk(credentials.server_signature(principal.session_key))

    def _evaluate(self, account, counter, purpose):
        try:
            return self._service.evaluate(self.principal, account, counter, purpose)
        except CounterRefused:
            return None

    def handle(self, event):
        kind = type(event)
        if kind is Hello:
            if self._greeted:
                return Reply(Error())
            self._greeted = True
            return self._public_key
        if kind is AuthStart:
            return self._auth.start(event)
        if kind is AuthProof:
            exchange = self._auth.proof()
            if exchange is None:
                return Reply(Error())
            return self._call(self._authenticated, functools.partial(self._service.authenticate, source=self.source),
                              exchange, event.proof, barrier=True)
        principal = self.principal
        if principal is None:
            return Reply(Error())
        if kind is Evaluate:
            return self._call(lambda r: Reject() if r is None else Partial(*r), self._evaluate,
                              event.account, event.counter, event.purpose)
        if kind is ShareStatus:
            return self._call(_state, self._service.status, principal, event.account)
        if kind is Outcome:
            return self._call(lambda _r: Accept(), self._service.outcome, principal, event.account, event.counter,
                              bool(event.accepted))
        if kind is CeremonyStep:
            return self._call(lambda r: CeremonyReply(*r), self._service.ceremony, principal, event.account,
                              event.round, event.body, barrier=True)
        return Reply(Error())


def share_executor():
    """One thread: the store's marks stay in request order and SQLite has one writer."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="otpfast-shares")


async def serve_shares(service, ssl_context, host, port, *, limits=None, executor=None, sock=None):
    """Serve a share server with TLS on (host, port) or ``sock``; return a Listener."""
    executor = executor or share_executor()
    pem = service.public_key_pem()
    binding = tls.server_end_point(ssl_context)

    def make_handler():
        return ShareServerHandler(service, pem, executor, binding)

    return await start_server(shares_protocol.Connection, make_handler, ssl_context, host, port, limits,
                              executor=executor, sock=sock)


__all__ = ["serve_shares", "ShareServerHandler", "ServerLimits", "pack_counters", "unpack_counters"]
