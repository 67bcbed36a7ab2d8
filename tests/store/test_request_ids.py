"""Idempotent verification (issue 12, item 3): a client's request id. A retry of the same
id - after a lost reply, a timeout or "try again", at any node - gets the outcome the first
one got; it was "rejected" (the OTP was used by then) before."""
import hmac
import struct

import pytest

from otpfast.services.admin import Admin
from otpfast.services.distribution import ClientInfo, Distribution, VerifyItem

NOW = 1_000_000.0
KEY_HEX = "3132333435363738393031323334353637383930"


def _code(counter):
    mac = hmac.digest(bytes.fromhex(KEY_HEX), struct.pack(">Q", counter), "sha1")
    offset = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10**6)


@pytest.fixture
def relay(store):
    Admin(store, clock=lambda: NOW).add_account("alice", "hotp", secret=bytes.fromhex(KEY_HEX))
    return ClientInfo("relay", None, True)


def _item(client, otp, request_id):
    return VerifyItem("alice", otp, "t", client, request_id)


def test_request_id_retry_gets_the_first_outcome(store, relay):
    dist = Distribution(store, clock=lambda: NOW)
    assert dist.verify_many([_item(relay, _code(0), "r1")]) == [True]
    assert dist.verify_many([_item(relay, _code(0), "r1")]) == [True]      # the retry
    assert dist.verify_many([_item(relay, _code(0), "r2")]) == [False]     # a replay
    assert dist.verify_many([_item(relay, "000000", "r3")]) == [False]
    assert dist.verify_many([_item(relay, _code(1), "r3")]) == [False]     # r3 was rejected
    # two copies of one request in one batch: decided once
    assert dist.verify_many([_item(relay, _code(1), "r4"), _item(relay, _code(1), "r4")]) \
        == [True, True]
    verifies = [e for e in store.audit_entries() if e.event == "verify"]
    assert [e.outcome for e in verifies].count("accepted") == 2
    assert store.verify_audit().ok


def test_request_id_is_per_client(store, relay):
    other = ClientInfo("other", None, True)
    dist = Distribution(store, clock=lambda: NOW)
    assert dist.verify_many([_item(relay, _code(0), "same")]) == [True]
    assert dist.verify_many([_item(other, _code(0), "same")]) == [False]


def test_request_id_outcome_edited_is_refused(backend, store, relay):
    """A recorded outcome edited without the key (a "rejected" made "accepted") is refused
    (logged) and the retry is decided afresh."""
    dist = Distribution(store, clock=lambda: NOW)
    assert dist.verify_many([_item(relay, "000000", "r1")]) == [False]
    backend.sql("UPDATE verify_requests SET accepted = %s", (True,))
    assert dist.verify_many([_item(relay, "000000", "r1")]) == [False]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_request_id_retry_at_another_node(backend, store, relay):
    a = Distribution(backend.open(node="a"), clock=lambda: NOW)
    b = Distribution(backend.open(node="b"), clock=lambda: NOW)
    assert a.verify_many([_item(relay, _code(0), "r1")]) == [True]
    assert b.verify_many([_item(relay, _code(0), "r1")]) == [True]
    assert b.verify_many([_item(relay, _code(0), "r2")]) == [False]
