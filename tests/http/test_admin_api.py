"""protocol.admin_api without sockets (routing, parameters, errors) and the OpenAPI
description against the router: every route described, every description routed."""
import json
from importlib import resources

import pytest

from otpfast.net.http import HttpHandler
from otpfast.protocol import admin_api
from otpfast.protocol.admin_api import AdminError, parse
from otpfast.protocol.http import HttpRequest

JSON = {b"content-type": b"application/json"}


def request(method, target, body=None, headers=None):
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return HttpRequest(method, target, headers if headers is not None else dict(JSON), data)


def refused(req):
    with pytest.raises(AdminError) as caught:
        parse(req)
    return caught.value


def test_admin_api_routes_with_path_parameters_decoded():
    call = parse(request(b"GET", b"/admin/users/al%20ice%C3%A9"))
    assert (call.operation, call.params) == ("user_show", {"name": "al iceé"})
    call = parse(request(b"POST", b"/admin/tokens/OTPF1/resync", {"otp1": "1", "otp2": "2"}))
    assert (call.operation, call.params) == ("token_resync",
                                             {"serial": "OTPF1", "otp1": "1", "otp2": "2"})
    assert parse(request(b"POST", b"/admin/tokens/import", {"pskc": "<x/>"})).operation == "token_import"
    assert parse(request(b"GET", b"/admin/tokens/import")).params == {"serial": "import"}
    call = parse(request(b"GET", b"/admin/audit?account=bob&limit=5&after=10"))
    assert call.params == {"account": "bob", "limit": 5, "after": 10}


def test_admin_api_secrets_are_not_in_the_repr():
    call = parse(request(b"PUT", b"/admin/users/bob/pin", {"pin": "s3cret-pin"}))
    assert "s3cret" not in repr(call) and call.params["pin"] == "s3cret-pin"


@pytest.mark.parametrize("req, status, field", [
    (request(b"GET", b"/admin/nope"), 404, None),
    (request(b"PATCH", b"/admin/users"), 405, None),
    (request(b"GET", b"/admin/users/%FF"), 400, "name"),
    (request(b"POST", b"/admin/users", {"name": "x"}), 400, "type"),
    (request(b"POST", b"/admin/users", {"name": "x", "type": "hotp", "digits": "6"}), 400, "digits"),
    (request(b"POST", b"/admin/users", {"name": "x", "type": "hotp", "digits": True}), 400, "digits"),
    (request(b"POST", b"/admin/users", {"name": "x", "type": "hotp", "extra": 1}), 400, "extra"),
    (request(b"POST", b"/admin/users", {"name": 7, "type": "hotp"}), 400, "name"),
    (request(b"POST", b"/admin/users", b"{not json"), 400, None),
    (request(b"POST", b"/admin/users", b"[1]"), 400, None),
    (request(b"POST", b"/admin/users", b"\xff\xfe"), 400, None),
    (request(b"POST", b"/admin/users", {"name": "x"}, headers={}), 415, None),
    (request(b"PUT", b"/admin/users/bob/pin?pin=1234", {"pin": "1234"}), 400, None),
    (request(b"GET", b"/admin/audit?limit=%D9%A3"), 400, "limit"),       # Arabic-Indic 3
    (request(b"GET", b"/admin/audit?limit=-1"), 400, "limit"),
    (request(b"GET", b"/admin/audit?bogus=1"), 400, "bogus"),
    (request(b"GET", b"/admin/audit?%ZZ"), 400, None),
    (request(b"GET", b"/admin/users", {"a": 1}), 400, None),
    (request(b"POST", b"/admin/users", {"name": "x" * 2000, "type": "hotp"}), 400, "name"),
], ids=lambda value: None)
def test_admin_api_bad_requests_are_named_4xx(req, status, field):
    error = refused(req)
    assert (error.status, error.field) == (status, field)


def test_admin_api_error_response_shape():
    response = admin_api.error_response(404, "no token 'x'", "serial")
    assert response.status == 404
    assert json.loads(response.body) == {"error": {"status": 404, "message": "no token 'x'",
                                                   "field": "serial"}}


def _spec():
    return json.loads(resources.files("otpfast").joinpath("data/openapi.json").read_bytes())


def test_openapi_paths_and_methods_equal_the_routes():
    described = {(method.upper(), path) for path, item in _spec()["paths"].items()
                 for method in item}
    routed = {(method.decode(), path.decode()) for method, path in HttpHandler.ROUTES}
    routed |= {(method.decode(), template) for method, template, _ in admin_api.ROUTES}
    assert described == routed


def test_openapi_admin_bodies_and_query_equal_the_declared_parameters():
    spec = _spec()
    for method, template, operation in admin_api.ROUTES:
        op = spec["paths"][template][method.decode().lower()]
        assert op["operationId"] == operation
        names = {p["name"] for p in op.get("parameters", ()) if p["in"] == "query"}
        required = set()
        if "requestBody" in op:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            names |= set(schema["properties"])
            required = set(schema["required"])
        declared = admin_api.PARAMS[operation]
        assert names == set(declared), operation
        assert required == {n for n, (_, must) in declared.items() if must}, operation
        path_names = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
        assert path_names == {part[1:-1] for part in template.split("/") if part.startswith("{")}


def test_openapi_is_3_1_and_every_operation_has_security_and_responses():
    spec = _spec()
    assert spec["openapi"].startswith("3.1")
    for item in spec["paths"].values():
        for op in item.values():
            assert op["responses"] and "security" in op
            if op["tags"] == ["admin"]:
                assert op["security"] == [{"bearerAuth": []}]      # no anonymous admin


def test_admin_api_405_names_the_methods_of_the_path():
    with pytest.raises(AdminError) as info:
        parse(request(b"PATCH", b"/admin/users"))
    assert info.value.status == 405 and info.value.allow == b"GET, POST"
    with pytest.raises(AdminError) as info:
        parse(request(b"GET", b"/admin/nope"))
    assert info.value.status == 404 and info.value.allow is None
