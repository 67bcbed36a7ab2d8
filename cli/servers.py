"""Servers: ``otpfast keyserver``, ``otpfast distserver``, ``otpfast serve`` (both on one port).

On startup each prints ``listening HOST:PORT`` (the real port when --listen asks for port 0)
and ``fingerprint sha256:HEX`` (the key pin; then ``radius HOST:PORT`` / ``radius-socket PATH``
when a RADIUS front end runs, ``http HOST:PORT`` when the HTTPS one does), then serves until
SIGINT/SIGTERM. SIGHUP reloads the certificate, the RADIUS clients and the failure throttles
(otpfast_cli.reload). ``--config FILE`` takes the options from a TOML file
(otpfast_cli.config); ``--log-format json`` logs one JSON object per line. With ``-v`` each
connection opened and closed is logged (peer address), and the verifier's batch statistics
(batch sizes; wall and CPU time of each group commit) at shutdown.
The event loop is uvloop when installed, else asyncio's (``OTPFAST_EVENT_LOOP=asyncio|uvloop``).
``serve`` and ``distserver`` take ``--workers N``: N server processes on the same addresses
and store (otpfast.net.workers).
"""
import asyncio
import functools
import ipaddress
import logging
import signal
import socket
import sys

import click

from otpfast.errors import InvalidParameter, OtpfastError
from otpfast.net import eventloop, tls
from otpfast.net._stream import ServerLimits, bound_address
from otpfast.net.address import format_address
from otpfast.net.client import parse_address
from otpfast_cli.config import config_option
from otpfast_cli.http_options import http_options
from otpfast_cli.logs import configure_logging, log_format_option
from otpfast_cli.options import DATA_DIR_ERRORS, bad_parameter, data_dir_error, data_dir_option
from otpfast_cli.radius_options import radius_options


def listen_address(text):
    try:
        host, port = parse_address(text, field="listen")
    except InvalidParameter as exc:
        raise bad_parameter(exc)
    check_host(host, port, "listen")
    return host, port


def check_host(host, port, option):
    """Exit 2 naming ``--option`` unless ``host`` is an IP address or a name that resolves."""
    numeric = ":" in host or all(part.isdigit() for part in host.split("."))
    try:
        if numeric:
            ipaddress.ip_address(host)
        else:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except ValueError:
        raise click.BadParameter(f"{host!r} is not a valid IP address", param_hint=f"'--{option}'") from None
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a host name"
        raise click.BadParameter(f"cannot resolve the host {host!r}: {reason}",
                                 param_hint=f"'--{option}'") from None


class BindFailed(Exception):
    """Binding the address of ``--option`` failed (in use, not this machine's, no right)."""

    def __init__(self, option, error):
        super().__init__(option, error)
        self.option = option
        self.error = error


def bind_failed(exc):
    """BindFailed -> exit 2 naming the option and the reason."""
    return click.BadParameter(f"cannot listen there: {exc.error.strerror or exc.error}", param_hint=f"'--{exc.option}'")


async def _binding(option, awaitable):
    """``await awaitable``; an OSError (a bind failure) becomes BindFailed(option)."""
    try:
        return await awaitable
    except OSError as exc:
        raise BindFailed(option, exc) from None


def _radius_option(radius):
    if radius.unix_socket is None:
        return "radius"
    return "radius-socket" if radius.udp is None else "radius"


def open_datadir(data_dir):
    """The data dir, checked before listening: exit 2 naming --data-dir if it holds no
    store. (The servers upgrade an older store schema when they open it.)"""
    from otpfast.datadir import DataDir

    try:
        datadir = DataDir.resolve(data_dir)
        datadir.fingerprint()
    except InvalidParameter as exc:
        raise bad_parameter(exc)
    except DATA_DIR_ERRORS as exc:
        raise data_dir_error(exc) from None
    return datadir


def _listener_limits(f):
    """Collapse the listener options into one ``limits`` argument (a ServerLimits), after
    raising the file limit to fit --max-connections (exit 2 naming it if it cannot)."""
    @functools.wraps(f)
    def command(*, read_timeout, idle_timeout, auth_timeout, max_connections, max_connections_per_source, **kwargs):
        from otpfast.net.admission import raise_file_limit

        try:
            raise_file_limit(max_connections)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--max-connections'")
        limits = ServerLimits(read_timeout=read_timeout, idle_timeout=idle_timeout, auth_timeout=auth_timeout,
                              max_connections=max_connections, max_connections_per_source=max_connections_per_source)
        return f(limits=limits, **kwargs)
    return command


class FailureRate(click.ParamType):
    """``RATE,BURST``: BURST failures at once, then RATE a second (services.throttle.Rate)."""

    name = "RATE,BURST"

    def convert(self, value, param, ctx):
        from otpfast.services.throttle import Rate

        if isinstance(value, Rate):
            return value
        try:
            rate, burst = (float(part) for part in str(value).split(","))
            return Rate(rate=rate, burst=burst)
        except ValueError:
            self.fail(f"{value!r} is not RATE,BURST with RATE > 0 and BURST >= 1 (e.g. 5,100)", param, ctx)


_DEFAULT_FAILURES = "5,100"     # = otpfast.services.policy.FAILED_PER_SOURCE / _CLIENT
failures_per_source_option = click.option(
    "--failures-per-source", type=FailureRate(), default=_DEFAULT_FAILURES, show_default=True,
    help="Failed authentications/verifications one source address may cause: a burst, then a rate "
         "per second; above it its requests are refused before any account is read (SIGHUP reloads it).")
failures_per_client_option = click.option(
    "--failures-per-client", type=FailureRate(), default=_DEFAULT_FAILURES, show_default=True,
    help="The same for one client name (SIGHUP reloads it).")


def server_options(f):
    f = _listener_limits(f)
    f = failures_per_source_option(f)
    f = log_format_option(f)
    f = click.option("--verbose", "-v", is_flag=True,
                     help="Log each connection opened and closed (peer address, never secrets) and the "
                          "verifier's statistics at shutdown.")(f)
    f = click.option("--max-connections-per-source", type=click.IntRange(min=1), default=128, show_default=True,
                     help="Concurrent connections from one IP address; more are closed at once.")(f)
    f = click.option("--max-connections", type=click.IntRange(min=1), default=1024, show_default=True,
                     help="Concurrent connections, counted from accept (TLS handshake included); when full, the "
                          "oldest connection not yet authenticated is closed to make room. The soft file limit "
                          "is raised to fit them.")(f)
    f = click.option("--auth-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
                     help="Seconds from accept for a connection to authenticate (requests do not extend it).")(f)
    f = click.option("--idle-timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
                     help="Seconds a connection may stay silent between requests.")(f)
    f = click.option("--read-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
                     help="Seconds to send a whole frame, from its first byte.")(f)
    f = data_dir_option(f)
    f = click.option("--listen", required=True, metavar="HOST:PORT",
                     help="Address to listen on with TLS (port 0: any free port).")(f)
    return config_option(f)


MIN_TTL, MAX_TTL = 1, 86400    # = otpfast.services.distribution's (not imported: CLI start-up time)
ttl_option = click.option(
    "--ttl", type=click.IntRange(min=MIN_TTL, max=MAX_TTL), default=None, metavar="SECONDS",
    help=f"Validity of the OTPs this server issues, {MIN_TTL}..{MAX_TTL} s (the paper uses 120-900) "
         "[default: each account's ttl setting, 300 unless set].")


def _ignore_hangup(*_args):
    """SIGHUP while starting (nothing to reload yet: the files were just read) must not kill
    the server; in the supervisor of --workers it is the workers' (supervise passes it on)."""


async def _run_until_signalled(servers, announce, reload):
    """Serve until SIGINT/SIGTERM; SIGHUP calls ``reload()`` (a Reloader)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    announce()
    try:
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()


def _announce(address, fingerprint, radius_address=None, radius_socket=None):
    click.echo(f"listening {format_address(*address[:2])}")
    click.echo(f"fingerprint {fingerprint}")
    if radius_address is not None:
        click.echo(f"radius {format_address(*radius_address[:2])}")
    if radius_socket is not None:
        click.echo(f"radius-socket {radius_socket}")


def _run(main):
    signal.signal(signal.SIGHUP, _ignore_hangup)    # until the loop's reload handler is in place
    try:
        loop_name = eventloop.chosen()
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc))
    try:
        eventloop.run(main(), name=loop_name)
    except BindFailed as exc:
        raise bind_failed(exc) from None
    except OtpfastError as exc:
        raise click.ClickException(str(exc))
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc.strerror or exc}")


async def _start_radius(radius, verifier, sockets):
    """The RADIUS front end (if asked for), verifying through the same group-commit writer."""
    if radius is None:
        return None
    from otpfast.radius.server import start_radius

    # verify_future: a plain future per request, no coroutine or Task
    def verify(account, otp, source):
        return verifier.verify_future(account, otp, source=source)

    return await _binding(_radius_option(radius), start_radius(
        radius, verify, udp_sock=sockets and sockets.udp, unix_sock=sockets and sockets.unix,
        metrics=verifier.metrics.radius))


async def _close_radius(front_end):
    if front_end is not None:
        front_end.close()
        await front_end.wait_closed()


@click.command()
@server_options
def keyserver(listen, data_dir, limits, verbose, log_format, failures_per_source):
    """Key server: hands out its RSA public key and takes the authorities' contributions."""
    from otpfast.net.keyserver import serve_keyserver
    from otpfast_cli.reload import Reloader

    ctx = click.get_current_context()
    host, port = listen_address(listen)
    configure_logging(verbose, log_format)
    datadir = open_datadir(data_dir)

    async def main():
        service = datadir.keyserver(upgrade=True, retry_for=datadir.STARTUP_RETRY)
        service.set_failure_limits(failures_per_source)
        identity = tls.ServerIdentity(datadir)
        server = await _binding("listen", serve_keyserver(service, identity.context, host, port, limits=limits))
        try:
            await _run_until_signalled([server], lambda: _announce(bound_address(server), datadir.fingerprint()),
                                       Reloader(ctx, identity, [service]))
        finally:
            service.close()

    _run(main)


workers_option = click.option(
    "--workers", type=click.IntRange(min=1, max=64), default=1, show_default=True,
    help="Server processes sharing the listening addresses and the store (one per core is a good start; "
         "--max-connections counts per process).")


def _failed_worker_option(host, port, radius):
    """Which address failed to bind (bind_worker_sockets says only that one did): the
    listening address if it cannot be bound now on its own (everything was closed)."""
    if radius is None:
        return "listen"
    try:
        socket.create_server((host, port), family=socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]).close()
    except OSError:
        return "listen"
    return _radius_option(radius)


def _serve(datadir, host, port, limits, radius, workers, worker_main, http=None):
    """Run ``worker_main(sockets, handoff, ready)`` (a coroutine function; all None: bind
    (host, port) itself and announce) in this process, or in ``workers`` forked worker
    processes on sockets bound here (otpfast.net.workers)."""
    if workers == 1:
        _run(lambda: worker_main(None, None, None))
        return
    from otpfast.net.workers import bind_worker_sockets, supervise

    try:
        all_sockets = bind_worker_sockets(workers, host, port, backlog=limits.backlog,
                                          radius_udp=radius and radius.udp,
                                          radius_socket=radius and radius.unix_socket,
                                          http=http and http[:2])
    except OSError as exc:
        raise bind_failed(BindFailed(_failed_worker_option(host, port, radius), exc)) from None
    first = all_sockets[0]
    address = first.tcp.getsockname()
    radius_address = first.udp.getsockname() if first.udp is not None else None
    fingerprint = datadir.fingerprint()

    http_address = first.http.getsockname() if first.http is not None else None

    def announce():
        _announce(address, fingerprint, radius_address, radius and radius.unix_socket)
        if http_address is not None:
            click.echo("http %s:%d" % tuple(http_address[:2]))
        sys.stdout.flush()

    previous = signal.signal(signal.SIGHUP, _ignore_hangup)     # supervise passes it to the workers
    try:
        status = supervise(all_sockets, lambda *worker: _run(lambda: worker_main(*worker)), announce)
    finally:
        signal.signal(signal.SIGHUP, previous)
    if status:
        raise SystemExit(status)


async def _start_http(http, verifier, identity, limits, sockets):
    """The HTTPS front end (if asked for), verifying through the same group-commit writer."""
    if http is None:
        return None
    from otpfast.net.http import serve_http

    host, port, allow = http
    sock = sockets and sockets.http
    if sock is not None:
        host = port = None
    return await serve_http(verifier, identity.context, host, port, allow=allow, limits=limits, sock=sock,
                            tprf=_tprf_gateway(getattr(http, "tprf", None)))


def _tprf_gateway(settings):
    """The HTTPS API's verifier of tprf tokens (--http-tprf-cluster), or None."""
    if settings is None:
        return None
    from otpfast import tprf
    from otpfast.net.tprf import TprfGateway

    tprf.require()
    from otpfast.services.tprfcluster import Cluster

    cluster_path, verifier, credential = settings
    return TprfGateway(Cluster.load(cluster_path), verifier, credential)


async def _serve_verifying(datadir, distribution, start_listener, radius, worker, keyserver=None, http=None,
                           limits=None, failures=None):
    """Run a listener that verifies through one group-commit writer (plus the RADIUS front
    end if asked for) until SIGINT/SIGTERM; then close everything in reverse order.
    ``start_listener(verifier, identity, sock)``; ``worker``: (sockets, handoff, ready) of a
    worker process (``ready()`` announces), or (None, None, None); ``failures``: the
    (per source, per client) failure throttles."""
    from otpfast.net.verifier import AsyncVerifier
    from otpfast_cli.reload import Reloader

    ctx = click.get_current_context()
    sockets, handoff, ready = worker
    services = [distribution] + ([keyserver] if keyserver is not None else [])
    for service in services:
        service.set_failure_limits(*failures)
    identity = tls.ServerIdentity(datadir)
    verifier = AsyncVerifier(distribution, handoff=handoff, sync=distribution.store.sync)
    front_end = None
    try:
        server = await _binding("listen", start_listener(verifier, identity, sockets and sockets.tcp))
        try:
            front_end = await _start_radius(radius, verifier, sockets)
            http_server = await _binding("http", _start_http(http, verifier, identity, limits, sockets))
        except BaseException:       # e.g. --radius cannot be bound: stop listening first
            server.close()
            await server.wait_closed()
            raise
        if ready is None:
            def ready():
                _announce(bound_address(server), datadir.fingerprint(),
                          front_end and front_end.udp_address, front_end and front_end.socket_path)
                if http_server is not None:
                    click.echo("http %s:%d" % tuple(bound_address(http_server)[:2]))
        await _run_until_signalled([server] + ([http_server] if http_server is not None else []), ready,
                                   Reloader(ctx, identity, services, front_end))
    finally:
        await _close_radius(front_end)
        await verifier.aclose()
        logging.getLogger("otpfast.net.verifier").info("%s", verifier.stats_line())
        distribution.store.close()
        if keyserver is not None:
            keyserver.close()


require_pin_option = click.option(
    "--require-pin", is_flag=True,
    help="Refuse users without a PIN (otpfast account set-pin): only PIN + OTP logs in.")


@click.command()
@server_options
@radius_options
@http_options
@ttl_option
@workers_option
@require_pin_option
@failures_per_client_option
def distserver(listen, data_dir, limits, verbose, log_format, radius, ttl, workers, require_pin, http,
               failures_per_source, failures_per_client):
    """Distribution server (KDC): issues masked OTPs to account clients, verifies OTPs."""
    from otpfast.net.distribution import serve_distribution

    host, port = listen_address(listen)
    if radius is not None and radius.udp is not None:
        check_host(*radius.udp, "radius")
    configure_logging(verbose, log_format)
    datadir = open_datadir(data_dir)

    async def worker_main(*worker):
        async def start(verifier, identity, sock):
            return await serve_distribution(verifier, identity.context, host, port, limits=limits, sock=sock)

        await _serve_verifying(datadir, datadir.distribution(ttl=ttl, require_pin=require_pin, upgrade=True,
                                                        retry_for=datadir.STARTUP_RETRY),
                               start, radius, worker, http=http, limits=limits,
                               failures=(failures_per_source, failures_per_client))

    _serve(datadir, host, port, limits, radius, workers, worker_main, http)


@click.command()
@server_options
@radius_options
@http_options
@ttl_option
@workers_option
@require_pin_option
@failures_per_client_option
def serve(listen, data_dir, limits, verbose, log_format, radius, ttl, workers, require_pin, http,
          failures_per_source, failures_per_client):
    """Key server and distribution server on one port (the embedded default)."""
    from otpfast.net.server import serve_combined

    host, port = listen_address(listen)
    if radius is not None and radius.udp is not None:
        check_host(*radius.udp, "radius")
    configure_logging(verbose, log_format)
    datadir = open_datadir(data_dir)

    async def worker_main(*worker):
        keyserver_service = datadir.keyserver(upgrade=True, retry_for=datadir.STARTUP_RETRY)

        async def start(verifier, identity, sock):
            return await serve_combined(keyserver_service, verifier, identity.context, host, port,
                                        limits=limits, sock=sock)

        await _serve_verifying(datadir, datadir.distribution(ttl=ttl, require_pin=require_pin, upgrade=True,
                                                        retry_for=datadir.STARTUP_RETRY),
                               start, radius, worker, keyserver=keyserver_service, http=http, limits=limits,
                               failures=(failures_per_source, failures_per_client))

    _serve(datadir, host, port, limits, radius, workers, worker_main, http)
