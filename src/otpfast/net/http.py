"""The HTTPS front end: privacyIDEA's /validate API, /healthz, /metrics, /openapi.json and
the admin API (/admin/..., otpfast.protocol.admin_api and otpfast.net.admin).

Runs on net._stream's listener (connections counted from accept, per-source caps, TLS
handshake, whole-request and idle deadlines) with protocol.http.HttpConnection in place of
the native codec. Verifications go through the same AsyncVerifier (group commit, throttles,
audit) as the native protocol and RADIUS, so an OTP is accepted once whichever front end
sees it first.

Who may call: a peer inside ``allow`` (CIDR networks; default loopback), or one that sends
``Authorization: Bearer NAME:CREDENTIAL`` of a verifier or admin client (checked by the
service layer, Distribution.login, in constant time); /validate takes a verifier's, /admin/
only an admin's, on every request (``allow`` is not enough there). Anyone else gets 403, the
connection is closed, and the refusal is audited and counts against the source's throttle. Until a connection is allowed it has the
listener's unauthenticated limits (a 4 KiB request, ``auth_timeout``).
"""
import asyncio
import hmac
import ipaddress
from importlib import resources
import logging
import time

from .. import __version__
from ..errors import OtpfastError, Refused
from ..protocol import admin_api, validate
from ..protocol.http import CONTINUE, HttpConnection, HttpResponse, JSON, TEXT
from ..services import audit
from ._auth import peer_host
from .admin import AdminApi
from ._stream import Reply, start_server

log = logging.getLogger("otpfast.net.http")

VERSION = f"otpfast {__version__}"
DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128")
_BEARER = b"bearer "
_FAILED = object()          # a verification batch that raised: 503 for its requests
# /healthz: how long to keep asking for a write lock another process holds (group commits of
# sibling workers hold it for about a millisecond; a writer holding it this long is a
# problem worth reporting), and how often. Asked without waiting: the loop keeps serving.
HEALTH_LOCK_PATIENCE = 0.5
HEALTH_LOCK_RETRY = 0.01


class _TprfToken:
    __slots__ = ("serial", "type")

    def __init__(self, serial):
        self.serial = serial
        self.type = "tprf"


def parse_allow(text):
    """``CIDR[,CIDR...]`` -> tuple of networks; ValueError naming the bad one."""
    networks = []
    for part in text.split(","):
        part = part.strip()
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"not a network: {part!r}") from None
    return tuple(networks)


def allowed_methods(routes) -> dict:
    """path -> its methods as an Allow header value, from (method, path) route keys."""
    methods: dict = {}
    for method, path in routes:
        methods.setdefault(path, set()).add(method)
    return {path: b", ".join(sorted(found)) for path, found in methods.items()}


class HttpHandler:
    """One connection's requests: a route table of (method, path) -> method name."""

    ROUTES = {
        (b"GET", b"/validate/check"): "_check",
        (b"POST", b"/validate/check"): "_check",
        (b"GET", b"/validate/radiuscheck"): "_radiuscheck",
        (b"POST", b"/validate/radiuscheck"): "_radiuscheck",
        (b"GET", b"/validate/simplecheck"): "_simplecheck",
        (b"POST", b"/validate/simplecheck"): "_simplecheck",
        (b"GET", b"/healthz"): "_healthz",
        (b"GET", b"/metrics"): "_exposition",
        (b"GET", b"/openapi.json"): "_openapi",
    }
    ALLOWED = allowed_methods(ROUTES)      # a path's methods (a 405's Allow header)
    VERIFYING = frozenset({"_check", "_radiuscheck", "_simplecheck"})

    def __init__(self, verifier, allow, tprf=None):
        self._verifier = verifier
        self._tprf = tprf                # net.tprf.TprfGateway: tprf tokens, t partials gathered
        self._distribution = verifier.distribution
        self._allow = allow
        self.metrics = verifier.metrics.http     # also counts the listener's refusals (net._stream)
        self._all_metrics = verifier.metrics
        self.authenticated = False       # read by the listener (unauthenticated limits)
        self.source = "-"
        self._client = None              # ClientInfo of a bearer
        self._bearer = None              # the Authorization value that proved it
        self._admin_api = None

    def connection_made(self, transport):
        self.source = peer_host(transport)
        try:
            address = ipaddress.ip_address(self.source.partition("%")[0])
        except ValueError:
            return
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        self.authenticated = any(address in network for network in self._allow)

    # -- dispatch -----------------------------------------------------------------------
    def handle(self, request):
        if request is CONTINUE:          # the interim 100 Continue, in its place in the reply order
            return Reply(CONTINUE)
        try:
            return self._route(request)
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 for this request only
            log.error("HTTP request failed: %s", type(exc).__name__)
            request.close_after = True
            return Reply(validate.error_response(VERSION, 500, 500, "internal error"))

    def _route(self, request):
        path = request.target.partition(b"?")[0]
        name = self.ROUTES.get((request.method, path))
        if name is None:
            if path.startswith(admin_api.PREFIX):
                return self._admin(request)
            allow = self.ALLOWED.get(path)
            if allow is not None:
                return Reply(validate.error_response(VERSION, 405, 405, "method not allowed", allow))
            return Reply(validate.error_response(VERSION, 404, 404, "no such endpoint"))
        authorization = request.headers.get(b"authorization")
        if authorization is not None or not self.authenticated:
            refusal = self._check_bearer(authorization)
            if refusal is not None:
                return self._forbidden(request, refusal)
        if name in self.VERIFYING and self._client is not None and not self._client.verifier:
            return self._forbidden(request, self._refuse("not_verifier", audit.VERIFY))
        return getattr(self, name)(request)

    def _forbidden(self, request, reason):
        self.metrics.refused(reason)
        request.close_after = True
        return Reply(validate.error_response(VERSION, 403, 403, "forbidden"))

    def _refuse(self, reason, event):
        """Audit a refusal of this peer (it counts against its throttle); the reason."""
        client = "-" if self._client is None else self._client.name
        self._distribution.note_refusal(time.time(), event, "-", client, self.source,
                                        audit.NOT_AUTHORISED)
        return reason

    def _check_bearer(self, authorization):
        """None if the request may go on, else the refusal's reason."""
        if authorization is None:
            reason = "not_allowed"
        elif self._bearer is not None:
            return None if hmac.compare_digest(authorization, self._bearer) else "bad_credential"
        elif authorization[:len(_BEARER)].lower() != _BEARER:
            reason = "bad_credential"
        else:
            name, _, credential = authorization[len(_BEARER):].strip().partition(b":")
            try:
                client = self._distribution.login(name.decode("utf-8"), credential.decode("ascii"),
                                                  source=self.source)
            except (Refused, UnicodeDecodeError, OtpfastError, ValueError):
                return "bad_credential"          # login noted the refusal (throttle, audit)
            if not (client.verifier or client.admin):
                reason = "not_verifier"
            else:
                self._client, self._bearer = client, authorization
                self.authenticated = True
                return None
        self._distribution.note_refusal(time.time(), audit.VERIFY, "-", "-", self.source,
                                        audit.NOT_AUTHORISED)
        return reason

    # -- /admin -------------------------------------------------------------------------
    def _admin(self, request):
        """An admin client's bearer credential on every request; a verifier's is refused
        (403, audited, throttled like a failed authentication)."""
        authorization = request.headers.get(b"authorization")
        if authorization is None:
            return self._forbidden(request, self._refuse("not_admin", audit.ADMIN))
        refusal = self._check_bearer(authorization)
        if refusal is not None:
            return self._forbidden(request, refusal)
        if self._admin_api is None:
            self._admin_api = AdminApi(self._verifier)
        if not self._client.admin or not self._admin_api.current(self._client):
            return self._forbidden(request, self._refuse("not_admin", audit.ADMIN))
        try:
            call = admin_api.parse(request)
        except admin_api.AdminError as exc:
            return Reply(admin_api.error_response(exc.status, exc.message, exc.field, exc.allow))
        return Reply(future=self._admin_api.future(call, self._client, self.source),
                     convert=_same)

    # -- /validate ----------------------------------------------------------------------
    def _verify(self, request, answer):
        """Read user/serial + pass and submit them; ``answer(ok, known, serial, type)`` makes
        the response."""
        try:
            found = validate.params(request)
        except validate.BadRequest as exc:
            return Reply(validate.error_response(VERSION, 400, exc.code, exc.message))
        password = found.get("pass")
        user, serial = found.get("user"), found.get("serial")
        if password is None or (user is None and serial is None):
            missing = "pass" if password is None else "user"
            return Reply(validate.error_response(VERSION, 400, 905, f"ERR905: Missing parameter: '{missing}'"))
        if self._tprf is not None:
            account = self._tprf.account_of(user, serial)
            if account is not None:
                return self._verify_tprf(account, password, answer)
        token = None
        if user is None:
            token = self._distribution.store.token(serial)
            user = " unknown" if token is None else token.user   # no account has that name
        started = time.perf_counter()
        decided_metrics = self.metrics.decided

        def convert(ok):
            if ok is _FAILED:
                decided_metrics(None, started)
                return validate.error_response(VERSION, 503, 503, "temporarily unavailable")
            decided_metrics(ok, started)
            if ok:
                return answer(True, True, token)
            # the same store read for every rejection: an unknown user costs what a known one does
            known = self._distribution.store.account(user) is not None
            return answer(False, known, token)

        reply = Reply.waiting(convert)

        def decided(ok, exc):
            if exc is not None:
                log.error("verification batch failed (503): %s", exc)
                return reply(_FAILED, None)
            return reply(ok, None)

        self._verifier.verify_callback(user, password, decided, source=self.source, client=self._client)
        return reply

    def _verify_tprf(self, account, otp, answer):
        """A tprf token: t share servers each consume the counter before answering."""
        started = time.perf_counter()
        decided_metrics = self.metrics.decided
        token = _TprfToken(self._tprf.serial(account))

        async def decide():
            try:
                return await self._tprf.verify(account, otp)
            except (OtpfastError, OSError) as exc:
                log.warning("tprf verification of %r failed: %s", account[:128], type(exc).__name__)
                return _FAILED

        def convert(ok):
            if ok is _FAILED:
                decided_metrics(None, started)
                return validate.error_response(VERSION, 503, 503, "temporarily unavailable")
            decided_metrics(ok, started)
            return answer(ok, True, token)

        return Reply(future=asyncio.ensure_future(decide()), convert=convert)

    def _check(self, request):
        def answer(ok, known, token):
            if not ok and not known:
                return validate.error_response(VERSION, 400, validate.ERR_USER_NOT_FOUND,
                                               validate.MESSAGE_NO_USER)
            if token is None:
                return validate.check_response(VERSION, ok)
            return validate.check_response(VERSION, ok, token.serial, token.type)
        return self._verify(request, answer)

    def _radiuscheck(self, request):
        reply = self._verify(request, lambda ok, known, token: validate.radius_response(ok))
        if reply.message is not None:            # bad request: 400, empty body
            reply.message = validate.radius_response(False)
        return reply

    def _simplecheck(self, request):
        reply = self._verify(request, lambda ok, known, token: validate.simple_response(ok))
        if reply.message is not None:
            reply.message = validate.simple_response(False)
        return reply

    # -- operations ---------------------------------------------------------------------
    def _healthz(self, request):
        """200 ``{"status": "ok"}`` if the store answers and its write lock can be taken;
        else 503 with a reason code (services Distribution.check_health). No secrets."""
        return Reply(future=asyncio.ensure_future(self._health()), convert=_health_response)

    async def _health(self):
        distribution = self._distribution
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HEALTH_LOCK_PATIENCE
        while True:
            reason = distribution.check_health()
            if reason != distribution.LOCK_BUSY or loop.time() >= deadline:
                break
            await asyncio.sleep(HEALTH_LOCK_RETRY)
        if reason is not None:
            log.warning("health check: %s", reason)
            if reason == distribution.UNREACHABLE:
                self._all_metrics.store_errors["health"].inc()
        return reason

    def _exposition(self, request):
        return Reply(HttpResponse(200, self._all_metrics.exposition(), TEXT))

    def _openapi(self, request):
        return Reply(HttpResponse(200, openapi_document(), JSON))


def _same(response):
    return response


def openapi_document():
    """The OpenAPI 3.1 description of every route (package data, read once)."""
    global _OPENAPI
    if _OPENAPI is None:
        _OPENAPI = resources.files("otpfast").joinpath("data/openapi.json").read_bytes()
    return _OPENAPI


_OPENAPI = None


def _health_response(reason):
    if reason is None:
        return HttpResponse.json(200, {"status": "ok"})
    return HttpResponse.json(503, {"status": "unavailable", "reason": reason})


async def serve_http(verifier, ssl_context, host, port, *, allow=None, limits=None, sock=None, tprf=None):
    """Serve the HTTPS front end on (host, port) or bound socket ``sock``; return a Listener.
    /metrics shows ``verifier.metrics`` (every front end of this process). ``tprf``: a
    net.tprf.TprfGateway for tprf tokens."""
    allow = parse_allow(",".join(DEFAULT_ALLOW)) if allow is None else tuple(allow)

    def make_handler():
        return HttpHandler(verifier, allow, tprf)

    return await start_server(HttpConnection, make_handler, ssl_context, host, port, limits, sock=sock)


__all__ = ["serve_http", "HttpHandler", "parse_allow", "DEFAULT_ALLOW"]
