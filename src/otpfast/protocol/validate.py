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
from urllib.parse import unquote

from .http import HttpResponse, TEXT

NO_UNQUOTE_USER_AGENTS = frozenset({"privacyidea-cp", "privacyidea-ldap-proxy", "simplesamlphp"})
MAX_FIELD = 1024              # characters of user, serial, realm or pass
MAX_FIELDS = 64               # fields of a query string or form body
FORM = b"application/x-www-form-urlencoded"
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
    headers = request.headers
    user_agent = headers.get(b"user-agent")
    unquote_again = user_agent is None or _unquotes(user_agent)
    found = {}
    query = request.target.partition(b"?")[2]
    if query:
        _form(query, found, unquote_again)
    body = request.body
    if body:
        content_type = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
        json_object = body.lstrip().startswith(b"{")
        if not json_object and content_type in (FORM, b""):
            _form(body, found, unquote_again)
        if json_object or content_type == b"application/json":
            _json_object(body, found)
    for name in ("user", "serial", "pass", "realm"):
        value = found.get(name)
        if value is not None and len(value) > MAX_FIELD:
            raise BadRequest(f"{name} is too long")
    return found


def _form(raw, found, unquote_again):
    """Decode a query string or form body into ``found`` as ``parse_qsl(keep_blank_values=True,
    errors="strict", max_num_fields=MAX_FIELDS)`` would (later names win), then decode the
    values again if ``unquote_again``."""
    try:
        text = raw.decode("utf-8")
        if text.count("&") >= MAX_FIELDS:
            raise ValueError("too many fields")
        for field in text.split("&"):
            if field:
                name, _, value = field.partition("=")
                if "%" in name or "+" in name:
                    name = unquote(name.replace("+", " "), errors="strict")
                if "%" in value or "+" in value:
                    value = unquote(value.replace("+", " "), errors="strict")
                found[name] = _unquote(value) if unquote_again else value
    except ValueError:             # UnicodeDecodeError included
        raise BadRequest("invalid form encoding") from None


def _json_object(body, found):
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
    """The 200 reply of /validate/check (accept or reject): the envelope ``envelope`` would
    give, from a template made once per version and outcome."""
    template = _CHECK_TEMPLATES.get((version, ok))
    if template is None:
        template = _CHECK_TEMPLATES[version, ok] = _check_template(version, ok)
    tail = b"" if serial is None else b',"serial":%s,"type":%s' % (_json(serial), _json(token_type))
    return HttpResponse(200, template % (time.time(), threading.get_ident(), tail))


_CHECK_TEMPLATES = {}


def _json(value):
    return json.dumps(value).encode()


def _check_template(version, ok):
    """The envelope's bytes with ``%r`` for the time, ``%d`` for the thread id and ``%s`` for
    the serial and type (or nothing), in privacyIDEA's field order."""
    def part(obj):
        return json.dumps(obj, separators=(",", ":")).replace("%", "%%")
    head = part({"jsonrpc": "2.0", "id": 1, "version": version})[:-1]
    result = part({"status": True, "value": ok, "authentication": "ACCEPT" if ok else "REJECT"})
    message = part(MESSAGE_ACCEPT if ok else MESSAGE_REJECT)
    return f'{head},"time":%r,"result":{result},"detail":{{"message":{message},"threadid":%d%s}}}}'.encode()


def error_response(version, status, code, message, allow=None):
    """privacyIDEA's error envelope (``send_error``); ``allow``: a 405's Allow header."""
    return HttpResponse.json(status, envelope(version, {
        "status": False, "error": {"code": code, "message": message}}, None), allow=allow)


def radius_response(ok):
    return HttpResponse(204 if ok else 400)


def simple_response(ok):
    return HttpResponse(200, b":-)" if ok else b":-(", TEXT)
