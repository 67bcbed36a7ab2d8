"""The HTTPS front end: privacyIDEA's /validate API, /healthz and /metrics.

Runs on net._stream's listener (connections counted from accept, per-source caps, TLS
handshake, whole-request and idle deadlines) with protocol.http.HttpConnection in place of
the native codec. Verifications go through the same AsyncVerifier (group commit, throttles,
audit) as the native protocol and RADIUS, so an OTP is accepted once whichever front end
sees it first.

Who may call: a peer inside ``allow`` (CIDR networks; default loopback), or one that sends
``Authorization: Bearer NAME:CREDENTIAL`` of a verifier client (checked by the service layer,
Distribution.login, in constant time). Anyone else gets 403, the connection is closed, and
the refusal counts against the source's throttle. Until a connection is allowed it has the
listener's unauthenticated limits (a 4 KiB request, ``auth_timeout``).
"""
import hmac
import ipaddress
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from .. import __version__
from ..errors import OtpfastError, Refused
from ..protocol import validate
from ..protocol.http import HttpConnection, HttpResponse, TEXT
from ..services import audit
from ._auth import peer_host
from ._stream import Reply, start_server

log = logging.getLogger("otpfast.net.http")

VERSION = f"otpfast {__version__}"
DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128")
_BEARER = b"bearer "
_FAILED = object()          # a verification batch that raised: 503 for its requests


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


class _VerifierCollector:
    """The group-commit verifier's own counters (every front end), read at scrape time: no
    cost on the hot path. Mean batch size = verifications / batches."""

    def __init__(self, verifier):
        self._verifier = verifier

    def collect(self):
        verifier = self._verifier
        yield CounterMetricFamily("otpfast_verifier_verifications", "Verifications decided, all front ends",
                                  value=verifier.verified)
        yield CounterMetricFamily("otpfast_verifier_batches", "Group-commit batches", value=verifier.batches)
        yield CounterMetricFamily("otpfast_verifier_busy", "Batches that found the write lock taken",
                                  value=verifier.busy)


class HttpMetrics:
    """The Prometheus series of one server (its own registry)."""

    def __init__(self, verifier=None):
        self.registry = registry = CollectorRegistry()
        if verifier is not None:
            registry.register(_VerifierCollector(verifier))
        verifications = Counter("otpfast_verifications", "OTP verifications by result and front end",
                                ["front_end", "result"], registry=registry)
        self.accepted = verifications.labels("http", "accept")
        self.rejected = verifications.labels("http", "reject")
        self.failed = verifications.labels("http", "error")
        self.refusals = Counter("otpfast_http_refusals", "HTTP requests refused, by reason",
                                ["reason"], registry=registry)
        self.latency = Histogram("otpfast_verify_seconds", "Verification latency (request read to decision)",
                                 ["front_end"], registry=registry,
                                 buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, 1.0)).labels("http")

    def exposition(self):
        return generate_latest(self.registry)


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
    }
    PATHS = {path for _, path in ROUTES}

    def __init__(self, verifier, allow, metrics):
        self._verifier = verifier
        self._distribution = verifier.distribution
        self._allow = allow
        self._metrics = metrics
        self.authenticated = False       # read by the listener (unauthenticated limits)
        self.source = "-"
        self._client = None              # ClientInfo of a bearer
        self._bearer = None              # the Authorization value that proved it

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
            status = 405 if path in self.PATHS else 404
            return Reply(validate.error_response(VERSION, status, status, "no such endpoint"))
        authorization = request.headers.get(b"authorization")
        if authorization is not None or not self.authenticated:
            refusal = self._check_bearer(authorization)
            if refusal is not None:
                self._metrics.refusals.labels(refusal).inc()
                request.close_after = True
                return Reply(validate.error_response(VERSION, 403, 403, "forbidden"))
        return getattr(self, name)(request)

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
                client = self._distribution.login(name.decode("utf-8"), credential.decode("ascii"))
            except (Refused, UnicodeDecodeError, OtpfastError, ValueError):
                return "bad_credential"          # login noted the refusal (throttle, audit)
            if not client.verifier:
                reason = "not_verifier"
            else:
                self._client, self._bearer = client, authorization
                self.authenticated = True
                return None
        self._distribution.note_refusal(time.time(), audit.VERIFY, "-", "-", self.source,
                                        audit.NOT_AUTHORISED)
        return reason

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
        token = None
        if user is None:
            token = self._distribution.store.token(serial)
            user = " unknown" if token is None else token.user   # no account has that name
        started = time.perf_counter()
        metrics = self._metrics

        def convert(ok):
            metrics.latency.observe(time.perf_counter() - started)
            if ok is _FAILED:
                metrics.failed.inc()
                return validate.error_response(VERSION, 503, 503, "temporarily unavailable")
            if ok:
                metrics.accepted.inc()
                return answer(True, True, token)
            metrics.rejected.inc()
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
        try:
            self._distribution.store.schema_version()
        except Exception as exc:  # noqa: BLE001 - any store failure is "unhealthy"
            log.warning("health check: store unreachable: %s", exc)
            return Reply(HttpResponse.json(503, {"status": "unavailable"}))
        return Reply(HttpResponse.json(200, {"status": "ok"}))

    def _exposition(self, request):
        return Reply(HttpResponse(200, self._metrics.exposition(), TEXT))


async def serve_http(verifier, ssl_context, host, port, *, allow=None, limits=None, sock=None,
                     metrics=None):
    """Serve the HTTPS front end on (host, port) or bound socket ``sock``; return a Listener
    (its ``metrics``: the HttpMetrics)."""
    allow = parse_allow(",".join(DEFAULT_ALLOW)) if allow is None else tuple(allow)
    metrics = metrics or HttpMetrics(verifier)

    def make_handler():
        return HttpHandler(verifier, allow, metrics)

    listener = await start_server(HttpConnection, make_handler, ssl_context, host, port, limits, sock=sock)
    listener.metrics = metrics
    return listener


__all__ = ["serve_http", "HttpHandler", "HttpMetrics", "parse_allow", "DEFAULT_ALLOW"]
