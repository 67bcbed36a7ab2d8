"""The supervisor's sockets for ``serve --workers N`` (otpfast.net.workers): one port for all
workers, and RADIUS datagrams routed by their Request Authenticator so a retransmission (or a
replayed copy under another Identifier) reaches the
worker that holds its cached reply. (Whole servers with workers: tests/e2e, tests/radius.)"""
import socket
import time

import pytest

from otpfast.net.workers import bind_worker_sockets


@pytest.fixture
def worker_sockets(tmp_path):
    made = []

    def bind(count, **kwargs):
        made.extend(bind_worker_sockets(count, "127.0.0.1", 0, backlog=16, **kwargs))
        return made
    yield bind
    for sockets in made:
        sockets.close()


def _drain(sock):
    got = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096))
        except BlockingIOError:
            if got:
                break
            time.sleep(0.01)
    return got


def test_workers_share_one_tcp_port_and_one_udp_port(worker_sockets):
    sockets = worker_sockets(3, radius_udp=("127.0.0.1", 0))
    assert len({s.tcp.getsockname()[1] for s in sockets}) == 1
    assert len({s.udp.getsockname()[1] for s in sockets}) == 1
    assert all(s.tcp.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)


def test_radius_datagrams_go_to_the_worker_of_their_authenticator(worker_sockets):
    sockets = worker_sockets(2, radius_udp=("127.0.0.1", 0))
    address = sockets[0].udp.getsockname()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nas:     # one source port
        # (identifier, first authenticator byte): 5 twice is a retransmission, (9, 5) a copy
        # of it under another Identifier: both reach the worker that saw the first
        for identifier, first in [(0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (4, 5), (9, 5), (7, 200)]:
            nas.sendto(bytes([1, identifier, 0, 20, first]) + bytes(15), address)
        received = [sorted(packet[1] for packet in _drain(s.udp)) for s in sockets]
    assert received == [[0, 2, 7], [1, 3, 4, 4, 9]]


def test_unix_socket_is_shared_and_an_address_in_use_leaves_nothing_bound(worker_sockets, tmp_path):
    path = str(tmp_path / "r.sock")
    sockets = worker_sockets(2, radius_socket=path)
    assert sockets[0].unix is sockets[1].unix
    with socket.socket() as other:                          # a non-reuseport listener
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(OSError):
            bind_worker_sockets(2, "127.0.0.1", other.getsockname()[1], backlog=16,
                                radius_socket=str(tmp_path / "other.sock"))
    assert not (tmp_path / "other.sock").exists()
