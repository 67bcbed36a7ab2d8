"""The share store's counter rules (durable across reopening) and the share server's
throttle; the new messages on the wire."""
import pytest

from otpfast.errors import LocalProtocolError, RemoteProtocolError, StoreError
from otpfast.protocol import codec
from otpfast.protocol import shares as shares_protocol
from otpfast.protocol.messages import (Accept, AuthStart, CeremonyReply, CeremonyStep, Evaluate, Hello, Outcome,
                                       Partial, Reject, ShareState, ShareStatus)
from otpfast.services.shares import CounterRefused, Principal, ShareServer
from otpfast.store.atrest import new_key
from otpfast.store.shares import ISSUE, VERIFY, VERIFY_WINDOW, ShareStore

PUBLIC = {"key": "00" * 32, "shares": {"1": "00" * 32}}


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "shares.db")


def _store(path, key):
    store = ShareStore(path, key)
    if store.share("alice") is None:
        assert store.add_share("alice", "S1", 1, 2, b"\1" * 32, PUBLIC, b"transcript", 0.0)
    return store


def test_share_store_counter_rules_survive_reopening(store_path):
    key = new_key()
    store = _store(store_path, key)
    assert store.mark("alice", 3, ISSUE)
    assert not store.mark("alice", 3, ISSUE)           # once
    assert not store.mark("alice", 2, ISSUE)           # below the watermark
    assert store.status("alice") == (4, [3])
    assert store.mark("alice", 3, VERIFY)
    store.close()
    store = _store(store_path, key)                    # a restart: nothing forgotten
    assert not store.mark("alice", 3, VERIFY)
    assert store.consumed("alice", 3)
    assert store.status("alice") == (4, [])
    assert store.mark("alice", 1, VERIFY)              # never issued here, within the window: consumed
    assert not store.mark("alice", 2, ISSUE)
    assert not store.mark("bob", 0, ISSUE)             # no share
    store.close()


def test_share_store_window_and_limits(store_path):
    store = _store(store_path, new_key())
    assert store.mark("alice", 100, ISSUE)
    assert not store.mark("alice", 100 - VERIFY_WINDOW - 1, VERIFY)
    assert store.consumed("alice", 100 - VERIFY_WINDOW - 1)
    assert not store.mark("alice", 2**62, ISSUE)
    store.close()


def test_share_store_share_is_encrypted_and_bound(store_path):
    key = new_key()
    store = _store(store_path, key)
    store.close()
    with open(store_path, "rb") as fh:
        assert b"\1" * 32 not in fh.read()
    with pytest.raises(StoreError):
        ShareStore(store_path, new_key()).share("alice")


class _Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def test_share_server_wrong_otps_throttle_the_account(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import rsa

    from otpfast import tprf
    from otpfast.services.shares import FAILED_PER_ACCOUNT

    store = ShareStore(str(tmp_path / "shares.db"), new_key())
    k = tprf.random_scalar()
    public = {"key": tprf.public_key(k).hex(), "shares": {"1": tprf.public_key(k).hex()}}
    store.add_share("alice", "S1", 1, 2, k, public, b"t", 0.0)
    store.confirm("alice", b"t", {"1": "00"})
    clock = _Clock()
    service = ShareServer(store, rsa.generate_private_key(public_exponent=65537, key_size=2048), "sha256:x",
                          clock=clock)
    verifier = Principal("login", "verifier", None, b"k")
    for counter in range(int(FAILED_PER_ACCOUNT.burst)):
        service.evaluate(verifier, "alice", counter, VERIFY)
        service.outcome(verifier, "alice", counter, False)
    with pytest.raises(CounterRefused):
        service.evaluate(verifier, "alice", 50, VERIFY)
    assert not store.consumed("alice", 50)             # refused before anything is marked
    clock.now += 1 / FAILED_PER_ACCOUNT.rate
    service.evaluate(verifier, "alice", 50, VERIFY)
    store.close()


@pytest.mark.parametrize("message", [
    ShareStatus("alice"), ShareState(3, b"\0" * 8), Evaluate("alice", 2**63, 2), Partial(2, b"e" * 32, b"p" * 64),
    Outcome("alice", 5, 0), CeremonyStep("alice", 3, b"{}" * 1000), CeremonyReply(b"{}", b"s" * 384),
])
def test_share_messages_round_trip(message):
    decoder = codec.FrameDecoder()
    decoder.feed(codec.encode(message))
    assert decoder.next_message() == message


def test_share_conversation_order():
    client = shares_protocol.Connection(shares_protocol.CLIENT)
    server = shares_protocol.Connection(shares_protocol.SERVER)
    server.receive_data(client.send(Hello()) + client.send(AuthStart("p", b"n" * 32))
                        + client.send(Evaluate("alice", 1, 1)))
    assert [type(server.next_event()) for _ in range(3)] == [Hello, AuthStart, Evaluate]
    with pytest.raises(LocalProtocolError):
        server.send(Accept())                          # Hello's reply must come first
    fresh = shares_protocol.Connection(shares_protocol.SERVER)
    fresh.receive_data(codec.encode(Evaluate("alice", 1, 1)))
    with pytest.raises(RemoteProtocolError):
        fresh.next_event()                             # not an opening message
    assert Reject in shares_protocol.REQUESTS[Evaluate]


@pytest.mark.parametrize("body", [
    b"", b"[]", b"null", b'{"ceremony": 1}', b'{"servers": "x"}', b'{"dealings": [[1, 2]]}',
    b'{"complaints": [[1, 2]], "setup": {}}', b'{"signatures": []}', b"\xff\xfe", b'{"a": ' * 50 + b"1" + b"}" * 50,
])
def test_share_server_ceremony_garbage_is_refused(tmp_path, body):
    """Whatever an admin sends in any round, the answer is Refused (never another error)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from otpfast.errors import Refused

    store = ShareStore(str(tmp_path / "shares.db"), new_key())
    service = ShareServer(store, rsa.generate_private_key(public_exponent=65537, key_size=2048), "sha256:x")
    admin = Principal("admin", "admin", None, b"k")
    for round_ in (1, 2, 3, 4, 5):
        with pytest.raises(Refused):
            service.ceremony(admin, "alice", round_, body)
    # and inside a ceremony, at each later round
    from otpfast.services import tprfdkg

    other = tprfdkg.public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    setup = tprfdkg.new_setup("alice", "S1", 2, [("sha256:x", service.pem), ("sha256:y", other)])
    for round_ in (2, 3, 4):
        service.ceremony(admin, "alice", 1, setup)
        with pytest.raises(Refused):
            service.ceremony(admin, "alice", round_, body)
    dealing = service.ceremony(admin, "alice", 1, setup)
    dealings = tprfdkg.dealings_body(tprfdkg.parse(setup), [dealing, (b"{}", b"\0")])
    complaints = tprfdkg.parse(service.ceremony(admin, "alice", 2, dealings)[0])["complaints"]
    assert [c["dealer"] for c in complaints] == [2]
    with pytest.raises(Refused):
        service.ceremony(admin, "alice", 3, body)
    store.close()
