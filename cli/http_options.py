"""The ``--http`` options shared by ``otpfast serve`` and ``otpfast distserver``.

``@http_options`` adds ``--http HOST:PORT`` and ``--http-allow CIDR[,CIDR]`` and passes one
keyword argument ``http``: ``(host, port, allow networks)``, or None when no HTTPS front end
was asked for (exit 2 naming the option on a bad value).
"""
import functools

import click

_LOOPBACK = "127.0.0.0/8,::1/128"   # = otpfast.net.http.DEFAULT_ALLOW (CLI start-up time)


def http_options(f):
    @functools.wraps(f)
    def command(*, http_address, http_allow, **kwargs):
        if http_address is None:
            if http_allow is not None:
                raise click.BadParameter("needs --http HOST:PORT", param_hint="'--http-allow'")
            return f(http=None, **kwargs)
        from otpfast.errors import InvalidParameter
        from otpfast.net.client import parse_address
        from otpfast.net.http import parse_allow

        try:
            host, port = parse_address(http_address, field="http")
        except InvalidParameter as exc:
            raise click.BadParameter(str(exc), param_hint="'--http'")
        try:
            allow = parse_allow(http_allow if http_allow is not None else _LOOPBACK)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--http-allow'")
        return f(http=(host, port, allow), **kwargs)

    command = click.option(
        "--http-allow", metavar="CIDR[,CIDR]", default=None,
        help=f"Source networks that may call the HTTPS API without a bearer credential "
             f"[default: {_LOOPBACK}]; others need 'Authorization: Bearer CLIENT:CREDENTIAL' "
             "of a verifier client; /admin/ always needs an admin client's.")(command)
    command = click.option(
        "--http", "http_address", metavar="HOST:PORT", default=None,
        help="Also answer privacyIDEA's /validate API (plus /healthz, /metrics) over HTTPS here, "
             "with the server's certificate.")(command)
    return command
