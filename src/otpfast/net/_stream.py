"""The shared server loop: TLS transport -> Connection.receive_data -> handler -> replies.

One ``ServerProtocol`` per TCP connection. Requests may be pipelined; each one becomes an
immediate reply, a future (a service call; a refused barrier such as a failed Auth closes the
connection before any later request is read) or a waiting reply that the verifier's group
commit fills (verifications: no future, no task; the verifier then calls ``replies_ready()``
once per connection and batch), and replies are written in request order, many per write. A peer that breaks the protocol, fails to
authenticate or is refused gets one generic ``Error`` frame and the connection is closed;
the server keeps serving everyone else.

A connection is counted from accept (otpfast.net.admission): the listener accepts plain TCP,
counts it, then starts TLS on its socket (``loop.connect_accepted_socket``) under
``handshake_timeout``; one still in its handshake can be evicted like any other. Until its
handler says it is authenticated (``handler.authenticated``), a connection has
``auth_timeout`` from accept to get there (frames do not extend it), may send at most
``unauthenticated_requests`` requests and hold at most ``unauthenticated_buffer`` bytes of an
incomplete frame, and is the first to go when the table is full.
Timeouts: ``read_timeout`` for a whole frame from its first byte, or for the peer to take our
replies; ``idle_timeout`` between requests.
"""
import asyncio
import dataclasses
import logging
import os
import socket
from collections import deque

from ..errors import OtpfastError, ProtocolError, Refused
from ..protocol._connection import CONNECTION_CLOSED, NEED_DATA, SERVER
from ..protocol.messages import Error
from .address import format_address
from .admission import Tracker

log = logging.getLogger("otpfast.net")


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    read_timeout: float = 10.0        # a whole frame from its first byte / the peer to accept our replies
    idle_timeout: float = 300.0       # between requests
    handshake_timeout: float = 10.0   # TLS handshake
    auth_timeout: float = 10.0        # from accept to authenticated (a client needs one round trip)
    max_connections: int = 1024
    # Per source address: a verifier host keeps a pool of a few dozen; the benchmark uses 64.
    max_connections_per_source: int = 128
    # Bytes of an incomplete frame before authentication: every opening request (Hello, Auth,
    # Contribute) is below 1.5 KiB; after it the codec's 64 KiB frame limit applies.
    unauthenticated_buffer: int = 4096
    # Requests before authentication: a client needs two or three; a stranger repeating Hello
    # as fast as replies come back is cut off.
    unauthenticated_requests: int = 16
    max_pending: int = 1024           # pipelined requests per connection before reading pauses
    backlog: int = 512


class Reply:
    """A handler's answer to one request: an immediate message, a future + converter, or a
    slot that a callback fills later (``Reply.waiting(convert)``, then ``reply(result, exc)``).

    ``barrier``: no later request of this connection is handled until this one is done
    (authentication).
    """

    __slots__ = ("message", "future", "convert", "barrier", "owner", "waiting_result")

    def __init__(self, message=None, future=None, convert=None, barrier=False):
        self.message = message
        self.future = future
        self.convert = convert
        self.barrier = barrier
        self.owner = None              # the ServerProtocol that writes this reply
        self.waiting_result = False

    @classmethod
    def waiting(cls, convert):
        """A reply filled by calling it: ``reply(result, None)`` or ``reply(None, exc)``."""
        reply = cls(convert=convert)
        reply.waiting_result = True
        return reply

    def __call__(self, result, exc):
        """Fill a waiting reply (in the loop thread); returns the owner to flush."""
        self.waiting_result = False
        if exc is not None:
            self.message = error_reply(exc)
        else:
            self.message = self.convert(result)
        return self.owner

    def ready(self):
        if self.waiting_result:
            return False
        return self.future is None or self.future.done()

    def result(self):
        """The reply message (Error if the service refused or failed)."""
        if self.future is None:
            return self.message
        if self.future.cancelled():
            return Error()
        exc = self.future.exception()
        if exc is not None:
            return error_reply(exc)
        return self.convert(self.future.result())


def error_reply(exc):
    """The Error frame answering a failed service call (the failure logged unless the
    service refused on purpose)."""
    if not isinstance(exc, Refused):     # otpfast's own messages name the cause, no secret
        log.error("service call failed: %s", f"{type(exc).__name__}: {exc}"
                  if isinstance(exc, OtpfastError) else type(exc).__name__)
    return Error()


def handler_authenticated(handler):
    """True once the connection's handler says its peer proved who it is: its
    ``authenticated`` attribute, or (handlers without one) a ``client`` that is set."""
    flag = getattr(handler, "authenticated", None)
    if flag is None:
        return getattr(handler, "client", None) is not None
    return bool(flag)


class _Accepting(asyncio.Protocol):
    """The listener's protocol for a new TCP connection: takes its socket out of the plain
    transport (a duplicate descriptor; the transport is dropped before it reads anything) and
    hands it to the connection's ServerProtocol, which counts it and starts TLS."""

    def __init__(self, protocol):
        self._protocol = protocol

    def connection_made(self, transport):
        try:
            sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
        except OSError as exc:                 # out of descriptors: drop this one
            self._protocol.lost_at_accept(exc)
            return
        finally:
            transport.abort()
        self._protocol.accepted(sock)


class ServerProtocol(asyncio.Protocol):
    """Runs one connection: ``make_connection()`` -> sans-IO Connection, ``handler.handle(event)``.

    ``accepted(sock)`` at accept (counted there), ``connection_made`` once TLS is up.
    """

    def __init__(self, make_connection, handler, limits, tracker, ssl_context):
        self._conn = make_connection(SERVER, max_pending=limits.max_pending * 16)
        self._handler = handler
        self._limits = limits
        self._tracker = tracker
        self._ssl_context = ssl_context
        self._transport = None
        self._replies = deque()
        self._barrier = None
        self._reading_paused = False
        self._writing_paused = False
        self._closing = False
        self._peer_done = False
        self._authenticated = False
        self._buffer_limit = limits.unauthenticated_buffer
        self._unauthenticated_requests = limits.unauthenticated_requests
        self._accepted_at = 0.0
        self._last_activity = 0.0
        self._frame_started = 0.0
        self._timer = None
        self._loop = None
        self._upgrade = None
        self.source = "?"
        self._peer = "?"

    # -- lifecycle ------------------------------------------------------------------------
    def accepted(self, sock):
        """A new TCP connection: take a slot (counted from now), then start TLS."""
        self._loop = asyncio.get_running_loop()
        self._accepted_at = self._loop.time()
        try:
            peer = sock.getpeername()
        except OSError:                        # already gone
            sock.close()
            return
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.source = peer[0]
            self._peer = format_address(peer[0], peer[1])
        if not self._tracker.admit(self):
            self._closing = True
            self._note_refusal("connection_limit")
            sock.close()
            return
        self._upgrade = self._loop.create_task(self._start_tls(sock))

    def lost_at_accept(self, exc):
        self._tracker.note_accept_failure(exc)

    async def _start_tls(self, sock):
        try:
            await self._loop.connect_accepted_socket(lambda: self, sock, ssl=self._ssl_context,
                                                     ssl_handshake_timeout=self._limits.handshake_timeout)
        except BaseException as exc:  # noqa: BLE001 - a failed handshake drops this connection only
            if not self._closing and not isinstance(exc, asyncio.CancelledError):
                log.info("TLS handshake with %s failed: %s", self._peer, type(exc).__name__)
                self._note_refusal("tls_handshake")
            self._closing = True
            self._tracker.discard(self)        # the loop closes the socket it took over
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self._upgrade = None

    def connection_made(self, transport):
        """TLS is up (called by the TLS layer once the handshake is done)."""
        self._transport = transport
        log.info("connection from %s opened", self._peer, extra={"peer": self._peer, "event": "opened"})
        opened = getattr(self._handler, "connection_made", None)   # the handler learns its peer
        if opened is not None:
            opened(transport)
        self._last_activity = self._loop.time()
        self._arm_timer(min(self._limits.idle_timeout,
                            self._accepted_at + self._limits.auth_timeout - self._last_activity))

    def connection_lost(self, exc):
        log.info("connection from %s closed", self._peer, extra={"peer": self._peer, "event": "closed"})
        self._closing = True
        self._tracker.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._drop_replies()

    def close(self):
        if not self._closing:
            self._closing = True
            self._end("close")

    def evict(self):
        """Make room for a new connection (the table is full): abort now."""
        if not self._closing:
            self._closing = True
            self._end("abort")

    def _end(self, how):
        if self._transport is not None:
            getattr(self._transport, how)()
        elif self._upgrade is not None:       # TLS handshake under way
            self._upgrade.cancel()

    def authenticated(self):
        if not self._authenticated and handler_authenticated(self._handler):
            self._authenticated = True
            self._buffer_limit = float("inf")
            self._tracker.authenticated(self)
        return self._authenticated

    def _note_refusal(self, reason):
        """Count a connection the listener refused or cut (the handler's ``metrics``, a
        net.metrics.FrontEndMetrics, if it has one)."""
        metrics = getattr(self._handler, "metrics", None)
        if metrics is not None:
            metrics.refused(reason)

    def _drop_replies(self):
        """Cancel the work not started for this connection (a queued contribution)."""
        for reply in self._replies:
            if reply.future is not None:
                reply.future.cancel()
        self._replies.clear()

    # -- timeouts -------------------------------------------------------------------------
    def _arm_timer(self, delay):
        self._timer = self._loop.call_later(max(0.0, delay), self._check_timeout)

    def _tighten_timer(self, deadline):
        """Make sure the timer fires by ``deadline``."""
        if self._timer is not None and self._timer.when() > deadline:
            self._timer.cancel()
            self._arm_timer(deadline - self._loop.time())

    def _deadline(self):
        limits = self._limits
        if self._conn.buffered:
            deadline = self._frame_started + limits.read_timeout
        elif self._writing_paused:
            deadline = self._last_activity + limits.read_timeout
        else:
            deadline = self._last_activity + limits.idle_timeout
        # (not while a barrier waits on us: a contribution queued behind others; the queue is bounded)
        if self._barrier is None and not self.authenticated():
            deadline = min(deadline, self._accepted_at + limits.auth_timeout)
        return deadline

    def _check_timeout(self):
        self._timer = None
        if self._closing:
            return
        deadline = self._deadline()
        now = self._loop.time()
        if now >= deadline:
            log.info("connection from %s timed out%s", self._peer,
                     "" if self._authenticated else " (not authenticated)")
            if self._conn.buffered or not self._authenticated:   # an idle close is no refusal
                self._note_refusal("slow_request" if self._conn.buffered else "auth_timeout")
            self._closing = True
            self._transport.abort()
            return
        self._arm_timer(deadline - now)

    # -- flow control ---------------------------------------------------------------------
    def pause_writing(self):
        self._writing_paused = True
        self._last_activity = self._loop.time()  # the peer has read_timeout to take our replies
        self._tighten_timer(self._last_activity + self._limits.read_timeout)
        self._update_reading()

    def resume_writing(self):
        self._writing_paused = False
        self._last_activity = self._loop.time()
        self._update_reading()

    def _update_reading(self):
        if self._closing:
            return
        # Behind a barrier the connection is still read (the decoder's buffer limit bounds
        # it), so a peer that leaves is noticed and its queued work cancelled.
        should_pause = self._writing_paused or len(self._replies) >= self._limits.max_pending
        if should_pause and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()
        elif not should_pause and self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()

    # -- incoming -------------------------------------------------------------------------
    def data_received(self, data):
        if self._closing:
            return
        self._last_activity = now = self._loop.time()
        try:
            self._conn.receive_data(data)
        except ProtocolError:
            self._refuse()
            return
        self._handle_events()
        buffered = self._conn.buffered
        if buffered and not self._closing:
            if buffered <= len(data):          # the incomplete frame started in this read
                self._frame_started = now
            if buffered > self._buffer_limit and not self.authenticated():
                self._refuse()
                return
            self._tighten_timer(self._frame_started + self._limits.read_timeout)

    def eof_received(self):
        if self._closing:
            return False
        try:
            self._conn.receive_data(b"")
        except ProtocolError:
            self._refuse()
            return False
        self._handle_events()
        return False  # TLS has no half-close: the transport closes now

    def _handle_events(self):
        conn = self._conn
        while self._barrier is None and not self._closing:
            try:
                event = conn.next_event()
            except ProtocolError:
                self._refuse()
                return
            if event is NEED_DATA:
                break
            if event is CONNECTION_CLOSED:
                self._peer_done = True
                break
            if not self._authenticated:
                self._unauthenticated_requests -= 1
                if self._unauthenticated_requests < 0 and not self.authenticated():
                    self._refuse()
                    return
            reply = self._handler.handle(event)
            reply.owner = self
            self._replies.append(reply)
            if reply.future is not None and not reply.future.done():
                reply.future.add_done_callback(self._on_reply_done)
                if reply.barrier:
                    self._barrier = reply
            elif reply.barrier:
                self._flush()  # answer a decided barrier (a refused Auth closes) before reading on
        replies = self._replies
        if (replies and replies[0].ready()) or (self._peer_done and not replies):
            self._flush()
        self._update_reading()

    def replies_ready(self):
        """Waiting replies were filled (AsyncVerifier calls this once per batch)."""
        if self._closing:
            return
        self._flush()
        self._update_reading()

    def _on_reply_done(self, future):
        if self._closing:
            return
        barrier = self._barrier
        self._flush()
        if barrier is not None and barrier.future is future:
            self._barrier = None
            self._handle_events()
        else:
            self._update_reading()

    # -- outgoing -------------------------------------------------------------------------
    def _flush(self):
        if self._closing:
            return
        out = []
        replies = self._replies
        conn = self._conn
        while replies and replies[0].ready():
            message = replies.popleft().result()
            if type(message) is Error:
                out.append(conn.send(message))
                self._transport.write(b"".join(out))
                self._drop_replies()
                self.close()
                return
            out.append(conn.send(message))
        if out:
            self._transport.write(b"".join(out))
        if self._peer_done and not replies:
            self.close()

    def _refuse(self):
        """The peer broke the protocol: one generic Error frame, then close."""
        if self._closing:
            return
        log.info("protocol violation from %s; closing", self._peer)
        self._note_refusal("protocol_error")
        self._drop_replies()
        try:
            self._transport.write(self._conn.send(Error()))
        finally:
            self.close()


class Listener:
    """A listening TLS server: the asyncio server, its open connections and its executor.

    ``close()`` stops listening and closes every open connection; ``await wait_closed()``.
    """

    def __init__(self, server, tracker, executor=None):
        self.server = server
        self.tracker = tracker
        self.executor = executor

    @property
    def sockets(self):
        return self.server.sockets

    @property
    def address(self):
        """(host, port) of the first socket (the real port when asked for port 0)."""
        sockname = self.server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    def close(self):
        self.server.close()
        for protocol in list(self.tracker.protocols):
            protocol.close()

    async def wait_closed(self):
        await self.server.wait_closed()
        if self.executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        self.close()
        await self.wait_closed()


async def start_server(make_connection, make_handler, ssl_context, host, port, limits=None, executor=None,
                       sock=None):
    """Listen with TLS on (host, port), or on ``sock`` (a bound, listening TCP socket; host and
    port are then None); return a Listener."""
    if ssl_context is None:
        raise ValueError("TLS is mandatory: no plaintext listener")
    limits = limits or ServerLimits()
    tracker = Tracker(limits.max_connections, limits.max_connections_per_source)
    loop = asyncio.get_running_loop()

    def factory():
        return _Accepting(ServerProtocol(make_connection, make_handler(), limits, tracker, ssl_context))

    # Plain TCP: each connection is counted at accept, then upgraded (ServerProtocol._start_tls).
    if sock is not None:
        server = await loop.create_server(factory, sock=sock, backlog=limits.backlog)
    else:
        server = await loop.create_server(factory, host, port, backlog=limits.backlog, reuse_address=True)
    return Listener(server, tracker, executor)


def bound_address(listener):
    """(host, port) of a Listener (the real port when asked for port 0)."""
    return listener.address
