"""privacyIDEA's /validate API, sans-IO: request parameters in, privacyIDEA v3 envelopes out.

Parameters are read as privacyIDEA's ``get_all_params`` reads them: the query string and a
form body (``application/x-www-form-urlencoded``), then a JSON object body on top. Query and
form values are percent-decoded a second time (privacyIDEA's ``check_unquote``: several of
its plugins encode ``user`` and ``pass`` twice), except for the clients privacyIDEA exempts
by User-Agent (``NO_UNQUOTE_USER_AGENTS``); JSON values are taken as they are. Unlike
privacyIDEA, a second decoding that would not give valid UTF-8 keeps the value as received.
A literal ``%XX`` in a PIN sent once-encoded is therefore decoded again, as privacyIDEA does.
"""
import json
import threading
import time
from urllib.parse import parse_qsl, unquote

from .http import HttpResponse, TEXT

NO_UNQUOTE_USER_AGENTS = frozenset({"privacyidea-cp", "privacyidea-ldap-proxy", "simplesamlphp"})
MAX_FIELD = 1024              # characters of user, serial, realm or pass
ERR_USER_NOT_FOUND = 904
MESSAGE_ACCEPT = "matching 1 tokens"
MESSAGE_REJECT = "wrong otp pin"          # the same for a wrong PIN and a wrong OTP
MESSAGE_NO_USER = "ERR904: The user can not be found in any resolver in this realm!"


class BadRequest(Exception):
    """A request privacyIDEA answers with HTTP 400 and an error envelope."""

    def __init__(self, message, code=905):
        super().__init__(message)
        self.message = message
        self.code = code


def params(request):
    """The request's parameters as a {name: str} dict; BadRequest if they cannot be read."""
    found = {}
    target = request.target
    query = target.partition(b"?")[2]
    unquote_again = _unquotes(request.headers.get(b"user-agent", b""))
    pairs = _form(query)
    content_type = request.headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    body = request.body
    if body and content_type in (b"application/x-www-form-urlencoded", b""):
        if not body.lstrip().startswith(b"{"):
            pairs += _form(body)
    for name, value in pairs:
        found[name] = _unquote(value) if unquote_again else value
    if body and (content_type == b"application/json" or body.lstrip().startswith(b"{")):
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):   # RecursionError: deep nesting
            raise BadRequest("invalid JSON body") from None
        if not isinstance(data, dict):
            raise BadRequest("the JSON body must be an object")
        for name, value in data.items():
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                found[name] = str(value)
            elif value is not None:
                raise BadRequest(f"invalid value of {name[:32]!r}")
    for name in ("user", "serial", "pass", "realm"):
        value = found.get(name)
        if value is not None and len(value) > MAX_FIELD:
            raise BadRequest(f"{name} is too long")
    return found


def _form(raw):
    try:
        text = raw.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                         encoding="utf-8", errors="strict", max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("invalid form encoding") from None


def _unquotes(user_agent):
    name = user_agent.split(b"/", 1)[0].strip().lower()
    return name.decode("ascii", "replace") not in NO_UNQUOTE_USER_AGENTS


def _unquote(value):
    if "%" not in value:
        return value
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        return value


def envelope(version, result, detail):
    return {"jsonrpc": "2.0", "id": 1, "version": version, "time": time.time(),
            "result": result, "detail": detail}


def check_response(version, ok, serial=None, token_type=None):
    """The 200 reply of /validate/check (accept or reject)."""
    detail = {"message": MESSAGE_ACCEPT if ok else MESSAGE_REJECT,
              "threadid": threading.get_ident()}
    if serial is not None:
        detail["serial"] = serial
        detail["type"] = token_type
    return HttpResponse.json(200, envelope(version, {
        "status": True, "value": ok, "authentication": "ACCEPT" if ok else "REJECT"}, detail))


def error_response(version, status, code, message):
    """privacyIDEA's error envelope (``send_error``)."""
    return HttpResponse.json(status, envelope(version, {
        "status": False, "error": {"code": code, "message": message}}, None))


def radius_response(ok):
    return HttpResponse(204 if ok else 400)


def simple_response(ok):
    return HttpResponse(200, b":-)" if ok else b":-(", TEXT)
