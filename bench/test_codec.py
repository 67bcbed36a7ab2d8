"""Sans-IO codec throughput on realistic frames (no event loop, no extension)."""
import pytest

from otpfast.protocol import codec, messages as m
from otpfast.protocol._connection import CLIENT, NEED_DATA, SERVER
from otpfast.protocol.distribution import Connection

BATCH = 1000
VERIFY = m.Verify("alice@example.org", "123456")


@pytest.mark.benchmark(group="encode")
def test_encode_verify(benchmark):
    def run():
        return [codec.encode(VERIFY) for _ in range(BATCH)]
    frames = benchmark(run)
    assert len(frames) == BATCH and frames[0] == codec.encode(VERIFY)


@pytest.mark.benchmark(group="decode")
def test_decode_pipelined_verify(benchmark):
    data = codec.encode(m.AuthStart("verifier", b"c" * 32)) + codec.encode(VERIFY) * BATCH

    def run():
        conn = Connection(SERVER, max_pending=BATCH + 1)
        conn.receive_data(data)
        events = []
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
        return events
    events = benchmark(run)
    assert len(events) == BATCH + 1 and events[-1] == VERIFY


@pytest.mark.benchmark(group="round-trip")
def test_client_server_round_trip(benchmark):
    """A verification's whole protocol cost on both sides: encode, decode, reply, decode."""
    def run():
        client, server = Connection(CLIENT, max_pending=BATCH + 1), Connection(SERVER, max_pending=BATCH + 1)
        server.receive_data(client.send(m.AuthStart("verifier", b"c" * 32))
                            + b"".join(client.send(VERIFY) for _ in range(BATCH)))
        replies = []
        while (event := server.next_event()) is not NEED_DATA:
            replies.append(server.send(m.Challenge(b"s" * 32) if type(event) is m.AuthStart else m.Accept()))
        client.receive_data(b"".join(replies))
        accepted = 0
        while (event := client.next_event()) is not NEED_DATA:
            accepted += type(event) is m.Accept
        return accepted
    assert benchmark(run) == BATCH
