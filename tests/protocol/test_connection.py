import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from otpfast.errors import LocalProtocolError, RemoteProtocolError
from otpfast.protocol import codec, combined, distribution, keyserver, messages as m
from otpfast.protocol._connection import CLIENT, CONNECTION_CLOSED, NEED_DATA, SERVER


class Pair:
    """Client and server Connections wired back to back, bytes only."""

    def __init__(self, module):
        self.client = module.Connection(CLIENT)
        self.server = module.Connection(SERVER)

    def to_server(self, *messages):
        self.server.receive_data(b"".join(self.client.send(msg) for msg in messages))
        return drain(self.server)

    def to_client(self, *messages):
        self.client.receive_data(b"".join(self.server.send(msg) for msg in messages))
        return drain(self.client)


def drain(conn):
    out = []
    while (event := conn.next_event()) is not NEED_DATA and event is not CONNECTION_CLOSED:
        out.append(event)
    return out


def test_keyserver_conversation():
    pair = Pair(keyserver)
    assert pair.to_server(m.Hello()) == [m.Hello()]
    assert pair.to_client(m.PublicKey(b"pem")) == [m.PublicKey(b"pem")]
    start, proof = m.AuthStart("1", b"n" * 32), m.AuthProof(b"p" * 43)
    assert pair.to_server(start) == [start]
    assert pair.to_client(m.Challenge(b"s" * 32)) == [m.Challenge(b"s" * 32)]
    assert pair.to_server(proof) == [proof]
    assert pair.to_client(m.AuthOk(b"v" * 32)) == [m.AuthOk(b"v" * 32)]
    contribution = m.Contribute("alice", b"ct")
    assert pair.to_server(contribution, contribution, m.TranscriptRequest("alice")) == [
        contribution, contribution, m.TranscriptRequest("alice")]
    replies = [m.Receipt(b"r1", b"s", 1), m.Receipt(b"r2", b"s", 0), m.Transcript(b"t", b"s")]
    assert pair.to_client(*replies) == replies
    assert pair.client.pending == pair.server.pending == 0


def test_distribution_pipelined_replies_in_order():
    pair = Pair(distribution)
    requests = [m.AuthStart("verifier", b"c" * 32), m.AuthProof(b"p"), m.Verify("a", "1"), m.Request("a"),
                m.Verify("a", "2")]
    assert pair.to_server(*requests) == requests
    assert pair.server.pending == 5
    replies = [m.Challenge(b"s"), m.AuthOk(b"v"), m.Accept(), m.Issued(b"n", b"m", 5), m.Reject()]
    assert pair.to_client(*replies) == replies


def test_server_must_open_with_the_opening_message():
    server = distribution.Connection(SERVER)
    server.receive_data(codec.encode(m.Verify("a", "1")))
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    with pytest.raises(LocalProtocolError):
        server.send(m.Accept())
    assert codec.encode(m.Error()) == server.send(m.Error())
    assert server.state == "CLOSED"


def test_conversations_do_not_mix():
    server = combined.Connection(SERVER)
    server.receive_data(codec.encode(m.Hello()) + codec.encode(m.Verify("a", "1")))
    assert server.next_event() == m.Hello()
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_keyserver_refuses_distribution_opening():
    server = keyserver.Connection(SERVER)
    server.receive_data(codec.encode(m.AuthStart("x", b"y")))
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_server_reply_type_is_checked():
    pair = Pair(distribution)
    pair.to_server(m.AuthStart("v", b"c"), m.Verify("a", "1"))
    with pytest.raises(LocalProtocolError):
        pair.server.send(m.Accept())  # Challenge is due first
    pair.server.send(m.Challenge(b"s"))
    with pytest.raises(LocalProtocolError):
        pair.server.send(m.Issued(b"n", b"m", 1))
    with pytest.raises(LocalProtocolError):
        pair.server.send(m.Hello())


def test_client_rejects_unexpected_reply():
    pair = Pair(distribution)
    pair.client.send(m.AuthStart("v", b"c"))
    pair.client.receive_data(codec.encode(m.AuthOk(b"v")))
    with pytest.raises(RemoteProtocolError):
        pair.client.next_event()


def test_error_ends_the_conversation():
    pair = Pair(distribution)
    pair.to_server(m.AuthStart("v", b"c"))
    assert pair.to_client(m.Error()) == [m.Error()]
    assert pair.client.state == pair.server.state == "CLOSED"
    with pytest.raises(LocalProtocolError):
        pair.client.send(m.Verify("a", "1"))
    with pytest.raises(LocalProtocolError):
        pair.server.send(m.Challenge(b"s"))


def test_end_of_stream():
    server = distribution.Connection(SERVER)
    server.receive_data(b"")
    assert server.next_event() is CONNECTION_CLOSED
    torn = distribution.Connection(SERVER)
    torn.receive_data(codec.encode(m.AuthStart("v", b"c"))[:-1])
    torn.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        torn.next_event()


def test_client_cannot_send_replies_or_error():
    client = distribution.Connection(CLIENT)
    with pytest.raises(LocalProtocolError):
        client.send(m.AuthOk(b"v"))
    with pytest.raises(LocalProtocolError):
        client.send(m.Error())


def test_outstanding_requests_are_bounded():
    server = distribution.Connection(SERVER, max_pending=3)
    server.receive_data(b"".join(codec.encode(msg) for msg in
                                 [m.AuthStart("v", b"c"), m.Verify("a", "1"), m.Verify("a", "2"), m.Verify("a", "3")]))
    for _ in range(3):
        server.next_event()
    with pytest.raises(RemoteProtocolError):
        server.next_event()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_server_fuzz_garbage_only_raises_remote_protocol_error(data):
    server = combined.Connection(SERVER)
    try:
        server.receive_data(data)
        drain(server)
        server.receive_data(b"")
        drain(server)
    except RemoteProtocolError:
        assert server.send(m.Error()) == codec.encode(m.Error())


def test_protocol_layer_imports_no_io():
    code = ("import sys, otpfast.protocol.combined, otpfast.protocol.codec;"
            "bad = {'asyncio', 'socket', 'ssl', 'otpfast._core', 'otpfast.net', 'click'} & set(sys.modules);"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)
