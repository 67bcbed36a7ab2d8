"""net.http.HttpHandler without sockets: routing, access rule, a failed batch."""
import json
import types

from otpfast.net.http import HttpHandler, parse_allow
from otpfast.net.metrics import Metrics
from otpfast.protocol.http import HttpRequest, render


class FakeStore:
    def account(self, name):
        return object() if name == "alice" else None

    def token(self, serial):
        return None

    def schema_version(self):
        return 5


class FakeDistribution:
    def __init__(self):
        self.store = FakeStore()
        self.refusals = []

    def note_refusal(self, *args):
        self.refusals.append(args)

    def login(self, name, credential, *, source="local"):
        from otpfast.errors import Refused
        raise Refused()


class FakeVerifier:
    def __init__(self, outcome=True, exc=None):
        self.distribution = FakeDistribution()
        self.outcome, self.exc = outcome, exc
        self.calls = []
        self.metrics = Metrics()

    def verify_callback(self, account, otp, callback, *, source, client=None):
        self.calls.append((account, otp, source))
        callback(None if self.exc else self.outcome, self.exc)


def handler(verifier, source="127.0.0.1"):
    h = HttpHandler(verifier, parse_allow("127.0.0.0/8"))
    h.connection_made(types.SimpleNamespace(get_extra_info=lambda name: (source, 1234)))
    return h


def get(target, headers=None):
    return HttpRequest(b"GET", target, headers or {}, b"")


def test_routes_and_methods():
    h = handler(FakeVerifier())
    assert h.handle(get(b"/nope")).message.status == 404
    post = HttpRequest(b"DELETE", b"/healthz", {}, b"")
    refused = h.handle(post).message
    assert refused.status == 405 and refused.allow == b"GET"      # RFC 9110: 405 names them
    assert b"\r\nAllow: GET\r\n" in render(refused)
    check = h.handle(HttpRequest(b"PUT", b"/validate/check", {}, b"")).message
    assert check.status == 405 and check.allow == b"GET, POST"
    assert h.handle(get(b"/metrics")).message.status == 200


def test_a_failed_batch_is_a_503_for_its_requests():
    verifier = FakeVerifier(exc=RuntimeError("disk"))
    reply = handler(verifier).handle(get(b"/validate/check?user=alice&pass=123456"))
    body = json.loads(reply.message.body)
    assert reply.message.status == 503 and body["result"]["status"] is False


def test_not_allowed_without_bearer_is_403_closed_and_charged():
    verifier = FakeVerifier()
    h = handler(verifier, source="192.0.2.7")
    request = get(b"/validate/check?user=alice&pass=123456")
    assert h.handle(request).message.status == 403 and request.close_after
    assert verifier.calls == [] and verifier.distribution.refusals[0][4] == "192.0.2.7"
    request = get(b"/healthz", {b"authorization": b"Bearer relay:wrong"})
    assert h.handle(request).message.status == 403


def test_ipv4_mapped_peer_is_matched_as_ipv4():
    assert handler(FakeVerifier(), source="::ffff:127.0.0.1").authenticated


def test_unknown_user_904_known_user_200():
    h = handler(FakeVerifier(outcome=False))
    assert h.handle(get(b"/validate/check?user=bob&pass=1")).message.status == 400
    known = h.handle(get(b"/validate/check?user=alice&pass=1")).message
    assert known.status == 200 and json.loads(known.body)["result"]["value"] is False
