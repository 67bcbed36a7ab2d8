"""Frames: ``version:u8 type:u8 length:u32be`` then ``length`` body bytes.

The body is the message's fields in declared order: ``str``/``bytes`` as ``u16be length``
+ data (at least one byte, at most the field's limit), ``u32``/``u64`` big-endian. Nothing
may follow the last field. The frame length is checked against ``MAX_FRAME`` as soon as
the header arrives, before any of the body is buffered.

Version 2 authenticates by challenge-response (AuthStart, Challenge, AuthProof); version 1
sent the credential itself and is refused like any other protocol violation.
"""
import struct

from ..errors import LocalProtocolError, RemoteProtocolError
from .messages import MESSAGE_TYPES

VERSION = 2
MAX_FRAME = 64 * 1024          # body bytes
HEADER = struct.Struct(">BBI")
HEADER_SIZE = HEADER.size
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_INT_FORMATS = {"u32": (_U32, 0xFFFFFFFF), "u64": (_U64, 0xFFFFFFFFFFFFFFFF)}


def _encode_field(kind, limit, name, value):
    if kind == "str":
        if not isinstance(value, str):
            raise LocalProtocolError(f"{name} must be str")
        data = value.encode("utf-8")
        if not value.isprintable():
            raise LocalProtocolError(f"{name} holds control characters")
    elif kind == "bytes":
        if not isinstance(value, (bytes, bytearray)):
            raise LocalProtocolError(f"{name} must be bytes")
        data = bytes(value)
    else:
        fmt, top = _INT_FORMATS[kind]
        if type(value) is not int or not limit <= value <= top:
            raise LocalProtocolError(f"{name} out of range")
        return fmt.pack(value)
    if not 1 <= len(data) <= limit:
        raise LocalProtocolError(f"{name} must be 1..{limit} bytes")
    return _U16.pack(len(data)) + data


# Messages without fields (Accept, Reject, Error, Hello) always encode the same.
_FIELDLESS_FRAMES = {cls: HEADER.pack(VERSION, cls.TYPE, 0) for cls in MESSAGE_TYPES.values() if not cls.FIELDS}


def encode(message):
    """Return the frame bytes for ``message``; LocalProtocolError if it breaks a limit."""
    cls = type(message)
    frame = _FIELDLESS_FRAMES.get(cls)
    if frame is not None:
        return frame
    if MESSAGE_TYPES.get(getattr(cls, "TYPE", None)) is not cls:
        raise LocalProtocolError("not a protocol message")
    body = b"".join(_encode_field(kind, limit, name, getattr(message, name))
                    for name, kind, limit in cls.FIELDS)
    if len(body) > MAX_FRAME:
        raise LocalProtocolError("message exceeds the frame size limit")
    return HEADER.pack(VERSION, cls.TYPE, len(body)) + body


_STR, _BYTES, _INT = 0, 1, 2


def _field_specs(cls):
    specs = []
    for _name, kind, limit in cls.FIELDS:
        if kind == "str":
            specs.append((_STR, limit, None))
        elif kind == "bytes":
            specs.append((_BYTES, limit, None))
        else:
            specs.append((_INT, limit, _INT_FORMATS[kind][0]))
    return tuple(specs)


_FIELD_SPECS = {cls: _field_specs(cls) for cls in MESSAGE_TYPES.values()}


def decode_body(cls, body):
    """Build a ``cls`` message from a frame body; RemoteProtocolError on any violation."""
    values = []
    pos = 0
    end = len(body)
    specs = _FIELD_SPECS.get(cls)
    if specs is None:
        specs = _field_specs(cls)
    for code, limit, fmt in specs:
        if code is not _INT:
            if pos + 2 > end:
                raise RemoteProtocolError("truncated field")
            size = (body[pos] << 8) | body[pos + 1]
            pos += 2
            if size < 1 or size > limit or pos + size > end:
                raise RemoteProtocolError("bad field length")
            data = body[pos:pos + size]
            pos += size
            if code is _STR:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise RemoteProtocolError("field is not UTF-8") from None
                if not text.isprintable():
                    raise RemoteProtocolError("control characters in field")
                values.append(text)
            else:
                values.append(data)
        else:
            if pos + fmt.size > end:
                raise RemoteProtocolError("truncated field")
            (number,) = fmt.unpack_from(body, pos)
            pos += fmt.size
            if number < limit:
                raise RemoteProtocolError("integer out of range")
            values.append(number)
    if pos != end:
        raise RemoteProtocolError("trailing bytes in frame")
    return cls(*values)


class FrameDecoder:
    """Incremental decoder. ``feed(data)`` buffers; ``next_message()`` returns a message or None.

    The buffer never holds more than ``max_buffer`` bytes: callers drain messages after each
    feed, and a peer that sends more than that in one go (or an oversize header) is refused.
    """

    __slots__ = ("_buffer", "_pos", "_max_buffer", "eof")

    def __init__(self, max_buffer=4 * (MAX_FRAME + HEADER_SIZE)):
        self._buffer = bytearray()
        self._pos = 0
        self._max_buffer = max_buffer
        self.eof = False

    def feed(self, data):
        if self.eof:
            raise RemoteProtocolError("data after end of stream")
        if not data:
            self.eof = True
            return
        if self._pos:
            del self._buffer[:self._pos]
            self._pos = 0
        if len(self._buffer) + len(data) > self._max_buffer:
            raise RemoteProtocolError("receive buffer limit exceeded")
        self._buffer += data
        self._check_header()

    def _check_header(self):
        # Validate the next header as soon as it is complete, before the body is buffered.
        if len(self._buffer) - self._pos >= HEADER_SIZE:
            version, kind, length = HEADER.unpack_from(self._buffer, self._pos)
            if version != VERSION:
                raise RemoteProtocolError("unsupported protocol version")
            if kind not in MESSAGE_TYPES:
                raise RemoteProtocolError("unknown message type")
            if length > MAX_FRAME:
                raise RemoteProtocolError("frame exceeds the size limit")

    @property
    def buffered(self):
        return len(self._buffer) - self._pos

    def next_message(self):
        buffer = self._buffer
        pos = self._pos
        if len(buffer) - pos < HEADER_SIZE:
            return None
        version, kind, length = HEADER.unpack_from(buffer, pos)
        if version != VERSION or kind not in MESSAGE_TYPES or length > MAX_FRAME:
            self._check_header()   # raises the precise error
        start = pos + HEADER_SIZE
        if len(buffer) - start < length:
            return None
        self._pos = start + length
        return decode_body(MESSAGE_TYPES[kind], bytes(buffer[start:start + length]))
