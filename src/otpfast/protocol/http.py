"""HTTP/1.1, sans-IO, over h11: bytes in -> ``HttpRequest`` events, ``HttpResponse`` -> bytes.

``HttpConnection`` has the interface net._stream.ServerProtocol drives for the native
protocol (``receive_data``, ``next_event`` -> request | NEED_DATA | CONNECTION_CLOSED,
``send``, ``buffered``), so HTTP runs on the same hardened listener.

h11 parses; it serves one request at a time, so a pipelined request waits in its buffer
until the response to the previous one is sent. Replies are decided later (group commit),
so each request gets a fresh h11 parser that takes over the bytes left after the previous
one (cheaper than cycling one parser through a stand-in response), and the responses are
rendered here and written in request order by the stream layer. Limits: the
request head (``MAX_HEAD``; h11 says 431), the body (``MAX_BODY``: 413), requests waiting
for their replies (``MAX_PIPELINED``: 429). Any violation raises RemoteProtocolError;
``send(Error())`` then renders the matching 4xx with ``Connection: close``.
"""
import json

import h11

from ..errors import RemoteProtocolError
from ._connection import CONNECTION_CLOSED, NEED_DATA, SERVER
from .messages import Error

MAX_HEAD = 8192               # request line + headers; every privacyIDEA client sends < 2 KiB
MAX_BODY = 64 * 1024          # a /validate/check form is < 1 KiB
MAX_PIPELINED = 256           # requests read ahead of their replies

_REASONS = {200: b"OK", 204: b"No Content", 400: b"Bad Request", 403: b"Forbidden",
            404: b"Not Found", 405: b"Method Not Allowed", 413: b"Content Too Large",
            415: b"Unsupported Media Type", 429: b"Too Many Requests",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
            501: b"Not Implemented", 503: b"Service Unavailable",
            505: b"HTTP Version Not Supported"}
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"


class HttpError(RemoteProtocolError):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status


class HttpRequest:
    """One whole request; ``close_after``: the handler wants the connection closed after
    its reply (a refusal)."""

    __slots__ = ("method", "target", "headers", "body", "close_after")

    def __init__(self, method, target, headers, body):
        self.method = method            # bytes, upper case
        self.target = target            # bytes, as sent
        self.headers = headers          # {lower-case name: value bytes}; repeated: last wins
        self.body = body
        self.close_after = False


class HttpResponse:
    __slots__ = ("status", "content_type", "body", "close")

    def __init__(self, status, body=b"", content_type=JSON, close=False):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.close = close

    @classmethod
    def json(cls, status, obj, close=False):
        return cls(status, json.dumps(obj, separators=(",", ":")).encode(), JSON, close)


def render(response, keep_alive=True):
    """The bytes of one response."""
    status = response.status
    head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))]
    if status != 204:
        head.append(b"Content-Type: %s\r\nContent-Length: %d\r\n"
                    % (response.content_type, len(response.body)))
    if response.close or not keep_alive:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + response.body


class HttpConnection:
    """Server side of one HTTP/1.1 connection (see the module docstring)."""

    def __init__(self, role=SERVER, *, max_pending=MAX_PIPELINED):
        if role is not SERVER:
            raise ValueError("HttpConnection is server-side only")
        self._parser = _parser()
        self._max_pending = min(max_pending, MAX_PIPELINED)
        self._pending = 0             # requests handed out, not answered yet
        self._head = None             # the h11.Request being read
        self._body = []
        self._body_size = 0
        self._closing = False         # no more requests: the peer or a handler asked to close
        self._last = None             # the last request handed out
        self._error_status = None

    @property
    def pending(self):
        return self._pending

    @property
    def buffered(self):
        """Bytes of a request not read whole yet (0 between requests)."""
        waiting = len(self._parser.trailing_data[0])
        if self._head is not None:
            return waiting + self._body_size + 1
        return waiting

    def receive_data(self, data):
        if self._closing:
            return
        try:
            self._parser.receive_data(data)
        except RuntimeError:          # data after the peer's close
            raise self._fail(400, "data after end of stream") from None

    def _fail(self, status, reason):
        self._error_status = status
        self._closing = True
        return HttpError(status, reason)

    def next_event(self):
        if self._closing or (self._last is not None and self._last.close_after):
            self._closing = True
            return CONNECTION_CLOSED
        while True:
            try:
                event = self._parser.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._fail(exc.error_status_hint, str(exc)) from None
            if event is h11.NEED_DATA:
                return NEED_DATA
            if type(event) is h11.ConnectionClosed:
                self._closing = True
                return CONNECTION_CLOSED
            kind = type(event)
            if kind is h11.Request:
                if len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers) > MAX_HEAD:
                    raise self._fail(431, "request head too large")
                length = _content_length(event.headers)
                if length is not None and length > MAX_BODY:
                    raise self._fail(413, "body too large")
                self._head = event
            elif kind is h11.Data:
                self._body_size += len(event.data)
                if self._body_size > MAX_BODY:
                    raise self._fail(413, "body too large")
                self._body.append(event.data)
            elif kind is h11.EndOfMessage:
                return self._finish()

    def _finish(self):
        head = self._head
        body = b"".join(self._body)
        self._head, self._body, self._body_size = None, [], 0
        if self._pending >= self._max_pending:
            raise self._fail(429, "too many pipelined requests")
        parser = self._parser
        request = HttpRequest(head.method, head.target, dict(head.headers), body)
        if head.http_version != b"1.1" or b"close" in request.headers.get(b"connection", b"").lower():
            request.close_after = True
        else:
            rest, closed = parser.trailing_data
            self._parser = parser = _parser()
            if rest:
                parser.receive_data(rest)
            if closed:
                parser.receive_data(b"")
        self._pending += 1
        self._last = request
        return request

    def send(self, message):
        """Bytes of a response (``Error()``: the generic refusal of a broken request)."""
        if type(message) is Error:
            status = self._error_status or 400     # a listener limit (net._stream)
            body = {"jsonrpc": "2.0", "id": 1, "result": {
                "status": False, "error": {"code": status, "message": _REASONS.get(
                    status, b"Error").decode()}}}
            return render(HttpResponse.json(status, body, close=True))
        self._pending -= 1
        return render(message, keep_alive=not self._closing)


def _parser():
    return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)


def _content_length(headers):
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
