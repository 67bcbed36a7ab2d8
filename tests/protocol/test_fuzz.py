"""Hypothesis fuzzers of the native protocol: whatever bytes arrive, split however, the decoder
and the state machines raise nothing but RemoteProtocolError and never buffer past their limits."""
from hypothesis import HealthCheck, given, settings, strategies as st

from otpfast.errors import RemoteProtocolError
from otpfast.protocol import codec, combined, distribution, keyserver, messages as m
from otpfast.protocol._connection import CLIENT, CONNECTION_CLOSED, NEED_DATA, SERVER

_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf", "Co", "Cn", "Zs")),
                min_size=1, max_size=20)


def _field(kind, limit):
    if kind == "str":
        return _TEXT
    if kind == "bytes":
        return st.binary(min_size=1, max_size=min(limit, 64))
    top = 0xFFFFFFFF if kind == "u32" else 0xFFFFFFFFFFFFFFFF
    return st.integers(min_value=limit, max_value=top)


MESSAGES = st.one_of(*(st.builds(cls, *(_field(kind, limit) for _, kind, limit in cls.FIELDS))
                       for cls in m.MESSAGE_TYPES.values()))


def _mutate(data, draw):
    if not data:
        return data
    i = draw(st.integers(0, len(data) - 1))
    return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]


@st.composite
def streams(draw):
    """Valid frames, mutated frames, headers with any length and raw garbage, concatenated."""
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            parts.append(codec.encode(draw(MESSAGES)))
        elif choice == 1:
            parts.append(_mutate(codec.encode(draw(MESSAGES)), draw))
        elif choice == 2:
            parts.append(codec.HEADER.pack(draw(st.sampled_from([codec.VERSION, 1, 0, 255])),
                                           draw(st.integers(0, 255)), draw(st.integers(0, 2**32 - 1))))
        else:
            parts.append(draw(st.binary(max_size=80)))
    return b"".join(parts)


@st.composite
def splits(draw, data):
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_frame_decoder_only_remote_errors_and_bounded(data):
    stream = data.draw(streams())
    max_buffer = data.draw(st.sampled_from([64, 1000, 4 * (codec.MAX_FRAME + codec.HEADER_SIZE)]))
    decoder = codec.FrameDecoder(max_buffer=max_buffer)
    try:
        for piece in data.draw(splits(stream)):
            decoder.feed(piece)
            assert decoder.buffered <= max_buffer
            while (message := decoder.next_message()) is not None:
                assert type(message) in m.MESSAGE_TYPES.values()
                assert codec.encode(message)          # decoded messages re-encode (canonical fields)
        decoder.feed(b"")
    except RemoteProtocolError:
        pass


def _drain(conn):
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is CONNECTION_CLOSED:
            return


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([combined, distribution, keyserver]), st.sampled_from([CLIENT, SERVER]))
def test_fuzz_connection_receive_data_only_remote_errors_and_bounded(data, module, role):
    conn = module.Connection(role, max_pending=data.draw(st.integers(1, 8)))
    if role is CLIENT:   # a client expects replies to what it sent
        opening = m.Hello() if module is keyserver or data.draw(st.booleans()) else m.AuthStart("c", b"n" * 32)
        if module is distribution:
            opening = m.AuthStart("c", b"n" * 32)
        conn.send(opening)
    limit = 4 * (codec.MAX_FRAME + codec.HEADER_SIZE)
    try:
        for piece in data.draw(splits(data.draw(streams()))):
            conn.receive_data(piece)
            assert conn.buffered <= limit
            _drain(conn)
        conn.receive_data(b"")
        _drain(conn)
    except RemoteProtocolError:
        if role is SERVER:
            assert conn.send(m.Error()) == codec.encode(m.Error())
