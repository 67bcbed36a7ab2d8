"""Servers: ``otpfast keyserver``, ``otpfast distserver``, ``otpfast serve`` (both on one port).

On startup each prints ``listening HOST:PORT`` (the real port when --listen asks for port 0)
and ``fingerprint sha256:HEX`` (then ``radius HOST:PORT`` / ``radius-socket PATH`` when a
RADIUS front end runs), then serves until SIGINT/SIGTERM. With ``-v`` the verifier's batch
statistics (batch sizes; wall and CPU time of each group commit) are logged at shutdown.
The event loop is uvloop when installed, else asyncio's (``OTPFAST_EVENT_LOOP=asyncio|uvloop``).
"""
import asyncio
import logging
import signal

import click

from otpfast.errors import InvalidParameter, OtpfastError
from otpfast.net import eventloop, tls
from otpfast.net._stream import ServerLimits, bound_address
from otpfast.net.client import parse_address
from otpfast_cli.options import bad_parameter, data_dir_option
from otpfast_cli.radius_options import radius_options


def listen_address(text):
    try:
        return parse_address(text, field="listen")
    except InvalidParameter as exc:
        raise bad_parameter(exc)


def open_datadir(data_dir):
    from otpfast.datadir import DataDir

    try:
        return DataDir.resolve(data_dir)
    except InvalidParameter as exc:
        raise bad_parameter(exc)


def server_options(f):
    f = click.option("--verbose", "-v", is_flag=True, help="Log connections (never secrets).")(f)
    f = click.option("--max-connections", type=click.IntRange(min=1), default=1024, show_default=True,
                     help="Concurrent connections; more are closed at once.")(f)
    f = click.option("--idle-timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
                     help="Seconds a connection may stay silent between requests.")(f)
    f = click.option("--read-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
                     help="Seconds to finish sending a started frame.")(f)
    f = data_dir_option(f)
    f = click.option("--listen", required=True, metavar="HOST:PORT",
                     help="Address to listen on with TLS (port 0: any free port).")(f)
    return f


MIN_TTL, MAX_TTL = 1, 86400    # = otpfast.services.distribution's (not imported: CLI start-up time)
ttl_option = click.option(
    "--ttl", type=click.IntRange(min=MIN_TTL, max=MAX_TTL), default=None, metavar="SECONDS",
    help=f"Validity of the OTPs this server issues, {MIN_TTL}..{MAX_TTL} s (the paper uses 120-900) "
         "[default: each account's ttl setting, 300 unless set].")


def _limits(read_timeout, idle_timeout, max_connections):
    return ServerLimits(read_timeout=read_timeout, idle_timeout=idle_timeout, max_connections=max_connections)


def _configure_logging(verbose):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def _run_until_signalled(servers, announce):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    announce()
    try:
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()


def _announce(server, fingerprint, front_end=None):
    host, port = bound_address(server)
    click.echo(f"listening {host}:{port}")
    click.echo(f"fingerprint {fingerprint}")
    if front_end is not None and front_end.udp_address is not None:
        click.echo("radius %s:%d" % tuple(front_end.udp_address[:2]))
    if front_end is not None and front_end.socket_path is not None:
        click.echo(f"radius-socket {front_end.socket_path}")


def _run(main):
    try:
        loop_name = eventloop.chosen()
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc))
    try:
        eventloop.run(main(), name=loop_name)
    except OtpfastError as exc:
        raise click.ClickException(str(exc))
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc.strerror or exc}")


async def _start_radius(radius, verifier):
    """The RADIUS front end (if asked for), verifying through the same group-commit writer."""
    if radius is None:
        return None
    from otpfast.radius.server import start_radius

    # verify_future: a plain future per request, no coroutine or Task
    return await start_radius(radius, lambda account, otp: verifier.verify_future(account, otp, source="radius"))


async def _close_radius(front_end):
    if front_end is not None:
        front_end.close()
        await front_end.wait_closed()


@click.command()
@server_options
def keyserver(listen, data_dir, read_timeout, idle_timeout, max_connections, verbose):
    """Key server: hands out its RSA public key and takes the authorities' contributions."""
    from otpfast.net.keyserver import serve_keyserver

    host, port = listen_address(listen)
    _configure_logging(verbose)
    datadir = open_datadir(data_dir)

    async def main():
        service = datadir.keyserver()
        server = await serve_keyserver(service, tls.server_context(datadir), host, port,
                                       limits=_limits(read_timeout, idle_timeout, max_connections))
        try:
            await _run_until_signalled([server], lambda: _announce(server, datadir.fingerprint()))
        finally:
            service.store.close()

    _run(main)


async def _serve_verifying(datadir, distribution, start_listener, radius, extra_stores=()):
    """Run a listener that verifies through one group-commit writer (plus the RADIUS front
    end if asked for) until SIGINT/SIGTERM; then close everything in reverse order."""
    from otpfast.net.verifier import AsyncVerifier

    verifier = AsyncVerifier(distribution)
    front_end = None
    try:
        server = await start_listener(verifier)
        front_end = await _start_radius(radius, verifier)
        await _run_until_signalled([server], lambda: _announce(server, datadir.fingerprint(), front_end))
    finally:
        await _close_radius(front_end)
        await verifier.aclose()
        logging.getLogger("otpfast.net.verifier").info("%s", verifier.stats_line())
        distribution.store.close()
        for store in extra_stores:
            store.close()


@click.command()
@server_options
@radius_options
@ttl_option
def distserver(listen, data_dir, read_timeout, idle_timeout, max_connections, verbose, radius, ttl):
    """Distribution server (KDC): issues masked OTPs to account clients, verifies OTPs."""
    from otpfast.net.distribution import serve_distribution

    host, port = listen_address(listen)
    _configure_logging(verbose)
    datadir = open_datadir(data_dir)
    limits = _limits(read_timeout, idle_timeout, max_connections)

    async def main():
        async def start(verifier):
            return await serve_distribution(verifier, tls.server_context(datadir), host, port, limits=limits)

        await _serve_verifying(datadir, datadir.distribution(ttl=ttl), start, radius)

    _run(main)


@click.command()
@server_options
@radius_options
@ttl_option
def serve(listen, data_dir, read_timeout, idle_timeout, max_connections, verbose, radius, ttl):
    """Key server and distribution server in one process on one port (the embedded default)."""
    from otpfast.net.server import serve_combined

    host, port = listen_address(listen)
    _configure_logging(verbose)
    datadir = open_datadir(data_dir)
    limits = _limits(read_timeout, idle_timeout, max_connections)

    async def main():
        keyserver_service = datadir.keyserver()

        async def start(verifier):
            return await serve_combined(keyserver_service, verifier, tls.server_context(datadir), host, port,
                                        limits=limits)

        await _serve_verifying(datadir, datadir.distribution(ttl=ttl), start, radius,
                               extra_stores=[keyserver_service.store])

    _run(main)
