"""Sans-IO codec: RFC 2865 vectors, validation table, reply signing and mirroring."""
import ast
import json
from collections import OrderedDict
import pathlib
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrad import packet as pyrad_packet

from otpfast.radius import codec
from otpfast.radius.codec import DropReason, PacketDropped

VECTORS = pathlib.Path(__file__).parents[1] / "vectors" / "rfc2865_section7_1.json"
SECRET = b"codec-secret"


@pytest.fixture(scope="module")
def rfc():
    data = json.loads(VECTORS.read_text())
    for key in ("access_request", "access_accept"):
        data[key] = bytes.fromhex(data[key])
    data["secret"] = data["secret"].encode()
    return data


def build(rdict, user="alice", password="123456", *, secret=SECRET, message_authenticator=False, **attrs):
    pkt = pyrad_packet.AuthPacket(code=1, secret=secret, dict=rdict)
    pkt["User-Name"] = user
    pkt["User-Password"] = pkt.PwCrypt(password)
    for name, value in attrs.items():
        pkt[name.replace("_", "-")] = value
    if message_authenticator:
        pkt.add_message_authenticator()
    return pkt, pkt.RequestPacket()


def test_codec_decodes_rfc2865_example(rdict, rfc):
    req = codec.decode_access_request(rfc["access_request"], rfc["secret"])
    assert req.user_name == rfc["user_name"]
    assert req.password == rfc["password"]
    assert req.identifier == 0
    assert not req.message_authenticator


def test_codec_response_authenticator_matches_rfc2865_example(rfc):
    auth = rfc["access_request"][4:20]
    assert codec.verify_response_authenticator(rfc["access_accept"], auth, rfc["secret"])
    assert not codec.verify_response_authenticator(rfc["access_accept"], auth, b"other")


def test_codec_wrong_secret_password_is_not_judged(rdict, rfc):
    """No oracle: with a wrong secret the password decrypts to noise, and the codec hands the
    noise on as text like any password (the verifier refuses it) instead of dropping it."""
    req = codec.decode_access_request(rfc["access_request"], b"not-xyzzy")
    assert req.user_name == rfc["user_name"] and req.password != rfc["password"]


@pytest.mark.parametrize("plain", [b"123456", b"\xff\xfe\x00\x01", b"\x00" * 16, b"\x07bell", b"\xc3\xa9t\xc3\xa9"])
def test_codec_any_decrypted_password_decodes(rdict, plain):
    pkt, _ = build(rdict)
    del pkt["User-Password"]
    OrderedDict.__setitem__(pkt, 2, [pkt.PwCrypt(plain)])
    req = codec.decode_access_request(pkt.RequestPacket(), SECRET)
    assert req.password == plain.rstrip(b"\x00").decode("utf-8", "replace")


@pytest.mark.parametrize("with_ma", [False, True], ids=["plain", "message-authenticator"])
@pytest.mark.parametrize("accept", [True, False], ids=["accept", "reject"])
def test_codec_reply_signed_and_mirrors_message_authenticator(rdict, with_ma, accept):
    # Proxy-State only under a Message-Authenticator (Blast-RADIUS)
    pkt, raw = build(rdict, message_authenticator=with_ma, **({"Proxy_State": b"proxy-1"} if with_ma else {}))
    req = codec.decode_access_request(raw, SECRET)
    assert req.message_authenticator is with_ma
    reply = codec.encode_reply(req, accept)
    assert reply[0] == (codec.ACCESS_ACCEPT if accept else codec.ACCESS_REJECT)
    assert reply[1] == pkt.id
    assert struct.unpack("!H", reply[2:4])[0] == len(reply)
    assert codec.verify_response_authenticator(reply, pkt.authenticator, SECRET)
    decoded = pyrad_packet.AuthPacket(packet=reply, secret=SECRET, dict=rdict)
    assert bool(decoded.message_authenticator) is with_ma
    assert 80 in decoded if with_ma else 80 not in decoded
    if with_ma:
        assert decoded.verify_message_authenticator(original_authenticator=pkt.authenticator,
                                                    original_code=1)
    assert decoded.get(33) == ([b"proxy-1"] if with_ma else None)  # RFC 2865 §5.33: Proxy-State copied
    assert pkt.VerifyReply(decoded, reply)


def test_codec_password_not_in_repr(rdict):
    _, raw = build(rdict, password="S3CRET-OTP")
    req = codec.decode_access_request(raw, SECRET)
    assert "S3CRET-OTP" not in repr(req)
    assert req.password == "S3CRET-OTP"


def test_codec_long_password_two_blocks(rdict):
    words = "ABE LANE TEEM BOOK FAIR HUGE"  # an RFC 2289 style six-word OTP, > 16 bytes
    _, raw = build(rdict, password=words)
    assert codec.decode_access_request(raw, SECRET).password == words


def _with_ma_corrupted(rdict):
    _, raw = build(rdict, message_authenticator=True)
    raw = bytearray(raw)
    index = raw.index(bytes([80, 18])) + 2
    raw[index] ^= 0xFF
    return bytes(raw)


def _replace_header(raw, *, code=None, length=None):
    out = bytearray(raw)
    if code is not None:
        out[0] = code
    if length is not None:
        out[2:4] = struct.pack("!H", length)
    return bytes(out)


BAD_PACKETS = {
    "oversize": (lambda rd, raw: raw + b"\x00" * (4097 - len(raw)), DropReason.OVERSIZE),
    "truncated-header": (lambda rd, raw: raw[:19], DropReason.BAD_LENGTH),
    "empty": (lambda rd, raw: b"", DropReason.BAD_LENGTH),
    "length-field-too-small": (lambda rd, raw: _replace_header(raw, length=19), DropReason.BAD_LENGTH),
    "length-field-too-large": (lambda rd, raw: _replace_header(raw, length=4097), DropReason.OVERSIZE),
    "length-beyond-data": (lambda rd, raw: _replace_header(raw, length=len(raw) + 1), DropReason.BAD_LENGTH),
    "truncated-body": (lambda rd, raw: raw[:-3], DropReason.BAD_LENGTH),
    "unknown-code": (lambda rd, raw: _replace_header(raw, code=99), DropReason.UNKNOWN_CODE),
    "accounting-request": (lambda rd, raw: _replace_header(raw, code=4), DropReason.UNKNOWN_CODE),
    "access-accept-sent-to-server": (lambda rd, raw: _replace_header(raw, code=2), DropReason.UNKNOWN_CODE),
    "attribute-length-zero": (lambda rd, raw: _replace_header(raw[:20] + b"\x01\x00" + raw[22:]),
                              DropReason.MALFORMED),
    "attribute-overruns-packet": (
        lambda rd, raw: _replace_header(raw + b"\x12\x09ab", length=len(raw) + 4), DropReason.MALFORMED),
    "no-user-name": (lambda rd, raw: build_without(rd, "User-Name"), DropReason.MALFORMED),
    "no-user-password": (lambda rd, raw: build_without(rd, "User-Password"), DropReason.MALFORMED),
    "password-not-multiple-of-16": (lambda rd, raw: build_raw_password(rd, b"x" * 17), DropReason.MALFORMED),
    "password-too-long": (lambda rd, raw: build_raw_password(rd, b"x" * 144), DropReason.MALFORMED),
    "bad-message-authenticator": (lambda rd, raw: _with_ma_corrupted(rd), DropReason.BAD_MESSAGE_AUTHENTICATOR),
    "wrong-secret-with-ma": (lambda rd, raw: build(rd, secret=b"wrong", message_authenticator=True)[1],
                             DropReason.BAD_MESSAGE_AUTHENTICATOR),
    "proxy-state-without-ma": (lambda rd, raw: build(rd, Proxy_State=b"x" * 253)[1],
                               DropReason.PROXY_STATE_WITHOUT_MESSAGE_AUTHENTICATOR),
    "garbage": (lambda rd, raw: bytes(range(1, 60)), DropReason.BAD_LENGTH),
}


def build_without(rdict, attribute):
    pkt, _ = build(rdict)
    del pkt[attribute]
    return pkt.RequestPacket()


def build_raw_password(rdict, hidden):
    pkt, _ = build(rdict)
    del pkt["User-Password"]
    OrderedDict.__setitem__(pkt, 2, [hidden])
    return pkt.RequestPacket()


@pytest.mark.parametrize("name", sorted(BAD_PACKETS))
def test_codec_bad_packet_dropped(rdict, name):
    make, reason = BAD_PACKETS[name]
    _, good = build(rdict, password="654321")
    raw = make(rdict, good)
    with pytest.raises(PacketDropped) as info:
        codec.decode_access_request(raw, SECRET)
    assert info.value.reason is reason
    assert "654321" not in str(info.value)


@settings(max_examples=300, deadline=None)
@given(secret=st.binary(max_size=150), message=st.binary(max_size=300))
def test_codec_hmac_md5_is_rfc2104(secret, message):
    import hmac
    assert codec.hmac_md5(secret, message) == hmac.digest(secret, message, "md5")
    assert codec.hmac_md5(secret, message) == hmac.digest(secret, message, "md5")  # cached states


def test_codec_padding_after_length_is_ignored(rdict):
    _, raw = build(rdict)
    assert codec.decode_access_request(raw + b"\x00" * 7, SECRET).password == "123456"


def test_codec_require_message_authenticator(rdict):
    _, raw = build(rdict)
    with pytest.raises(PacketDropped) as info:
        codec.decode_access_request(raw, SECRET, require_message_authenticator=True)
    assert info.value.reason is DropReason.MISSING_MESSAGE_AUTHENTICATOR
    _, raw = build(rdict, message_authenticator=True)
    assert codec.decode_access_request(raw, SECRET, require_message_authenticator=True).message_authenticator


def test_codec_packet_length_for_stream_framing():
    assert codec.packet_length(b"\x01\x02\x00\x30") == 48
    with pytest.raises(PacketDropped):
        codec.packet_length(b"\x01\x02\x00\x05")
    with pytest.raises(PacketDropped):
        codec.packet_length(b"\x01\x02\x10\x01")


def test_codec_imports_no_io_modules():
    tree = ast.parse(pathlib.Path(codec.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"asyncio", "socket", "time", "click"}
    code = ("import sys; import otpfast.radius.codec; "
            "bad = [m for m in ('asyncio', 'socket', 'time', 'click') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # pyrad itself imports socket/time for its client/server modules; our codec must not
    # add asyncio or click
    assert "asyncio" not in out.stdout and "click" not in out.stdout


printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, blacklist_categories=("Cs", "Cc", "Zl", "Zp", "Cf", "Co", "Cn", "Zs")),
                    min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(user=printable, password=st.text(alphabet="0123456789abcdefABCDEF -", min_size=1, max_size=100),
       proxy=st.lists(st.binary(min_size=1, max_size=30), max_size=3), with_ma=st.booleans(),
       nas=st.text(alphabet="abcdefgh.-", min_size=1, max_size=20), secret=st.binary(min_size=1, max_size=40))
def test_codec_agrees_with_pyrad(rdict, user, password, proxy, with_ma, nas, secret):
    password = password.strip() or "0"
    pkt = pyrad_packet.AuthPacket(code=1, secret=secret, dict=rdict)
    pkt["User-Name"] = user
    pkt["User-Password"] = pkt.PwCrypt(password)
    pkt["NAS-Identifier"] = nas
    if proxy:
        pkt[33] = proxy
    if with_ma:
        pkt.add_message_authenticator()
    raw = pkt.RequestPacket()
    if proxy and not with_ma:
        with pytest.raises(PacketDropped) as info:
            codec.decode_access_request(raw, secret)
        assert info.value.reason is DropReason.PROXY_STATE_WITHOUT_MESSAGE_AUTHENTICATOR
        return
    ours = codec.decode_access_request(raw, secret)
    theirs = pyrad_packet.AuthPacket(packet=raw, secret=secret, dict=rdict)
    assert ours.user_name == theirs["User-Name"][0]
    assert ours.password == theirs.PwDecrypt(theirs[2][0])
    assert ours.message_authenticator == bool(theirs.message_authenticator)
    if with_ma:
        assert theirs.verify_message_authenticator()
    assert list(ours.proxy_state) == theirs.get(33, [])
    reply = codec.encode_reply(ours, True)
    assert pkt.VerifyReply(pyrad_packet.AuthPacket(packet=reply, secret=secret, dict=rdict), reply)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_codec_mutated_packets_only_raise_packet_dropped(rdict, data):
    with_ma = data.draw(st.booleans())
    _, raw = build(rdict, message_authenticator=with_ma, **({"Proxy_State": b"p"} if with_ma else {}))
    raw = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = bytes(raw[:data.draw(st.integers(0, len(raw)))]) + data.draw(st.binary(max_size=8))
    try:
        req = codec.decode_access_request(raw, SECRET)
    except PacketDropped:
        return
    assert isinstance(req.password, str) and req.user_name.isprintable()


def _attribute(attr_type, value):
    return bytes([attr_type, len(value) + 2]) + value


@settings(max_examples=2000, deadline=None)
@given(raw=st.binary(max_size=4200), secret=st.binary(max_size=40), require=st.booleans())
def test_codec_fuzz_arbitrary_bytes_only_drop(raw, secret, require):
    """Arbitrary bytes never raise anything but PacketDropped (the codec's drop exception)."""
    try:
        req = codec.decode_access_request(raw, secret, require_message_authenticator=require)
    except PacketDropped as exc:
        assert isinstance(exc.reason, DropReason)
        return
    assert isinstance(req.password, str)
    codec.encode_reply(req, False)


@settings(max_examples=1000, deadline=None)
@given(code=st.sampled_from([1, 1, 1, 2, 4, 12, 255]), identifier=st.integers(0, 255),
       authenticator=st.binary(min_size=16, max_size=16),
       attributes=st.lists(st.tuples(st.sampled_from([1, 2, 4, 18, 32, 33, 80, 26, 0, 255]),
                                     st.binary(max_size=40)), max_size=8),
       padding=st.binary(max_size=8), length_delta=st.sampled_from([0, 0, 0, -1, 1, -20, 4096]),
       secret=st.binary(max_size=40), require=st.booleans())
def test_codec_fuzz_structured_packets_only_drop(code, identifier, authenticator, attributes, padding,
                                                 length_delta, secret, require):
    """Well-framed packets with arbitrary attributes (User-Password of any length, several
    Message-Authenticators, Proxy-State...): decoded or PacketDropped, nothing else."""
    body = b"".join(_attribute(t, v[:253]) for t, v in attributes)
    length = max(0, min(0xFFFF, codec.HEADER_SIZE + len(body) + length_delta))
    raw = struct.pack("!BBH", code, identifier, length) + authenticator + body + padding
    try:
        req = codec.decode_access_request(raw, secret, require_message_authenticator=require)
    except PacketDropped as exc:
        assert isinstance(exc.reason, DropReason)
        return
    assert req.message_authenticator or not (require or req.proxy_state)
    codec.encode_reply(req, True)
