"""The admin API, sans-IO: an HTTP request in, an ``AdminCall`` (operation + parameters)
out; results and errors in, JSON responses out. No service call happens here: the network
glue (otpfast.net.admin) runs the call against the service layer the CLI uses.

Routes are a table (``ROUTES``): method, path template, operation. Path parameters are
percent-decoded UTF-8; query parameters are read on GET and DELETE; a request body, where
an operation takes one, is one JSON object. Every parameter has a declared type
(``PARAMS``); an unknown, missing or mistyped one is a 400 naming it. Integers are ASCII
digits only. Secrets (a PIN, a PSKC key or password) are only ever read from the body.
"""
import json
from urllib.parse import parse_qsl, unquote_to_bytes

from .http import HttpResponse

PREFIX = b"/admin/"
MAX_TEXT = 1024               # characters of a name, serial, PIN, description, ...
MAX_PSKC = 60 * 1024          # characters of the PSKC document (the body limit is 64 KiB)
MAX_LIMIT = 1000              # audit entries in one page
DEFAULT_LIMIT = 100

# (method, path template, operation); {name} and {serial} are path parameters
ROUTES = (
    (b"GET", "/admin/users", "user_list"),
    (b"POST", "/admin/users", "user_add"),
    (b"GET", "/admin/users/{name}", "user_show"),
    (b"DELETE", "/admin/users/{name}", "user_delete"),
    (b"POST", "/admin/users/{name}/lock", "user_lock"),
    (b"POST", "/admin/users/{name}/unlock", "user_unlock"),
    (b"PUT", "/admin/users/{name}/pin", "user_set_pin"),
    (b"DELETE", "/admin/users/{name}/pin", "user_remove_pin"),
    (b"GET", "/admin/tokens", "token_list"),
    (b"POST", "/admin/tokens", "token_add"),
    (b"POST", "/admin/tokens/import", "token_import"),
    (b"GET", "/admin/tokens/{serial}", "token_show"),
    (b"DELETE", "/admin/tokens/{serial}", "token_delete"),
    (b"POST", "/admin/tokens/{serial}/enable", "token_enable"),
    (b"POST", "/admin/tokens/{serial}/disable", "token_disable"),
    (b"POST", "/admin/tokens/{serial}/resync", "token_resync"),
    (b"GET", "/admin/audit", "audit_list"),
)

_STR, _INT, _INTS = "string", "integer", "integer list"
# operation -> {parameter: (type, required)}; path parameters are strings, always given
PARAMS = {
    "user_list": {},
    "user_add": {"name": (_STR, True), "type": (_STR, True), "digits": (_INT, False),
                 "algorithm": (_STR, False), "period": (_INT, False), "window": (_INT, False),
                 "ttl": (_INT, False), "chain_length": (_INT, False),
                 "lockout": (_INT, False), "lockout_policy": (_STR, False),
                 "authorities": (_INTS, False), "issuer": (_STR, False)},
    "user_show": {}, "user_delete": {}, "user_lock": {}, "user_unlock": {},
    "user_set_pin": {"pin": (_STR, True)},
    "user_remove_pin": {},
    "token_list": {"user": (_STR, False)},
    "token_add": {"user": (_STR, True), "type": (_STR, True), "description": (_STR, False),
                  "digits": (_INT, False), "algorithm": (_STR, False),
                  "period": (_INT, False), "window": (_INT, False), "count": (_INT, False),
                  "issuer": (_STR, False)},
    "token_import": {"pskc": (_STR, True), "psk": (_STR, False), "password": (_STR, False),
                     "user": (_STR, False)},
    "token_show": {}, "token_delete": {}, "token_enable": {}, "token_disable": {},
    "token_resync": {"otp1": (_STR, True), "otp2": (_STR, True)},
    "audit_list": {"account": (_STR, False), "since": (_STR, False),
                   "result": (_STR, False), "after": (_INT, False), "limit": (_INT, False)},
}
_QUERY = frozenset({b"GET", b"DELETE"})     # these read the query string, never a body


class AdminError(Exception):
    """A request the admin API refuses: ``status`` (4xx), the parameter (or None)."""

    def __init__(self, status, message, field=None, allow=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.allow = allow              # 405: the path's methods (the Allow header)


class AdminCall:
    __slots__ = ("operation", "params")

    def __init__(self, operation, params):
        self.operation = operation      # a ROUTES operation name
        self.params = params            # {name: str | int | list[int]}

    def __repr__(self):                 # never the parameters: they may hold secrets
        return f"AdminCall({self.operation!r})"


def _compile():
    table = {}
    for method, template, operation in ROUTES:
        parts = tuple(template.strip("/").split("/"))
        table.setdefault(len(parts), []).append((parts, method, operation))
    return table


_TABLE = _compile()
PATHS = tuple(dict.fromkeys(template for _, template, _ in ROUTES))


def match(method, path):
    """(operation, path parameters) for ``method`` on ``path`` (bytes, no query string);
    AdminError 404 (no such path) or 405 (not with this method)."""
    segments = path.strip(b"/").split(b"/")
    allowed = set()
    for parts, route_method, operation in _TABLE.get(len(segments), ()):
        found = {}
        for part, segment in zip(parts, segments):
            if part.startswith("{"):
                found[part[1:-1]] = segment
            elif part.encode() != segment:
                break
        else:
            if route_method != method:
                allowed.add(route_method)
                continue
            return operation, {name: _text(name, raw) for name, raw in found.items()}
    if allowed:
        raise AdminError(405, "method not allowed", allow=b", ".join(sorted(allowed)))
    raise AdminError(404, "no such endpoint")


def _text(name, raw):
    try:
        value = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise AdminError(400, "not UTF-8", name) from None
    if not value or len(value) > MAX_TEXT:
        raise AdminError(400, f"must be 1..{MAX_TEXT} characters", name)
    return value


def parse(request):
    """The AdminCall of one request (otpfast.protocol.http.HttpRequest); AdminError."""
    path, _, query = request.target.partition(b"?")
    operation, params = match(request.method, path)
    declared = PARAMS[operation]
    if request.method in _QUERY:
        given = _query(query)
        if request.body:
            raise AdminError(400, "this request takes no body")
    else:
        given = _body(request) if declared else {}
        if query:
            raise AdminError(400, "parameters go in the JSON body, not the URL")
    for name, value in given.items():
        if name not in declared:
            raise AdminError(400, "unknown parameter", name[:64])
        params[name] = _typed(name, value, declared[name][0], request.method in _QUERY)
    for name, (_, required) in declared.items():
        if required and name not in params:
            raise AdminError(400, "missing", name)
    return AdminCall(operation, params)


def _query(raw):
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                          errors="strict", max_num_fields=16) if raw else []
    except (UnicodeDecodeError, ValueError):
        raise AdminError(400, "unreadable query string") from None
    return dict(pairs)


def _body(request):
    content_type = request.headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if not request.body:
        return {}
    if content_type != b"application/json":
        raise AdminError(415, "the body must be JSON (Content-Type: application/json)")
    try:
        data = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AdminError(400, "invalid JSON body") from None
    if not isinstance(data, dict):
        raise AdminError(400, "the JSON body must be an object")
    return data


def _typed(name, value, kind, from_query):
    """``value`` checked against ``kind`` (query values arrive as text)."""
    if kind == _STR:
        if not isinstance(value, str):
            raise AdminError(400, "must be a string", name)
        limit = MAX_PSKC if name == "pskc" else MAX_TEXT
        if len(value) > limit:
            raise AdminError(400, f"must be at most {limit} characters", name)
        return value
    if kind == _INT:
        if from_query:
            if not (value.isascii() and value.isdigit() and len(value) <= 18):
                raise AdminError(400, "must be a whole number (ASCII digits)", name)
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2**63:
            raise AdminError(400, "must be an integer", name)
        return value
    if (not isinstance(value, list) or len(value) > 64
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
        raise AdminError(400, "must be a list of integers", name)
    return value


def respond(status, obj):
    return HttpResponse.json(status, obj)


def error_response(status, message, field=None, allow=None):
    error = {"status": status, "message": message}
    if field is not None:
        error["field"] = field
    return HttpResponse.json(status, {"error": error}, allow=allow)
