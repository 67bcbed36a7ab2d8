"""The role-aware state machine shared by every conversation (h11 style).

A conversation is a table ``{opening request type: (allowed reply types, requests table)}``
where the requests table maps each request type allowed afterwards to its reply types.
Requests may be pipelined: replies come back in request order. ``Error`` is a valid reply
to anything; after it the conversation is over.
"""
from collections import deque

from ..errors import LocalProtocolError, RemoteProtocolError
from . import codec
from .messages import Error

CLIENT = "client"
SERVER = "server"

# States
IDLE = "IDLE"          # nothing exchanged yet: only an opening request is allowed
READY = "READY"        # opened: requests of the chosen conversation are allowed
CLOSED = "CLOSED"      # Error sent/received or end of stream
BROKEN = "BROKEN"      # the peer broke the protocol; only Error may still be sent


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name):
        self._name = name

    def __repr__(self):
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
CONNECTION_CLOSED = _Sentinel("CONNECTION_CLOSED")


class Connection:
    """``receive_data(bytes)`` (``b""`` = end of stream), ``next_event()``, ``send(message)``."""

    def __init__(self, role, conversation, *, max_pending=4096):
        if role not in (CLIENT, SERVER):
            raise ValueError("role must be CLIENT or SERVER")
        self.role = role
        self.state = IDLE
        self._opening = conversation
        self._requests = None
        self._pending = deque()          # allowed reply types, one entry per outstanding request
        self._max_pending = max_pending
        self._decoder = codec.FrameDecoder()

    @property
    def pending(self):
        """Requests sent (client) or received (server) and not answered yet."""
        return len(self._pending)

    @property
    def buffered(self):
        """Bytes received that do not make a whole frame yet."""
        return self._decoder.buffered

    def _allowed_request(self, cls):
        if self.state is IDLE:
            entry = self._opening.get(cls)
            if entry is None:
                return None
            return entry
        if self.state is READY:
            replies = self._requests.get(cls)
            return None if replies is None else (replies, self._requests)
        return None

    def _open(self, entry):
        replies, requests = entry
        self._pending.append(replies)
        self._requests = requests
        self.state = READY

    # -- incoming -----------------------------------------------------------------------
    def receive_data(self, data):
        if self.state in (CLOSED, BROKEN):
            if data:
                raise RemoteProtocolError("data after the conversation ended")
            return
        try:
            self._decoder.feed(data)
        except RemoteProtocolError:
            self.state = BROKEN
            raise

    def next_event(self):
        """Return the next message, NEED_DATA, or CONNECTION_CLOSED; RemoteProtocolError if the
        peer broke the protocol (then only ``send(Error())`` is still allowed)."""
        if self.state is BROKEN:
            raise RemoteProtocolError("the conversation is broken")
        if self.state is CLOSED:
            return CONNECTION_CLOSED
        try:
            message = self._decoder.next_message()
            if message is None:
                if self._decoder.eof:
                    if self._decoder.buffered:
                        raise RemoteProtocolError("end of stream inside a frame")
                    self.state = CLOSED
                    return CONNECTION_CLOSED
                return NEED_DATA
            if self.role is SERVER:
                self._receive_request(message)
            else:
                self._receive_reply(message)
        except RemoteProtocolError:
            self.state = BROKEN
            raise
        return message

    def _receive_request(self, message):
        entry = self._allowed_request(type(message))
        if entry is None:
            raise RemoteProtocolError("message not allowed here")
        if len(self._pending) >= self._max_pending:
            raise RemoteProtocolError("too many outstanding requests")
        if self.state is IDLE:
            self._open(entry)
        else:
            self._pending.append(entry[0])

    def _receive_reply(self, message):
        if type(message) is Error:
            self._pending.clear()
            self.state = CLOSED
            return
        if not self._pending or type(message) not in self._pending[0]:
            raise RemoteProtocolError("unexpected reply")
        self._pending.popleft()

    # -- outgoing -----------------------------------------------------------------------
    def send(self, message):
        """Return the bytes to write for ``message``; LocalProtocolError if it is not allowed."""
        if self.state is CLOSED:
            raise LocalProtocolError("the conversation is over")
        if type(message) is Error:
            if self.role is not SERVER:
                raise LocalProtocolError("only a server sends Error")
            self._pending.clear()
            self.state = CLOSED
            return codec.encode(message)
        if self.state is BROKEN:
            raise LocalProtocolError("the conversation is broken; only Error may be sent")
        if self.role is SERVER:
            if not self._pending or type(message) not in self._pending[0]:
                raise LocalProtocolError("reply not allowed here")
            data = codec.encode(message)
            self._pending.popleft()
            return data
        entry = self._allowed_request(type(message))
        if entry is None:
            raise LocalProtocolError("request not allowed here")
        data = codec.encode(message)
        if self.state is IDLE:
            self._open(entry)
        else:
            self._pending.append(entry[0])
        return data
