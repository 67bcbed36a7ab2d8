import struct

import pytest
from hypothesis import given, settings, strategies as st

from otpfast.errors import LocalProtocolError, RemoteProtocolError
from otpfast.protocol import codec, messages as m

SAMPLES = [
    m.Hello(), m.PublicKey(b"-----BEGIN PUBLIC KEY-----\n"),
    m.Contribute("alice", b"\x00" * 384), m.Receipt(b"r" * 32, b"s" * 384, 2),
    m.AuthStart("phone", b"c" * 32), m.Challenge(b"s" * 32), m.AuthProof(b"p" * 43),
    m.AuthOk(b"v" * 32), m.Request("alice"), m.TranscriptRequest("alice"), m.Transcript(b"t" * 32, b"s" * 384),
    m.Issued(b"n" * 16, b"m" * 6, 1_700_000_000_000), m.Verify("alice", "123456"),
    m.Accept(), m.Reject(), m.Error(),
]


def decode_all(data, chunk=None):
    decoder = codec.FrameDecoder()
    out = []
    pieces = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        decoder.feed(piece)
        while (msg := decoder.next_message()) is not None:
            out.append(msg)
    return out, decoder


@pytest.mark.parametrize("message", SAMPLES, ids=lambda msg: type(msg).__name__)
def test_codec_round_trip(message):
    out, decoder = decode_all(codec.encode(message))
    assert out == [message]
    assert decoder.buffered == 0


def test_codec_round_trip_byte_by_byte():
    data = b"".join(codec.encode(msg) for msg in SAMPLES)
    assert decode_all(data, chunk=1)[0] == SAMPLES


def test_codec_known_frame():
    assert codec.encode(m.Verify("ab", "12")) == bytes([2, 9, 0, 0, 0, 8, 0, 2]) + b"ab" + b"\x00\x0212"


def test_codec_refuses_protocol_version_1():
    """Version 1 sent the credential itself (Auth, type 5): refused like any violation."""
    v1_auth = codec.HEADER.pack(1, 5, 11) + b"\x00\x01p\x00\x06secret"
    with pytest.raises(RemoteProtocolError, match="version"):
        decode_all(v1_auth)
    assert 5 not in m.MESSAGE_TYPES


def frame(kind, body, version=codec.VERSION):
    return codec.HEADER.pack(version, kind, len(body)) + body


BAD_FRAMES = {
    "wrong version": frame(m.Verify.TYPE, b"\x00\x01a\x00\x011", version=3),
    "old version": frame(m.Verify.TYPE, b"\x00\x01a\x00\x011", version=1),
    "unknown type": frame(99, b""),
    "type zero": frame(0, b""),
    "trailing bytes": frame(m.Accept.TYPE, b"x"),
    "truncated field": frame(m.Request.TYPE, b"\x00\x05ab"),
    "empty string": frame(m.Request.TYPE, b"\x00\x00"),
    "too long name": frame(m.Request.TYPE, struct.pack(">H", 129) + b"a" * 129),
    "invalid utf-8": frame(m.Request.TYPE, b"\x00\x02\xff\xfe"),
    "control character": frame(m.Request.TYPE, b"\x00\x03a\nb"),
    "empty proof": frame(m.AuthProof.TYPE, b"\x00\x00"),
    "short receipt": frame(m.Receipt.TYPE, b"\x00\x01r\x00\x01s\x00\x00"),
}


@pytest.mark.parametrize("data", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_codec_rejects_malformed_frame(data):
    with pytest.raises(RemoteProtocolError):
        decode_all(data)


def test_codec_rejects_oversize_frame_from_header_alone():
    decoder = codec.FrameDecoder()
    with pytest.raises(RemoteProtocolError):
        decoder.feed(codec.HEADER.pack(codec.VERSION, m.PublicKey.TYPE, codec.MAX_FRAME + 1))


def test_codec_rejects_unbounded_buffering():
    decoder = codec.FrameDecoder(max_buffer=1000)
    decoder.feed(frame(m.PublicKey.TYPE, b"\x03\x00" + b"x" * 500)[:600])
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"x" * 500)


def test_codec_encode_refuses_bad_messages():
    with pytest.raises(LocalProtocolError):
        codec.encode(m.Request("a" * 200))
    with pytest.raises(LocalProtocolError):
        codec.encode(m.Request(""))
    with pytest.raises(LocalProtocolError):
        codec.encode(m.Receipt(b"r", b"s", -1))
    with pytest.raises(LocalProtocolError):
        codec.encode(m.Verify("a", "12\n"))
    with pytest.raises(LocalProtocolError):
        codec.encode("not a message")


def test_messages_hide_secrets_in_repr():
    assert "secret" not in repr(m.AuthProof(b"secret"))
    assert "123456" not in repr(m.Verify("alice", "123456"))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_codec_fuzz_garbage_only_raises_remote_protocol_error(data, chunk):
    try:
        decode_all(data, chunk=chunk)
    except RemoteProtocolError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(m.MESSAGE_TYPES)), st.binary(max_size=200))
def test_codec_fuzz_valid_header_random_body(kind, body):
    try:
        out, _ = decode_all(frame(kind, body))
    except RemoteProtocolError:
        return
    assert len(out) == 1 and type(out[0]).TYPE == kind
    assert codec.encode(out[0]) == frame(kind, body)  # the encoding is canonical


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40).filter(lambda t: t.isprintable()),
       st.text(min_size=1, max_size=40).filter(lambda t: t.isprintable()))
def test_codec_round_trip_any_printable_text(account, otp):
    msg = m.Verify(account, otp)
    assert decode_all(codec.encode(msg))[0] == [msg]
