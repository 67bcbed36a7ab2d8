"""The shared server loop: TLS transport -> Connection.receive_data -> handler -> replies.

One ``ServerProtocol`` per TCP connection. Requests may be pipelined; each one becomes an
immediate reply, a future (a service call; a refused barrier such as a failed Auth closes the
connection before any later request is read) or a waiting reply that the verifier's group
commit fills (verifications: no future, no task; the verifier then calls ``replies_ready()``
once per connection and batch), and replies are written in request order, many per write. A peer that breaks the protocol, fails to
authenticate or is refused gets one generic ``Error`` frame and the connection is closed;
the server keeps serving everyone else. Timeouts: ``read_timeout`` while a frame is
incomplete or a reply is being written, ``idle_timeout`` between requests.
"""
import asyncio
import dataclasses
import logging
from collections import deque

from ..errors import ProtocolError, Refused
from ..protocol._connection import CONNECTION_CLOSED, NEED_DATA, SERVER
from ..protocol.messages import Error
from .address import format_address

log = logging.getLogger("otpfast.net")


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    read_timeout: float = 10.0        # to finish a started frame / accept our replies
    idle_timeout: float = 300.0       # between requests
    handshake_timeout: float = 10.0   # TLS handshake
    max_connections: int = 1024
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
            self.message = _error_for(exc)
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
            return _error_for(exc)
        return self.convert(self.future.result())


def _error_for(exc):
    if not isinstance(exc, Refused):
        log.error("service call failed: %s", type(exc).__name__)
    return Error()


class ConnectionTracker:
    """Counts open connections against the cap; lets a server close them all."""

    def __init__(self, limit):
        self.limit = limit
        self.protocols = set()

    def full(self):
        return len(self.protocols) >= self.limit


class ServerProtocol(asyncio.Protocol):
    """Runs one connection: ``make_connection()`` -> sans-IO Connection, ``handler.handle(event)``."""

    def __init__(self, make_connection, handler, limits, tracker):
        self._conn = make_connection(SERVER, max_pending=limits.max_pending * 16)
        self._handler = handler
        self._limits = limits
        self._tracker = tracker
        self._transport = None
        self._replies = deque()
        self._barrier = None
        self._reading_paused = False
        self._writing_paused = False
        self._closing = False
        self._peer_done = False
        self._last_activity = 0.0
        self._timer = None
        self._loop = None
        self._peer = "?"

    # -- lifecycle ------------------------------------------------------------------------
    def connection_made(self, transport):
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._peer = _peer_label(transport)
        if self._tracker.full():
            log.warning("connection from %s refused: connection limit reached", self._peer)
            self._closing = True
            transport.abort()
            return
        self._tracker.protocols.add(self)
        log.info("connection from %s opened", self._peer)
        opened = getattr(self._handler, "connection_made", None)   # the handler learns its peer
        if opened is not None:
            opened(transport)
        self._last_activity = self._loop.time()
        self._arm_timer(self._limits.idle_timeout)

    def connection_lost(self, exc):
        log.info("connection from %s closed", self._peer)
        self._closing = True
        self._tracker.protocols.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._replies.clear()

    def close(self):
        if not self._closing:
            self._closing = True
            self._transport.close()

    # -- timeouts -------------------------------------------------------------------------
    def _arm_timer(self, delay):
        self._timer = self._loop.call_later(delay, self._check_timeout)

    def _tighten_timer(self):
        """A frame is incomplete: make sure the timer fires within read_timeout."""
        deadline = self._last_activity + self._limits.read_timeout
        if self._timer is not None and self._timer.when() > deadline:
            self._timer.cancel()
            self._arm_timer(self._limits.read_timeout)

    def _current_timeout(self):
        if self._conn.buffered or self._writing_paused:
            return self._limits.read_timeout
        return self._limits.idle_timeout

    def _check_timeout(self):
        self._timer = None
        if self._closing:
            return
        deadline = self._last_activity + self._current_timeout()
        now = self._loop.time()
        if now >= deadline:
            log.info("connection from %s timed out", self._peer)
            self._transport.abort()
            return
        self._arm_timer(deadline - now)

    # -- flow control ---------------------------------------------------------------------
    def pause_writing(self):
        self._writing_paused = True
        self._last_activity = self._loop.time()  # the peer has read_timeout to take our replies
        self._tighten_timer()
        self._update_reading()

    def resume_writing(self):
        self._writing_paused = False
        self._last_activity = self._loop.time()
        self._update_reading()

    def _update_reading(self):
        if self._closing:
            return
        should_pause = (self._writing_paused or self._barrier is not None
                        or len(self._replies) >= self._limits.max_pending)
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
        self._last_activity = self._loop.time()
        try:
            self._conn.receive_data(data)
        except ProtocolError:
            self._refuse()
            return
        self._handle_events()
        if self._conn.buffered and not self._closing:
            self._tighten_timer()

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
                self._replies.clear()
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
        self._replies.clear()
        try:
            self._transport.write(self._conn.send(Error()))
        finally:
            self.close()


def _peer_label(transport):
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return format_address(peer[0], peer[1])
    return "?"


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
    tracker = ConnectionTracker(limits.max_connections)
    loop = asyncio.get_running_loop()

    def factory():
        return ServerProtocol(make_connection, make_handler(), limits, tracker)

    if sock is not None:
        server = await loop.create_server(
            factory, sock=sock, ssl=ssl_context, ssl_handshake_timeout=limits.handshake_timeout,
            backlog=limits.backlog)
    else:
        server = await loop.create_server(
            factory, host, port, ssl=ssl_context, ssl_handshake_timeout=limits.handshake_timeout,
            backlog=limits.backlog, reuse_address=True)
    return Listener(server, tracker, executor)


def bound_address(listener):
    """(host, port) of a Listener (the real port when asked for port 0)."""
    return listener.address
