"""HTTP/1.1, sans-IO, over httptools (llhttp, the C parser uvicorn uses): bytes in ->
``HttpRequest`` events, ``HttpResponse`` -> bytes.

``HttpConnection`` has the interface net._stream.ServerProtocol drives for the native
protocol (``receive_data``, ``next_event`` -> request | NEED_DATA | CONNECTION_CLOSED,
``send``, ``buffered``), so HTTP runs on the same hardened listener.

llhttp parses whatever it is given, pipelined requests included; whole requests wait in a
queue until ``next_event`` hands them out, and replies (decided later: group commit) are
rendered here and written in request order by the stream layer. A request with
``Expect: 100-continue`` whose body has not come yet is first handed out as ``CONTINUE``;
answered with ``CONTINUE`` it renders the interim ``100 Continue``, in its place in the reply
order. HTTP/1.0 and ``Connection: close`` end the connection after that request; an
``Upgrade`` or ``CONNECT`` is answered, then the connection is closed (no protocol switch).

Limits: the request head (``MAX_HEAD``: 431), the body (``MAX_BODY``: 413), requests waiting
for their replies (``MAX_PIPELINED``: 429); HTTP/1.1 without ``Host``, a version other than
1.0/1.1 (505) and anything llhttp refuses (strict mode) are refused too. llhttp reports
where nothing but whole headers are, so the bytes of a head still coming are bounded from
the stream offsets: a request starts no earlier than the previous one's smallest possible
encoding ends. Any violation raises RemoteProtocolError; ``send(Error())`` then renders the
matching 4xx with ``Connection: close``.
"""
import json
from collections import deque

import httptools

from ..errors import RemoteProtocolError
from ._connection import CONNECTION_CLOSED, NEED_DATA, SERVER
from .messages import Error

MAX_HEAD = 8192               # request line + headers; every privacyIDEA client sends < 2 KiB
MAX_BODY = 64 * 1024          # a /validate/check form is < 1 KiB
MAX_PIPELINED = 256           # requests read ahead of their replies

_REASONS = {100: b"Continue", 200: b"OK", 204: b"No Content", 400: b"Bad Request", 403: b"Forbidden",
            404: b"Not Found", 405: b"Method Not Allowed", 413: b"Content Too Large",
            415: b"Unsupported Media Type", 429: b"Too Many Requests",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
            501: b"Not Implemented", 503: b"Service Unavailable",
            505: b"HTTP Version Not Supported"}
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
# the smallest encoding of a request line and the blank line: "M T HTTP/1.1\r\n" ... "\r\n"
_LINE_OVERHEAD = 14


class HttpError(RemoteProtocolError):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status


class HttpRequest:
    """One whole request; ``close_after``: the connection ends after its reply (HTTP/1.0,
    ``Connection: close``, or the handler's refusal)."""

    __slots__ = ("method", "target", "headers", "body", "close_after")

    def __init__(self, method, target, headers, body, close_after=False):
        self.method = method            # bytes, upper case
        self.target = target            # bytes, as sent
        self.headers = headers          # {lower-case name: value bytes}; repeated: last wins
        self.body = body
        self.close_after = close_after


class HttpResponse:
    """``allow``: the methods a 405 names in its Allow header (RFC 9110 15.5.6), e.g. b"GET, POST"."""

    __slots__ = ("status", "content_type", "body", "close", "allow")

    def __init__(self, status, body=b"", content_type=JSON, close=False, allow=None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.close = close
        self.allow = allow

    @classmethod
    def json(cls, status, obj, close=False, allow=None):
        return cls(status, json.dumps(obj, separators=(",", ":")).encode(), JSON, close, allow)


CONTINUE = HttpResponse(100)    # the event of a request waiting for 100 Continue, and its answer
_INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"
_HEADS = {}                     # (status, content type, allow) -> the head up to "Content-Length: "


def render(response, keep_alive=True, with_body=True):
    """The bytes of one response (``with_body=False``: the reply to HEAD)."""
    status = response.status
    if status == 204:
        if response.close or not keep_alive:
            return b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
        return b"HTTP/1.1 204 No Content\r\n\r\n"
    key = (status, response.content_type, response.allow)
    head = _HEADS.get(key)
    if head is None:
        allow = b"" if response.allow is None else b"Allow: %s\r\n" % response.allow
        head = _HEADS.setdefault(key, b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%sContent-Length: " % (
            status, _REASONS.get(status, b"Unknown"), response.content_type, allow))
    body = response.body if with_body else b""
    if response.close or not keep_alive:
        return b"%s%d\r\nConnection: close\r\n\r\n%s" % (head, len(response.body), body)
    return b"%s%d\r\n\r\n%s" % (head, len(response.body), body)


class HttpConnection:
    """Server side of one HTTP/1.1 connection (see the module docstring); it is also the
    llhttp parser's callback object (``on_*``)."""

    def __init__(self, role=SERVER, *, max_pending=MAX_PIPELINED):
        if role is not SERVER:
            raise ValueError("HttpConnection is server-side only")
        self._parser = httptools.HttpRequestParser(self)
        self._max_pending = min(max_pending, MAX_PIPELINED)
        self._pending = 0             # requests handed out, not answered yet
        self._ready = deque()         # parsed whole, not handed out yet
        self._last = None             # the last request handed out
        self._handed = 0              # requests handed out so far
        self._answered = 0            # ... and answered
        self._heads = deque()         # numbers of the HEAD requests not answered yet (no body)
        self._received = 0            # bytes received
        self._start = 0               # a lower bound of the stream offset of the current request
        self._in_message = False
        self._in_head = False
        self._continued = True        # no 100 Continue owed to the current request
        self._closing = False         # no more requests: the peer asked to close, or broke the protocol
        self._eof = False
        self._failure = None
        self._url = b""
        self._headers = None
        self._body = None
        self._head_size = 0
        self._body_size = 0
        self._keep_alive = True

    @property
    def pending(self):
        return self._pending

    @property
    def buffered(self):
        """Bytes of a request not read whole yet (at most; 0 between requests)."""
        return self._received - self._start if self._in_message else 0

    # -- incoming -----------------------------------------------------------------------
    def receive_data(self, data):
        if self._closing:
            return
        if not data:
            self._eof = True
            if self._in_message:
                raise self._fail(400, "end of stream inside a request")
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:    # Upgrade or CONNECT: answered, then closed
            if self._ready:
                self._ready[-1].close_after = True
            self._closing = True
            return
        except httptools.HttpParserError as exc:
            if self._failure is not None:     # a limit, raised by a callback below
                raise self._failure from None
            if self._closing:                 # bytes after the request that ends the connection
                return
            raise self._fail(400, str(exc) or "malformed request") from None
        if self._in_message:
            if self._in_head:
                if self._received - self._start > MAX_HEAD:
                    raise self._fail(431, "request head too large")
            elif self._received - self._start > MAX_HEAD + MAX_BODY:
                raise self._fail(413, "body too large")   # chunk framing without data
            if not self._continued:
                self._continued = True
                self._ready.append(CONTINUE)
        else:
            self._start = self._received      # between requests: exact

    def _fail(self, status, reason):
        self._failure = failure = HttpError(status, reason)
        self._closing = True
        return failure

    def next_event(self):
        last = self._last
        if self._failure is not None or (last is not None and last.close_after):
            self._closing = True
            return CONNECTION_CLOSED
        if self._ready:
            event = self._ready.popleft()
            if event is not CONTINUE:
                self._pending += 1
                self._handed += 1
                if event.method == b"HEAD":
                    self._heads.append(self._handed)
                self._last = event
            return event
        return CONNECTION_CLOSED if self._closing or self._eof else NEED_DATA

    # -- llhttp callbacks ---------------------------------------------------------------
    def on_message_begin(self):
        self._in_message = self._in_head = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._head_size = _LINE_OVERHEAD
        self._body_size = 0

    def on_url(self, part):
        self._url += part
        self._head_size += len(part)

    def on_header(self, name, value):
        if not self._in_head:                 # a chunked body's trailer: ignored
            return
        self._head_size += len(name) + len(value) + 3
        if self._head_size > MAX_HEAD:
            raise self._fail(431, "request head too large")
        self._headers[name.lower()] = value.rstrip(b" \t")

    def on_headers_complete(self):
        self._in_head = False
        parser = self._parser
        version = parser.get_http_version()
        headers = self._headers
        if version == "1.1":
            if b"host" not in headers:
                raise self._fail(400, "no Host header")
            self._keep_alive = parser.should_keep_alive()
        elif version == "1.0":
            self._keep_alive = False
        else:
            raise self._fail(505, "HTTP version not supported")
        length = headers.get(b"content-length")          # digits only (llhttp)
        if length is not None and int(length) > MAX_BODY:
            raise self._fail(413, "body too large")
        expect = headers.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue" and (
                length is None and b"transfer-encoding" in headers or length is not None and length != b"0"):
            self._continued = False

    def on_body(self, part):
        self._body_size += len(part)
        if self._body_size > MAX_BODY:
            raise self._fail(413, "body too large")
        self._body.append(part)

    def on_message_complete(self):
        body = self._body
        request = HttpRequest(self._parser.get_method(), self._url, self._headers,
                              body[0] if len(body) == 1 else b"".join(body), not self._keep_alive)
        self._in_message = False
        self._continued = True
        self._start += self._head_size + self._body_size
        self._ready.append(request)
        if self._pending + len(self._ready) > self._max_pending:
            raise self._fail(429, "too many pipelined requests")
        if not self._keep_alive:
            self._closing = True              # llhttp refuses what follows; it is ignored

    # -- outgoing -----------------------------------------------------------------------
    def send(self, message):
        """Bytes of a response (``Error()``: the generic refusal of a broken request)."""
        if type(message) is Error:
            status = self._failure.status if self._failure is not None else 400   # a listener limit
            body = {"jsonrpc": "2.0", "id": 1, "result": {
                "status": False, "error": {"code": status, "message": _REASONS.get(
                    status, b"Error").decode()}}}
            return render(HttpResponse.json(status, body, close=True))
        if message is CONTINUE:
            return _INTERIM
        self._pending -= 1
        self._answered += 1
        heads = self._heads
        with_body = not heads or heads[0] != self._answered
        if not with_body:
            heads.popleft()
        # the last reply before the connection ends says so
        return render(message, not (self._closing and self._pending == 0), with_body)
