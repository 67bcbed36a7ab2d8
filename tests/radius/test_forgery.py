"""Issue 9, finding 1: RADIUS forgery without the shared secret, reproduced on loopback at
small scale (bounded counts, short timeouts) against the front end over a fake verifier.

Before: a forged Access-Request was answered only when its User-Password happened to decrypt
to printable text (an oracle on the keystream MD5(secret + authenticator)); Proxy-State
without a Message-Authenticator was echoed in the reply (Blast-RADIUS); a sniffed request
re-sent under a new Identifier was verified again; one secret served every source address;
nothing limited a source sending bad packets or failures.
"""
import hashlib
import logging
import os
import socket
import struct
import time

import pytest

from otpfast.radius import codec
from otpfast.radius.config import RadiusClients
from otpfast.radius.server import start_radius

from .conftest import SECRET

VICTIM = "victim"
OTP = "482913"
ROOMY = dict(bad_packet_limit=(1000.0, 100_000), failure_limit=(1000.0, 100_000))  # limits off-stage


def attribute(kind, value):
    return bytes([kind, len(value) + 2]) + value


def packet(identifier, authenticator, attributes):
    body = b"".join(attribute(kind, value) for kind, value in attributes)
    return struct.pack("!BBH", 1, identifier, 20 + len(body)) + authenticator + body


def hide(plain, secret, authenticator):
    """RFC 2865 §5.2 User-Password hiding (what a client with the secret does)."""
    plain = plain + b"\0" * (-len(plain) % 16 or (16 if not plain else 0))
    out, last = b"", authenticator
    for i in range(0, len(plain), 16):
        pad = hashlib.md5(secret + last).digest()
        last = bytes(a ^ b for a, b in zip(plain[i:i + 16], pad))
        out += last
    return out


def forged(identifier=None, password=None, *, message_authenticator=False, extra=()):
    """An Access-Request for VICTIM made without the secret: random authenticator and
    User-Password (or ``password``, already hidden), maybe a made-up Message-Authenticator."""
    authenticator = os.urandom(16)
    attributes = [(1, VICTIM.encode()), (2, password or os.urandom(16)), *extra]
    if message_authenticator:
        attributes.append((80, os.urandom(16)))
    return packet(os.urandom(1)[0] if identifier is None else identifier, authenticator, attributes)


def collect(sock, count, quiet=0.4):
    """Replies on ``sock`` until ``count`` arrived or none came for ``quiet`` seconds."""
    replies = []
    sock.settimeout(quiet)
    while len(replies) < count:
        try:
            replies.append(sock.recv(8192))
        except socket.timeout:
            break
    return replies


@pytest.fixture
def udp_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s


def send_all(sock, address, packets, pause_every=50):
    for i, raw in enumerate(packets, 1):
        sock.sendto(raw, address)
        if i % pause_every == 0:
            time.sleep(0.01)  # stay within the socket buffers


def test_forged_requests_get_no_answer_by_default(start_front_end, fake_verify, udp_socket):
    """Message-Authenticator required (the default): 400 forged requests, with no or a
    made-up Message-Authenticator, get no answer at all and verify nothing."""
    verify = fake_verify({(VICTIM, OTP)})
    fe = start_front_end(verify, **ROOMY)
    packets = [forged(message_authenticator=i % 2 == 1) for i in range(400)]
    send_all(udp_socket, fe.udp_address, packets)
    assert collect(udp_socket, 1) == []
    assert verify.calls == []
    assert fe.counters["missing_message_authenticator"] + fe.counters["bad_message_authenticator"] == 400


@pytest.mark.parametrize("plain", [
    b"123456",                     # printable: what the oracle looked for
    b"\xff\xfe\xfd",               # not UTF-8
    b"\x01\x02ctrl",               # UTF-8, not printable
    b"",                           # all zero padding: empty
    bytes(range(0x80, 0x90)),      # 16 bytes, none valid UTF-8
], ids=["printable", "not-utf8", "control", "empty", "high-bytes"])
def test_no_decryption_oracle_for_opted_out_clients(start_front_end, fake_verify, udp_socket, plain):
    """An opted-out client (no Message-Authenticator): whatever the User-Password decrypts
    to, the request takes the path of a wrong OTP: one verify call for that user, one
    Access-Reject of the same length, signed like any other."""
    verify = fake_verify({(VICTIM, OTP)})
    fe = start_front_end(verify, legacy=True, **ROOMY)
    authenticator = os.urandom(16)
    raw = packet(7, authenticator, [(1, VICTIM.encode()), (2, hide(plain, SECRET, authenticator))])
    udp_socket.sendto(raw, fe.udp_address)
    [reply] = collect(udp_socket, 1, quiet=3)
    assert reply[0] == codec.ACCESS_REJECT and len(reply) == 20
    assert codec.verify_response_authenticator(reply, authenticator, SECRET)
    assert [account for account, _ in verify.calls] == [VICTIM]
    assert dict(fe.counters) == {"requests": 1, "rejected": 1}


def test_random_forged_requests_all_get_the_same_reject(start_front_end, fake_verify, udp_socket):
    """400 forged requests with random User-Password bytes to an opted-out client: every one
    gets an Access-Reject of the same length (before, only a printable decryption got an
    answer, which let ~4,600 probes recover the keystream)."""
    verify = fake_verify({(VICTIM, OTP)})
    fe = start_front_end(verify, legacy=True, **ROOMY)
    packets = [forged(identifier=i % 256, password=os.urandom(16 * (1 + i % 3))) for i in range(400)]
    replies = []
    for start in range(0, len(packets), 50):  # in rounds: the replies must fit our receive buffer
        send_all(udp_socket, fe.udp_address, packets[start:start + 50])
        replies += collect(udp_socket, 50, quiet=3)
    assert len(replies) == len(packets)
    assert {(reply[0], len(reply)) for reply in replies} == {(codec.ACCESS_REJECT, 20)}
    assert len(verify.calls) == len(packets) and {account for account, _ in verify.calls} == {VICTIM}
    assert fe.counters["rejected"] == len(packets)


@pytest.mark.parametrize("legacy", [True, False], ids=["opted-out", "default"])
def test_proxy_state_without_message_authenticator_is_dropped(start_front_end, fake_verify, udp_socket,
                                                             radius_client, legacy):
    """Blast-RADIUS precondition: 4 x 253 bytes of attacker Proxy-State got a 1,040-byte
    unsigned reply echoing all of it. Dropped now, even for an opted-out client."""
    verify = fake_verify({(VICTIM, OTP)})
    fe = start_front_end(verify, legacy=legacy, **ROOMY)
    pkt, _ = radius_client.request(VICTIM, OTP, message_authenticator=False)
    for _ in range(4):
        pkt.AddAttribute("Proxy-State", os.urandom(253))
    udp_socket.sendto(pkt.RequestPacket(), fe.udp_address)
    assert collect(udp_socket, 1) == []
    assert verify.calls == []
    assert fe.counters[codec.DropReason.PROXY_STATE_WITHOUT_MESSAGE_AUTHENTICATOR.value] == int(legacy)
    # under a Message-Authenticator Proxy-State is authenticated and echoed (RFC 2865 §5.33)
    pkt.add_message_authenticator()
    udp_socket.sendto(pkt.RequestPacket(), fe.udp_address)
    [reply] = collect(udp_socket, 1, quiet=3)
    assert radius_client.check_reply(pkt, reply) == codec.ACCESS_ACCEPT


@pytest.mark.parametrize("legacy", [True, False], ids=["opted-out", "default"])
def test_sniffed_request_replayed_with_new_identifier_is_not_verified(start_front_end, fake_verify,
                                                                     radius_client, udp_socket, legacy):
    verify = fake_verify()
    fe = start_front_end(verify, legacy=legacy, **ROOMY)
    pkt, raw = radius_client.request(VICTIM, "000000", message_authenticator=not legacy)
    udp_socket.sendto(raw, fe.udp_address)
    [reply] = collect(udp_socket, 1, quiet=3)
    assert radius_client.check_reply(pkt, reply) == codec.ACCESS_REJECT
    # the attacker re-sends the sniffed bytes under every other Identifier, and from another port
    copies = [raw[:1] + bytes([identifier]) + raw[2:] for identifier in range(256) if identifier != raw[1]]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other_port:
        other_port.bind(("127.0.0.1", 0))
        send_all(udp_socket, fe.udp_address, copies)
        other_port.sendto(raw, fe.udp_address)
        assert collect(udp_socket, 1) == [] and collect(other_port, 1, quiet=0.1) == []
    assert verify.calls == [(VICTIM, "000000")]  # one failure, not 257
    assert fe.counters["replayed"] == 256
    # the client's own retransmission still gets the cached answer
    udp_socket.sendto(raw, fe.udp_address)
    assert collect(udp_socket, 1, quiet=3) == [reply]


def test_secret_file_serves_its_networks_only(start_front_end, fake_verify, radius_client, tmp_path):
    """One secret used to answer every source address; now it belongs to named networks."""
    secret_file = tmp_path / "radius.secret"
    secret_file.write_bytes(SECRET + b"\n")
    verify = fake_verify({(VICTIM, OTP)})
    fe = start_front_end(verify, clients=RadiusClients.from_files(secret_file=str(secret_file),
                                                                  secret_networks="127.0.0.2"))
    pkt, raw = radius_client.request(VICTIM, OTP)
    for source, expected in (("127.0.0.1", None), ("127.0.0.3", None), ("127.0.0.2", codec.ACCESS_ACCEPT)):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source, 0))
            s.sendto(raw, fe.udp_address)
            replies = collect(s, 1, quiet=0.3 if expected is None else 3)
        assert [radius_client.check_reply(pkt, r) for r in replies] == ([] if expected is None else [expected])
    assert fe.counters["unknown_client"] == 2
    assert verify.calls == [(VICTIM, OTP)]


def test_bad_packet_limit_per_source(start_front_end, fake_verify, radius_client, caplog):
    """A source sending bad authenticators is cut off after the burst (cheaply: no decoding,
    no log line per packet) with one warning naming it; other sources are served."""
    verify = fake_verify({(VICTIM, OTP), ("other", OTP)})
    fe = start_front_end(verify, bad_packet_limit=(0.5, 10))
    with caplog.at_level(logging.WARNING, logger="otpfast.radius"), \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        attacker.bind(("127.0.0.1", 0))
        send_all(attacker, fe.udp_address, [forged(message_authenticator=True) for _ in range(200)])
        # a valid request from the same source is dropped too while over the limit
        pkt, raw = radius_client.request(VICTIM, OTP)
        attacker.sendto(raw, fe.udp_address)
        assert collect(attacker, 1) == []
        assert fe.counters["bad_message_authenticator"] == 10
        assert fe.counters["rate_limited"] == 191
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.2", 0))
            pkt, raw = radius_client.request("other", OTP)
            other.sendto(raw, fe.udp_address)
            [reply] = collect(other, 1, quiet=3)
        assert radius_client.check_reply(pkt, reply) == codec.ACCESS_ACCEPT
    over = [r for r in caplog.records if "over the bad-packet limit" in r.getMessage()]
    assert len(over) == 1 and "127.0.0.1" in over[0].getMessage()
    assert verify.calls == [("other", OTP)]


def test_failure_limit_per_source(start_front_end, fake_verify, radius_client, udp_socket, caplog):
    """30 wrong OTPs pipelined from one source: verified up to the burst (each one in flight
    counts as a possible failure, so pipelining does not overshoot), the rest dropped before
    any verification until the source slows down; one warning naming it."""
    verify = fake_verify({(VICTIM, OTP)})
    fe = start_front_end(verify, failure_limit=(2.0, 5))
    with caplog.at_level(logging.WARNING, logger="otpfast.radius"):
        packets = [radius_client.request(VICTIM, f"{i:06d}")[1] for i in range(30)]
        send_all(udp_socket, fe.udp_address, packets)
        replies = collect(udp_socket, len(packets))
        assert 5 <= len(replies) <= 6 and all(reply[0] == codec.ACCESS_REJECT for reply in replies)
        assert len(verify.calls) == len(replies)  # the rest cost no verification
        time.sleep(0.6)  # back under the limit: served again
        pkt, raw = radius_client.request(VICTIM, OTP)
        udp_socket.sendto(raw, fe.udp_address)
        [reply] = collect(udp_socket, 1, quiet=3)
        assert radius_client.check_reply(pkt, reply) == codec.ACCESS_ACCEPT
    over = [r for r in caplog.records if "over the failure limit" in r.getMessage()]
    assert len(over) == 1 and "127.0.0.1" in over[0].getMessage()


def test_opt_out_is_logged_loudly_at_start(loop_thread, fake_verify, tmp_path, caplog):
    from otpfast.radius.config import RadiusConfig

    clients = tmp_path / "clients"
    clients.write_text("127.0.0.1 signed-client-secret\n"
                       "192.0.2.0/28 krb5-1.20-kdc-secret no-message-authenticator\n"
                       "2001:db8::5 pam-radius-auth-secret no-message-authenticator\n")
    config = RadiusConfig(udp=("127.0.0.1", 0), clients=RadiusClients.from_files(clients_file=str(clients)))
    with caplog.at_level(logging.WARNING, logger="otpfast.radius"):
        fe = loop_thread.run(start_radius(config, fake_verify()))
        loop_thread.call(fe.close)
    [warning] = [r for r in caplog.records if "WITHOUT a Message-Authenticator" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "192.0.2.0/28" in warning.getMessage() and "2001:db8::5/128" in warning.getMessage()
    assert "127.0.0.1" not in warning.getMessage()
    assert not any(secret in caplog.text for secret in ("signed-client", "krb5-1.20-kdc", "pam-radius-auth"))


def test_secret_file_default_networks_on_a_public_listener_warn(loop_thread, fake_verify, caplog):
    """`--radius 0.0.0.0:PORT --radius-secret-file F` used to answer everyone; now it
    answers loopback only, and says so at start."""
    from otpfast.radius.config import RadiusConfig

    config = RadiusConfig(udp=("0.0.0.0", 0), clients=RadiusClients.shared(SECRET))
    with caplog.at_level(logging.WARNING, logger="otpfast.radius"):
        fe = loop_thread.run(start_radius(config, fake_verify()))
        loop_thread.call(fe.close)
    assert "only loopback clients are configured" in caplog.text and "--radius-client-networks" in caplog.text
