"""The asyncio front end over a fake single-use verifier: UDP, UNIX socket, duplicates,
secrets per client, Message-Authenticator policy and the bad-packet table.
(The issue-9 attacks on the UDP front end: test_forgery.py.)"""
import logging
import os
import socket
import stat
import struct
import time

import pytest

from otpfast.errors import InvalidParameter, StoreUnavailable
from otpfast.radius.config import RadiusClients, RadiusConfig, parse_host_port, read_secret_file

SECRET = b"radius-test-secret"
OTP = "914276"


def unix_exchange(path, packets, expect, timeout=3.0):
    """Send packets back to back on one connection; return ``expect`` replies keyed by id."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"".join(packets))
        return read_replies(s, expect)


def read_replies(s, expect):
    replies = {}
    buf = b""
    while len(replies) < expect:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 4 and len(buf) >= struct.unpack("!H", buf[2:4])[0]:
            n = struct.unpack("!H", buf[2:4])[0]
            replies[buf[1]] = buf[:n]
            buf = buf[n:]
    return replies


def test_udp_accept_then_replay_rejected(start_front_end, radius_client, udp, fake_verify):
    verify = fake_verify({("alice", OTP)})
    fe = start_front_end(verify)
    pkt, raw = radius_client.request("alice", OTP)
    assert radius_client.check_reply(pkt, udp(fe.udp_address, raw)) == 2
    pkt, raw = radius_client.request("alice", OTP)  # new request (new authenticator): a replay
    assert radius_client.check_reply(pkt, udp(fe.udp_address, raw)) == 3
    pkt, raw = radius_client.request("alice", "000000")
    assert radius_client.check_reply(pkt, udp(fe.udp_address, raw)) == 3
    assert verify.calls == [("alice", OTP), ("alice", OTP), ("alice", "000000")]
    assert verify.sources == ["radius 127.0.0.1"] * 3  # the audit and throttling source: the client
    assert fe.counters["accepted"] == 1 and fe.counters["rejected"] == 2


@pytest.mark.parametrize("with_ma", [False, True], ids=["plain", "message-authenticator"])
def test_udp_message_authenticator_mirrored(start_front_end, radius_client, udp, fake_verify, with_ma):
    fe = start_front_end(fake_verify({("bob", OTP)}), legacy=True)
    pkt, raw = radius_client.request("bob", OTP, message_authenticator=with_ma)
    assert radius_client.check_reply(pkt, udp(fe.udp_address, raw)) == 2  # checks the mirroring


def test_message_authenticator_required_by_default(start_front_end, radius_client, udp, fake_verify):
    verify = fake_verify({("carol", OTP)})
    fe = start_front_end(verify)
    pkt, raw = radius_client.request("carol", OTP, message_authenticator=False)
    assert udp(fe.udp_address, raw, timeout=0.3) is None
    assert fe.counters["missing_message_authenticator"] == 1
    assert verify.calls == []
    pkt, raw = radius_client.request("carol", OTP, message_authenticator=True)
    assert radius_client.check_reply(pkt, udp(fe.udp_address, raw)) == 2


def test_unix_socket_many_requests_on_one_connection(start_front_end, radius_client, fake_verify):
    users = [f"user{i}" for i in range(20)]
    verify = fake_verify({(u, OTP) for u in users[::2]})
    fe = start_front_end(verify, udp=None, clients=None)
    requests = [radius_client.request(u, OTP, secret=b"", identifier=i, message_authenticator=False)
                for i, u in enumerate(users)]
    replies = unix_exchange(fe.socket_path, [raw for _, raw in requests], len(requests))
    assert len(replies) == len(users)
    for i, (pkt, _) in enumerate(requests):
        code = radius_client.check_reply(pkt, replies[i], secret=b"")
        assert code == (2 if i % 2 == 0 else 3)
    assert fe.counters["connections"] == 1
    assert set(verify.sources) == {"radius unix"}


def test_unix_socket_is_private_and_removed_on_close(start_front_end, fake_verify, loop_thread):
    fe = start_front_end(fake_verify(), udp=None, clients=None)
    assert stat.S_IMODE(os.stat(fe.socket_path).st_mode) == 0o600
    loop_thread.call(fe.close)
    assert not os.path.exists(fe.socket_path)


def test_udp_retransmission_gets_cached_reply(start_front_end, radius_client, udp, fake_verify):
    verify = fake_verify({("dave", OTP)})
    fe = start_front_end(verify)
    pkt, raw = radius_client.request("dave", OTP)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        first = udp(fe.udp_address, raw, sock=s)
        second = udp(fe.udp_address, raw, sock=s)  # same source, id and authenticator
    assert radius_client.check_reply(pkt, first) == 2
    assert second == first
    assert verify.calls == [("dave", OTP)]
    assert fe.counters["duplicates"] == 1 and fe.counters["requests"] == 1


def test_udp_in_flight_duplicates_wait_for_first_result(start_front_end, radius_client, fake_verify):
    verify = fake_verify({("erin", OTP)}, delay=0.3)
    fe = start_front_end(verify)
    pkt, raw = radius_client.request("erin", OTP)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for _ in range(3):
            s.sendto(raw, fe.udp_address)
            time.sleep(0.05)
        replies = [s.recv(4096) for _ in range(3)]
    assert all(radius_client.check_reply(pkt, r) == 2 for r in replies)
    assert verify.calls == [("erin", OTP)]
    assert fe.counters["duplicates"] == 2


def test_unix_duplicate_on_same_connection(start_front_end, radius_client, fake_verify):
    verify = fake_verify({("fred", OTP)}, delay=0.2)
    fe = start_front_end(verify, udp=None, clients=None)
    pkt, raw = radius_client.request("fred", OTP, secret=b"", message_authenticator=False)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect(fe.socket_path)
        s.sendall(raw + raw)
        data = b""
        while len(data) < 2 * 20:
            data += s.recv(4096)
    n = struct.unpack("!H", data[2:4])[0]
    assert data[:n] == data[n:2 * n]
    assert radius_client.check_reply(pkt, data[:n], secret=b"") == 2
    assert verify.calls == [("fred", OTP)]


def test_duplicate_window_expires(start_front_end, radius_client, udp, fake_verify):
    verify = fake_verify({("gina", OTP)})
    fe = start_front_end(verify, duplicate_window=0.2)
    pkt, raw = radius_client.request("gina", OTP)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        assert radius_client.check_reply(pkt, udp(fe.udp_address, raw, sock=s)) == 2
        time.sleep(0.3)
        # after the window the same packet is verified again: the OTP is spent by then
        assert radius_client.check_reply(pkt, udp(fe.udp_address, raw, sock=s)) == 3
    assert len(verify.calls) == 2


def test_strip_realm_maps_user_name(start_front_end, radius_client, udp, fake_verify):
    verify = fake_verify({("hank", OTP)})
    fe = start_front_end(verify, strip_realm=True)
    pkt, raw = radius_client.request("hank@OTPFAST.TEST", OTP)
    assert radius_client.check_reply(pkt, udp(fe.udp_address, raw)) == 2
    assert verify.calls == [("hank", OTP)]


def test_without_strip_realm_user_name_is_the_account(start_front_end, radius_client, udp, fake_verify):
    verify = fake_verify({("hank", OTP)})
    fe = start_front_end(verify)
    pkt, raw = radius_client.request("hank@OTPFAST.TEST", OTP)
    assert radius_client.check_reply(pkt, udp(fe.udp_address, raw)) == 3
    assert verify.calls == [("hank@OTPFAST.TEST", OTP)]


def _send_from(source_ip, address, raw, timeout=0.5):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source_ip, 0))
        s.settimeout(timeout)
        s.sendto(raw, address)
        try:
            return s.recv(4096)
        except socket.timeout:
            return None


def test_clients_file_secret_per_source_address(start_front_end, radius_client, fake_verify, tmp_path):
    clients = tmp_path / "clients"
    clients.write_text("# RADIUS clients\n127.0.0.0/8 loopback-secret-16\n\n"
                       "127.0.0.2   kdc-two secret value\n"
                       "127.0.0.3 kdc three legacy secret  no-message-authenticator\n")
    verify = fake_verify({("ivan", "111111"), ("ivan", "222222"), ("ivan", "333333")})
    fe = start_front_end(verify, clients=RadiusClients.from_files(clients_file=str(clients)))
    pkt, raw = radius_client.request("ivan", "111111", secret=b"loopback-secret-16")
    assert radius_client.check_reply(pkt, _send_from("127.0.0.1", fe.udp_address, raw),
                                     secret=b"loopback-secret-16") == 2
    pkt, raw = radius_client.request("ivan", "222222", secret=b"loopback-secret-16")
    assert _send_from("127.0.0.2", fe.udp_address, raw) is None  # most specific entry wins
    assert fe.counters["bad_message_authenticator"] == 1
    pkt, raw = radius_client.request("ivan", "222222", secret=b"kdc-two secret value")
    assert radius_client.check_reply(pkt, _send_from("127.0.0.2", fe.udp_address, raw),
                                     secret=b"kdc-two secret value") == 2
    # the flagged client may omit the Message-Authenticator; the others may not
    pkt, raw = radius_client.request("ivan", "333333", secret=b"kdc three legacy secret",
                                     message_authenticator=False)
    assert radius_client.check_reply(pkt, _send_from("127.0.0.3", fe.udp_address, raw),
                                     secret=b"kdc three legacy secret") == 2
    pkt, raw = radius_client.request("ivan", "111111", secret=b"kdc-two secret value", message_authenticator=False)
    assert _send_from("127.0.0.2", fe.udp_address, raw) is None
    assert fe.counters["missing_message_authenticator"] == 1


def test_unknown_client_dropped(start_front_end, radius_client, fake_verify, tmp_path):
    clients = tmp_path / "clients"
    clients.write_text("127.0.0.2 only-two-secret-value\n")
    verify = fake_verify({("jane", OTP)})
    fe = start_front_end(verify, clients=RadiusClients.from_files(clients_file=str(clients)))
    pkt, raw = radius_client.request("jane", OTP, secret=b"only-two-secret-value")
    assert _send_from("127.0.0.1", fe.udp_address, raw) is None
    assert fe.counters["unknown_client"] == 1
    assert verify.calls == []


def test_verify_error_sends_no_reply_and_a_retransmission_is_verified(start_front_end,
                                                                     radius_client, udp, caplog):
    """Issue 12: a store failure is no Reject (that says "wrong OTP"): no reply at all, so
    the client retries (here or at another server); its retransmission is verified afresh."""
    calls = []

    async def flaky(account, otp, source):
        calls.append(account)
        if len(calls) == 1:
            raise StoreUnavailable("store unavailable")
        return True

    fe = start_front_end(flaky)
    pkt, raw = radius_client.request("kim", OTP)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with caplog.at_level(logging.ERROR, logger="otpfast.radius"):
            assert udp(fe.udp_address, raw, timeout=0.5, sock=sock) is None
        assert fe.counters["verify_errors"] == 1
        assert "store unavailable" in caplog.text and OTP not in caplog.text
        assert radius_client.check_reply(pkt, udp(fe.udp_address, raw, sock=sock)) == 2
    finally:
        sock.close()
    assert calls == ["kim", "kim"]


def _bad_udp_packets(radius_client, password):
    _, good = radius_client.request("lou", password)
    corrupted = bytearray(good)
    corrupted[corrupted.index(bytes([80, 18])) + 2] ^= 1
    return {
        "oversize": (good + b"\x00" * 4100, "oversize"),
        "bad_length_field": (good[:2] + struct.pack("!H", 10) + good[4:], "bad_length"),
        "length_beyond_data": (good[:2] + struct.pack("!H", len(good) + 40) + good[4:], "bad_length"),
        "truncated": (good[:12], "bad_length"),
        "unknown_code": (bytes([77]) + good[1:], "unknown_code"),
        "garbage": (b"\x01\x07\x00\x1e" + b"\xff" * 26, "malformed"),
        "wrong_secret": (radius_client.request("lou", password, secret=b"wrong-secret")[1],
                         "bad_message_authenticator"),
        "bad_message_authenticator": (bytes(corrupted), "bad_message_authenticator"),
        "no_message_authenticator": (radius_client.request("lou", password, message_authenticator=False)[1],
                                     "missing_message_authenticator"),
    }


def test_bad_packet_table_udp(start_front_end, radius_client, udp, fake_verify, caplog):
    password = "731902"
    verify = fake_verify({("lou", password)})
    # a bad-packet limit above the table's size: each packet is judged on its own here
    fe = start_front_end(verify, bad_packet_limit=(1.0, 100))
    with caplog.at_level(logging.DEBUG, logger="otpfast.radius"):
        for name, (raw, counter) in _bad_udp_packets(radius_client, password).items():
            before = fe.counters[counter]
            assert udp(fe.udp_address, raw, timeout=0.2) is None, name
            assert fe.counters[counter] == before + 1, name
        # still serving, and the OTP was never spent by a bad packet
        pkt, raw = radius_client.request("lou", password)
        assert radius_client.check_reply(pkt, udp(fe.udp_address, raw)) == 2
    assert verify.calls == [("lou", password)]
    assert "dropped" in caplog.text
    assert password not in caplog.text
    assert SECRET.decode() not in caplog.text


def test_bad_packet_table_unix(start_front_end, radius_client, fake_verify, caplog):
    password = "402118"
    verify = fake_verify({("may", password)})
    fe = start_front_end(verify, udp=None, clients=None)
    pkt, good = radius_client.request("may", password, secret=b"", message_authenticator=False)
    with caplog.at_level(logging.DEBUG, logger="otpfast.radius"):
        # a bad length field loses the framing: the connection is closed
        for header_length, counter in ((10, "bad_length"), (5000, "oversize")):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(3)
                s.connect(fe.socket_path)
                s.sendall(good[:2] + struct.pack("!H", header_length) + good[4:])
                assert s.recv(4096) == b""
            assert fe.counters[counter] == 1
        # a well-framed but invalid packet is dropped and the connection keeps working
        unknown = bytes([40]) + good[1:]
        replies = unix_exchange(fe.socket_path, [unknown, good], expect=1)
        assert radius_client.check_reply(pkt, replies[pkt.id], secret=b"") == 2
        # a connection that dies mid-packet is counted
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(fe.socket_path)
            s.sendall(good[:30])
        deadline = time.monotonic() + 2
        while fe.counters["bad_length"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert fe.counters["unknown_code"] == 1
    assert fe.counters["bad_length"] == 2
    assert password not in caplog.text


def test_secret_file_first_line(tmp_path):
    f = tmp_path / "secret"
    f.write_bytes(b"  s3cret value of 16+ \nsecond line\n")
    assert read_secret_file(str(f)) == b"s3cret value of 16+"
    f.write_bytes(b"\n")
    with pytest.raises(InvalidParameter) as info:
        read_secret_file(str(f))
    assert info.value.field == "radius-secret-file"
    with pytest.raises(InvalidParameter):
        read_secret_file(str(tmp_path / "missing"))


@pytest.mark.parametrize("text", ["127.0.0.1 ", "not-an-ip zz-value-zz-long-enough", "10.0.0.0/33 zz-value-zz-long-enough",
                                  "# only", "127.0.0.1 zz-value-zz", "127.0.0.1 no-message-authenticator", "0.0.0.0/0 zz-value-zz-long-enough",
                                  "::/0 zz-value-zz-long-enough no-message-authenticator",
                                  "10.0.0.1 zz-value-zz-long-enough\n10.0.0.1/32 zz-value-zz-long-enough"])
def test_clients_file_errors_name_option_without_secret(tmp_path, text):
    f = tmp_path / "clients"
    f.write_text(text + "\n")
    with pytest.raises(InvalidParameter) as info:
        RadiusClients.from_files(clients_file=str(f))
    assert info.value.field == "radius-clients"
    assert "zz-value-zz" not in str(info.value)


def test_clients_file_ipv4_mapped_and_unknown(tmp_path):
    f = tmp_path / "clients"
    f.write_text("192.0.2.0/24 net-secret-of-16-chars\n")
    clients = RadiusClients.from_files(clients_file=str(f))
    assert clients.client_for("::ffff:192.0.2.7").secret == b"net-secret-of-16-chars"
    assert clients.client_for("198.51.100.1") is None
    assert "net-secret" not in repr(clients) and "net-secret" not in repr(clients.client_for("192.0.2.1"))


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:1812", ("127.0.0.1", 1812)), ("[::1]:0", ("::1", 0)), ("localhost:18120", ("localhost", 18120)),
])
def test_parse_host_port(text, expected):
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":1812", "::1:1812", "host:99999", "host:x"])
def test_parse_host_port_errors(text):
    with pytest.raises(InvalidParameter):
        parse_host_port(text)


def test_config_requires_a_listener_and_a_secret():
    with pytest.raises(InvalidParameter):
        RadiusConfig()
    with pytest.raises(InvalidParameter) as info:
        RadiusConfig(udp=("127.0.0.1", 0))
    assert info.value.field == "radius-secret-file"


def test_drop_warnings_are_rate_limited(start_front_end, fake_verify, caplog):
    fe = start_front_end(fake_verify(), bad_packet_limit=(1.0, 1000))  # the log's own limit
    with caplog.at_level(logging.WARNING, logger="otpfast.radius"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(200):
                s.sendto(b"\x05" * 30, fe.udp_address)
        deadline = time.monotonic() + 3
        while fe.counters["bad_length"] + fe.counters["unknown_code"] < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
    dropped = fe.counters["bad_length"] + fe.counters["unknown_code"]
    assert dropped == 200
    assert fe.counters["drop_logs_suppressed"] > 0
    assert caplog.text.count("dropped") == dropped - fe.counters["drop_logs_suppressed"]
