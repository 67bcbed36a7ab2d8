"""protocol.http and protocol.validate without sockets: bytes in, requests out (httptools),
limits, responses; privacyIDEA's parameter decoding and envelopes."""
import json
import threading
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings, strategies as st

from otpfast.errors import RemoteProtocolError
from otpfast.protocol import validate
from otpfast.protocol._connection import CONNECTION_CLOSED, NEED_DATA
from otpfast.protocol.http import (CONTINUE, MAX_BODY, MAX_HEAD, MAX_PIPELINED, HttpConnection, HttpRequest,
                                   HttpResponse, render)
from otpfast.protocol.messages import Error


def events(conn):
    out = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is CONNECTION_CLOSED:
            return out, event
        out.append(event)


def test_pipelined_requests_come_out_whole_and_in_order():
    conn = HttpConnection()
    conn.receive_data(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nab")
    got, last = events(conn)
    assert [r.target for r in got] == [b"/a"] and last is NEED_DATA
    assert conn.buffered > 0                 # the second request is incomplete
    conn.receive_data(b"c")
    got, _ = events(conn)
    assert got[0].method == b"POST" and got[0].body == b"abc" and conn.buffered == 0
    assert conn.pending == 2
    out = conn.send(HttpResponse(200, b"{}"))
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 2\r\n" in out and out.endswith(b"{}")
    assert b"Connection: close" not in out and conn.pending == 1


def test_connection_close_and_http10_end_the_connection_after_that_request():
    conn = HttpConnection()
    conn.receive_data(b"GET / HTTP/1.0\r\n\r\nGET /more HTTP/1.1\r\nHost: x\r\n\r\n")
    got, last = events(conn)
    assert len(got) == 1 and last is CONNECTION_CLOSED
    assert b"Connection: close" in conn.send(HttpResponse(204))


@pytest.mark.parametrize("data,status", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000, 431),                  # incomplete
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     + (b"4000\r\n" + b"a" * 0x4000 + b"\r\n") * 5, 413),
    (b"G\x00T / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                             # no Host
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),                       # control character
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),                      # obsolete line folding
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nab", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),                                   # HTTP/2 preface
    (b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n" * (MAX_PIPELINED + 1), 429),
])
def test_limits_raise_and_the_refusal_names_the_status(data, status):
    conn = HttpConnection()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(data)
        events(conn)
    out = conn.send(Error())
    assert out.startswith(b"HTTP/1.1 %d " % status) and b"Connection: close" in out
    assert conn.next_event() is CONNECTION_CLOSED


def test_a_head_sent_byte_by_byte_is_bounded():
    conn = HttpConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nX: ")
    with pytest.raises(RemoteProtocolError):
        for _ in range(MAX_HEAD):
            conn.receive_data(b"a")
    assert conn.send(Error()).startswith(b"HTTP/1.1 431 ")


def test_a_burst_of_pipelined_requests_ending_inside_a_head_is_not_too_large():
    one = b"GET /validate/check?user=alice&pass=123456 HTTP/1.1\r\nHost: otpfast\r\nUser-Agent: x\r\n\r\n"
    conn = HttpConnection()
    conn.receive_data(one * 200 + one[:60])
    got, last = events(conn)
    assert len(got) == 200 and last is NEED_DATA and 0 < conn.buffered < MAX_HEAD
    for _ in got:
        conn.send(HttpResponse(204))
    conn.receive_data(one[60:])
    got, _ = events(conn)
    assert len(got) == 1 and conn.buffered == 0


def test_requests_split_anywhere_come_out_the_same():
    data = (b"POST /a?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Pad:  v  \r\n\r\nhello"
            b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Pad: trailer\r\n\r\n"
            b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
    conn = HttpConnection()
    got = []
    for i in range(len(data)):
        conn.receive_data(data[i:i + 1])
        got += events(conn)[0]
    assert [(r.method, r.target, r.body) for r in got] == [
        (b"POST", b"/a?x=1", b"hello"), (b"POST", b"/b", b"abcde"), (b"GET", b"/c", b"")]
    assert got[0].headers[b"x-pad"] == b"v" and got[1].headers.get(b"x-pad") is None   # trailers ignored
    assert conn.buffered == 0 and conn.pending == 3


def test_expect_100_continue_is_answered_in_reply_order():
    conn = HttpConnection()
    conn.receive_data(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"POST /b HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    first, cont = conn.next_event(), conn.next_event()
    assert first.target == b"/a" and cont is CONTINUE and conn.next_event() is NEED_DATA
    assert conn.send(HttpResponse(204)).startswith(b"HTTP/1.1 204 ")
    assert conn.send(CONTINUE) == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.receive_data(b"abc")
    assert conn.next_event().body == b"abc" and conn.pending == 1
    # the body sent along with the head: nothing to wait for
    conn = HttpConnection()
    conn.receive_data(b"POST /b HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")
    assert conn.next_event().body == b"abc"


def test_close_in_a_pipeline_ends_the_connection_after_its_reply():
    conn = HttpConnection()
    conn.receive_data(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      b"GET /ignored HTTP/1.1\r\nHost: x\r\n\r\n")
    got, last = events(conn)
    assert [r.target for r in got] == [b"/a", b"/b"] and last is CONNECTION_CLOSED
    assert b"Connection: close" not in conn.send(HttpResponse(204))
    assert b"Connection: close" in conn.send(HttpResponse(204))


def test_http10_with_keep_alive_is_closed_too():
    conn = HttpConnection()
    conn.receive_data(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    got, last = events(conn)
    assert len(got) == 1 and last is CONNECTION_CLOSED
    assert b"Connection: close" in conn.send(HttpResponse(200, b"{}"))


@pytest.mark.parametrize("data", [
    b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI * HTTP/2.0",
    b"CONNECT example:443 HTTP/1.1\r\nHost: example\r\n\r\n\x16\x03\x01",
])
def test_upgrade_and_connect_are_answered_then_closed(data):
    conn = HttpConnection()
    conn.receive_data(data)
    got, last = events(conn)
    assert len(got) == 1 and last is CONNECTION_CLOSED
    assert b"Connection: close" in conn.send(HttpResponse(404, b"{}"))


def test_head_reply_has_no_body():
    conn = HttpConnection()
    conn.receive_data(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    events(conn)
    assert conn.send(HttpResponse(404, b"{}")).endswith(b"Content-Length: 2\r\n\r\n")
    assert conn.send(HttpResponse(404, b"{}")).endswith(b"\r\n\r\n{}")


def test_end_of_stream_inside_a_request_is_refused_whole_requests_are_answered():
    conn = HttpConnection()
    conn.receive_data(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.receive_data(b"")
    got, last = events(conn)
    assert len(got) == 1 and last is CONNECTION_CLOSED
    conn = HttpConnection()
    conn.receive_data(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nab")
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"")
    assert conn.send(Error()).startswith(b"HTTP/1.1 400 ")


def test_a_refusal_by_the_listener_is_a_400():
    assert HttpConnection().send(Error()).startswith(b"HTTP/1.1 400 ")


def test_204_has_no_body_headers():
    assert render(HttpResponse(204)) == b"HTTP/1.1 204 No Content\r\n\r\n"


def request(target=b"/validate/check", body=b"", content_type=None, user_agent=None):
    headers = {}
    if content_type is not None:
        headers[b"content-type"] = content_type
    if user_agent is not None:
        headers[b"user-agent"] = user_agent
    return HttpRequest(b"POST" if body else b"GET", target, headers, body)


def test_query_form_and_json_parameters():
    assert validate.params(request(b"/v?user=a&pass=1")) == {"user": "a", "pass": "1"}
    form = request(body=b"user=a&pass=p+1", content_type=b"application/x-www-form-urlencoded")
    assert validate.params(form) == {"user": "a", "pass": "p 1"}
    js = request(body=json.dumps({"user": "a", "pass": "%41", "realm": None}).encode(),
                 content_type=b"application/json")
    assert validate.params(js) == {"user": "a", "pass": "%41"}         # JSON: taken as it is


def test_second_decoding_as_privacyidea_does_except_for_its_exempt_clients():
    twice = b"/v?user=a&pass=p%2520%25C3%25A9"                          # "p é" encoded twice
    assert validate.params(request(twice))["pass"] == "p \u00e9"
    exempt = request(twice, user_agent=b"privacyIDEA-CP/3.0 Windows")
    assert validate.params(exempt)["pass"] == "p%20%C3%A9"
    # a second decoding that is not valid UTF-8 keeps the value as received
    assert validate.params(request(b"/v?pass=%25ff%25fe"))["pass"] == "%ff%fe"
    assert validate.params(request(b"/v?pass=100%25"))["pass"] == "100%"


@pytest.mark.parametrize("req", [
    request(body=b"{bad", content_type=b"application/json"),
    request(body=b"[1, 2]", content_type=b"application/json"),
    request(body=b'{"pass": [1]}', content_type=b"application/json"),
    request(body=b'{"pass": true}', content_type=b"application/json"),
    request(body=b"\xff\xfe", content_type=b"application/json"),
    request(b"/v?pass=%ff"),
    request(b"/v?pass=" + b"1" * (validate.MAX_FIELD + 1)),
])
def test_unreadable_parameters_are_a_bad_request(req):
    with pytest.raises(validate.BadRequest):
        validate.params(req)


def test_envelopes_field_for_field():
    ok = json.loads(validate.check_response("otpfast 1", True).body)
    assert set(ok) == {"jsonrpc", "id", "version", "time", "result", "detail"}
    assert ok["result"] == {"status": True, "value": True, "authentication": "ACCEPT"}
    assert ok["detail"]["message"] == "matching 1 tokens" and "threadid" in ok["detail"]
    with_serial = json.loads(validate.check_response("otpfast 1", False, "S1", "hotp").body)
    assert with_serial["detail"]["serial"] == "S1" and with_serial["detail"]["type"] == "hotp"
    assert with_serial["result"]["authentication"] == "REJECT"
    error = validate.error_response("otpfast 1", 400, 904, validate.MESSAGE_NO_USER)
    body = json.loads(error.body)
    assert error.status == 400 and body["result"] == {"status": False, "error": {
        "code": 904, "message": validate.MESSAGE_NO_USER}} and body["detail"] is None
    assert validate.radius_response(True).status == 204 and validate.radius_response(False).status == 400
    assert validate.simple_response(True).body == b":-)" and validate.simple_response(False).body == b":-("


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab=&+% 2Fc3A9éff\x00", max_size=40))
def test_form_decoding_is_parse_qsl(text):
    raw = text.encode()
    try:
        expected = dict(parse_qsl(raw.decode(), keep_blank_values=True, errors="strict",
                                  max_num_fields=validate.MAX_FIELDS))
    except ValueError:
        expected = None
    try:
        got = validate.params(request(b"/v?" + raw, user_agent=b"privacyidea-cp/1"))
    except validate.BadRequest:
        got = None
    assert got == expected


def test_too_many_fields_are_a_bad_request():
    assert len(validate.params(request(b"/v?" + b"&".join([b"a=1"] * validate.MAX_FIELDS)))) == 1
    with pytest.raises(validate.BadRequest):
        validate.params(request(b"/v?" + b"&".join([b"a=1"] * (validate.MAX_FIELDS + 1))))


@pytest.mark.parametrize("args", [("otpfast 1", True), ("otpfast 100%", False), ("v", True, "S\u00e9\"1", "hotp"),
                                  ("v", False, "S1", None)])
def test_check_envelope_is_the_json_of_privacyideas_envelope(args):
    body = validate.check_response(*args).body
    version, ok = args[:2]
    detail = {"message": validate.MESSAGE_ACCEPT if ok else validate.MESSAGE_REJECT,
              "threadid": threading.get_ident()}
    if len(args) > 2:
        detail.update(serial=args[2], type=args[3])
    expected = validate.envelope(version, {"status": True, "value": ok,
                                           "authentication": "ACCEPT" if ok else "REJECT"}, detail)
    expected["time"] = json.loads(body)["time"]
    assert body == json.dumps(expected, separators=(",", ":")).encode()


SAMPLE = (b"POST /validate/check?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"
          b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.binary(max_size=3)), max_size=4),
       st.lists(st.integers(1, 40), max_size=6))
def test_mangled_requests_only_raise_remote_protocol_errors(edits, cuts):
    data = bytearray(SAMPLE)
    for at, insert in edits:
        data[at:at + 1] = insert
    conn = HttpConnection()
    pieces, rest = [], bytes(data)
    for cut in cuts:
        pieces.append(rest[:cut])
        rest = rest[cut:]
    try:
        for piece in pieces + [rest, b""]:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is NEED_DATA or event is CONNECTION_CLOSED:
                    break
                conn.send(CONTINUE if event is CONTINUE else HttpResponse(200, b"{}"))
    except RemoteProtocolError:
        assert conn.send(Error())[:10] in (b"HTTP/1.1 4", b"HTTP/1.1 5") and conn.next_event() is CONNECTION_CLOSED
