"""Sans-IO RADIUS codec for the otpfast front end.

Bytes in, :class:`AccessRequest` out; :func:`encode_reply` turns a decision into the
signed Access-Accept / Access-Reject bytes. No sockets, no event loop, no clock. Requests
are decoded by one strict walk over the attributes (only User-Name, User-Password,
Message-Authenticator and Proxy-State matter here) and replies built directly, several
times cheaper than a general encoder on the hot path; tests cross-check both against
pyrad and FreeRADIUS's radclient.

RFC 2865 (packet format, PAP User-Password hiding, Response Authenticator),
RFC 3579 §3.2 (Message-Authenticator); the Blast-RADIUS rules (CVE-2024-3596): Proxy-State
only under a Message-Authenticator, and no answer that depends on what the User-Password
decrypts to.
"""
import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources

from pyrad import dictionary as pyrad_dictionary

from otpfast.core import HmacMd5
from otpfast.errors import RemoteProtocolError

MAX_PACKET_SIZE = 4096  # RFC 2865 §3
HEADER_SIZE = 20
ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3

_USER_NAME = 1
_USER_PASSWORD = 2
_PROXY_STATE = 33
_MESSAGE_AUTHENTICATOR = 80
_MAX_PASSWORD_SIZE = 128  # RFC 2865 §5.2


class DropReason(str, Enum):
    """Why a packet was dropped without an answer (also the counter names)."""

    OVERSIZE = "oversize"                    # more than 4096 bytes
    BAD_LENGTH = "bad_length"                # truncated, or Length field out of range
    UNKNOWN_CODE = "unknown_code"            # anything but Access-Request
    MALFORMED = "malformed"                  # attribute structure, User-Name, User-Password
    MISSING_MESSAGE_AUTHENTICATOR = "missing_message_authenticator"
    BAD_MESSAGE_AUTHENTICATOR = "bad_message_authenticator"
    # Proxy-State that nothing authenticates: the Blast-RADIUS precondition (CVE-2024-3596)
    PROXY_STATE_WITHOUT_MESSAGE_AUTHENTICATOR = "proxy_state_without_message_authenticator"


class PacketDropped(RemoteProtocolError):
    """The packet must be dropped silently; ``reason`` is a :class:`DropReason`.

    The message never contains the password or the shared secret.
    """

    def __init__(self, reason, detail):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """A validated Access-Request. ``password`` is kept out of ``repr``; it is the decrypted
    User-Password as text (undecodable bytes replaced), never checked here."""

    identifier: int
    authenticator: bytes
    user_name: str
    password: str = field(repr=False)
    message_authenticator: bool
    proxy_state: tuple = ()
    secret: bytes = field(default=b"", repr=False)


def load_dictionary(path=None):
    """The pyrad dictionary shipped with otpfast (``otpfast/data/radius_dictionary``)."""
    if path is not None:
        return pyrad_dictionary.Dictionary(str(path))
    source = resources.files("otpfast").joinpath("data/radius_dictionary")
    with resources.as_file(source) as real_path:
        return pyrad_dictionary.Dictionary(str(real_path))


def packet_length(header):
    """The Length field of a RADIUS header (first 4 bytes); validated for stream framing.

    Raises :class:`PacketDropped` (BAD_LENGTH / OVERSIZE) when the stream cannot be trusted.
    """
    (length,) = struct.unpack_from("!H", header, 2)
    if length < HEADER_SIZE:
        raise PacketDropped(DropReason.BAD_LENGTH, f"length field {length} < {HEADER_SIZE}")
    if length > MAX_PACKET_SIZE:
        raise PacketDropped(DropReason.OVERSIZE, f"length field {length} > {MAX_PACKET_SIZE}")
    return length


def _walk_attributes(raw):
    """Walk the attributes of a whole packet (header included, already cut to Length):
    each at least 2 bytes and fitting exactly. Returns {type: [(value_offset, value_end)]}."""
    found = {}
    offset = HEADER_SIZE
    end = len(raw)
    while offset < end:
        if offset + 2 > end:
            raise PacketDropped(DropReason.MALFORMED, "attribute header truncated")
        attr_type = raw[offset]
        attr_len = raw[offset + 1]
        if attr_len < 2 or offset + attr_len > end:
            raise PacketDropped(DropReason.MALFORMED, f"attribute {attr_type} has bad length {attr_len}")
        found.setdefault(attr_type, []).append((offset + 2, offset + attr_len))
        offset += attr_len
    return found


def _reveal_password(hidden, secret, authenticator):
    """RFC 2865 §5.2 in reverse; returns bytes with the zero padding removed."""
    if not hidden or len(hidden) % 16 or len(hidden) > _MAX_PASSWORD_SIZE:
        raise PacketDropped(DropReason.MALFORMED, f"User-Password has bad length {len(hidden)}")
    plain = []
    last = authenticator
    for start in range(0, len(hidden), 16):
        block = hidden[start:start + 16]
        pad = hashlib.md5(secret + last).digest()
        plain.append((int.from_bytes(block, "big") ^ int.from_bytes(pad, "big")).to_bytes(16, "big"))
        last = block
    return b"".join(plain).rstrip(b"\x00")


def _user_name(value):
    """UTF-8 text without control characters, else PacketDropped (it travels in clear)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise PacketDropped(DropReason.MALFORMED, "User-Name is not UTF-8") from None
    if not text or not text.isprintable():
        raise PacketDropped(DropReason.MALFORMED, "User-Name is empty or not printable text")
    return text


_ZERO_MESSAGE_AUTHENTICATOR = bytes([_MESSAGE_AUTHENTICATOR, 18]) + bytes(16)
_HMAC_STATES = {}  # secret -> its HMAC-MD5 with the padded-key states (a few per server)


def hmac_md5(secret, message):
    """HMAC-MD5 (RFC 2104), the padded-key states computed once per secret (otpfast.core:
    one C call per MAC) on every request and reply that carries a Message-Authenticator."""
    mac = _HMAC_STATES.get(secret)
    if mac is None:
        if len(_HMAC_STATES) >= 1024:
            _HMAC_STATES.clear()
        mac = _HMAC_STATES[secret] = HmacMd5(secret)
    return mac(message)


def _message_authenticator_ok(raw, value_start, secret):
    """RFC 3579 §3.2: HMAC-MD5 over the packet with the Message-Authenticator zeroed."""
    zeroed = raw[:value_start] + bytes(16) + raw[value_start + 16:]
    expected = hmac_md5(secret, zeroed)
    return hmac.compare_digest(expected, raw[value_start:value_start + 16])


def decode_access_request(raw, secret, *, require_message_authenticator=False):
    """Validate and decode one Access-Request (a datagram, or one packet of a stream).

    ``secret`` is the client's shared secret (bytes; ``b""`` on a UNIX socket). A
    Message-Authenticator, when present, must match; without one the request is dropped
    when ``require_message_authenticator`` or when it carries Proxy-State. Raises
    :class:`PacketDropped` for everything that must get no answer; the User-Password is
    never a reason (see below).
    """
    if len(raw) > MAX_PACKET_SIZE:
        raise PacketDropped(DropReason.OVERSIZE, f"{len(raw)} bytes > {MAX_PACKET_SIZE}")
    if len(raw) < HEADER_SIZE:
        raise PacketDropped(DropReason.BAD_LENGTH, f"{len(raw)} bytes < header size {HEADER_SIZE}")
    length = packet_length(raw)
    if length > len(raw):
        raise PacketDropped(DropReason.BAD_LENGTH, f"length field {length} > {len(raw)} bytes received")
    raw = bytes(raw[:length])  # RFC 2865 §3: octets beyond Length are padding
    if raw[0] != ACCESS_REQUEST:
        raise PacketDropped(DropReason.UNKNOWN_CODE, f"code {raw[0]} is not Access-Request")
    found = _walk_attributes(raw)
    user_names = found.get(_USER_NAME, ())
    passwords = found.get(_USER_PASSWORD, ())
    authenticators = found.get(_MESSAGE_AUTHENTICATOR, ())
    if len(user_names) != 1:
        raise PacketDropped(DropReason.MALFORMED, "need exactly one User-Name")
    if len(passwords) != 1:
        raise PacketDropped(DropReason.MALFORMED, "need exactly one User-Password (PAP)")
    if len(authenticators) > 1:
        raise PacketDropped(DropReason.MALFORMED, "more than one Message-Authenticator")
    if authenticators:
        start, end = authenticators[0]
        if end - start != 16:
            raise PacketDropped(DropReason.MALFORMED, "Message-Authenticator is not 16 bytes")
        if not _message_authenticator_ok(raw, start, secret):
            raise PacketDropped(DropReason.BAD_MESSAGE_AUTHENTICATOR,
                                "Message-Authenticator does not match (wrong shared secret?)")
    elif require_message_authenticator:
        raise PacketDropped(DropReason.MISSING_MESSAGE_AUTHENTICATOR, "Message-Authenticator required")
    elif _PROXY_STATE in found:
        raise PacketDropped(DropReason.PROXY_STATE_WITHOUT_MESSAGE_AUTHENTICATOR,
                            "Proxy-State without Message-Authenticator")
    start, end = user_names[0]
    user_name = _user_name(raw[start:end])
    start, end = passwords[0]
    authenticator = raw[4:HEADER_SIZE]
    # No judgement on the decrypted bytes: whatever they are (text, or noise from a wrong
    # secret or a forgery) they go to the verifier as this user's OTP and get the same
    # Access-Reject as any wrong OTP. Dropping noise would tell a forger which guesses
    # decrypt to text: an oracle on the keystream MD5(secret + authenticator).
    password = _reveal_password(raw[start:end], secret, authenticator).decode("utf-8", "replace")
    return AccessRequest(
        identifier=raw[1],
        authenticator=authenticator,
        user_name=user_name,
        password=password,
        message_authenticator=bool(authenticators),
        proxy_state=tuple(raw[s:e] for s, e in found.get(_PROXY_STATE, ())),
        secret=secret,
    )


def encode_reply(request, accept):
    """Access-Accept (``accept``) or Access-Reject for ``request``, signed (RFC 2865 §3).

    Carries a Message-Authenticator exactly when the request had one (krb5 1.20's libkrad
    drops replies with one it did not ask for; BlastRADIUS-aware clients require it), as
    the first attribute (the Blast-RADIUS advice), then the request's Proxy-State
    attributes in order (RFC 2865 §5.33).
    """
    attributes = b"".join(bytes([_PROXY_STATE, len(value) + 2]) + value for value in request.proxy_state)
    if request.message_authenticator:
        attributes = _ZERO_MESSAGE_AUTHENTICATOR + attributes
    header = struct.pack("!BBH", ACCESS_ACCEPT if accept else ACCESS_REJECT, request.identifier,
                         HEADER_SIZE + len(attributes))
    if request.message_authenticator:
        # RFC 3579 §3.2: over the reply with the Request Authenticator in the header
        mac = hmac_md5(request.secret, header + request.authenticator + attributes)
        attributes = _ZERO_MESSAGE_AUTHENTICATOR[:2] + mac + attributes[18:]
    response = hashlib.md5(header + request.authenticator + attributes + request.secret).digest()
    return header + response + attributes


def verify_response_authenticator(reply, request_authenticator, secret):
    """True when ``reply`` carries the Response Authenticator of RFC 2865 §3 (for tests/clients)."""
    if len(reply) < HEADER_SIZE:
        return False
    expected = hashlib.md5(reply[:4] + request_authenticator + reply[HEADER_SIZE:] + secret).digest()
    return hmac.compare_digest(expected, reply[4:HEADER_SIZE])
