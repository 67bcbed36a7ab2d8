"""The ``--http`` options shared by ``otpfast serve`` and ``otpfast distserver``.

``@http_options`` adds ``--http HOST:PORT``, ``--http-allow CIDR[,CIDR]`` and the tprf
options (``--http-tprf-cluster``, ``--http-tprf-verifier``, ``--http-tprf-credential-file``)
and passes one keyword argument ``http``: ``(host, port, allow networks)`` (its ``tprf``
attribute: None or (cluster file, verifier name, credential)), or None when no HTTPS front
end was asked for (exit 2 naming the option on a bad value).
"""
import functools

import click

_LOOPBACK = "127.0.0.0/8,::1/128"   # = otpfast.net.http.DEFAULT_ALLOW (CLI start-up time)


class HttpSettings(tuple):
    """(host, port, allow) with ``tprf``: (cluster path, verifier name, credential) or None."""

    def __new__(cls, host, port, allow, tprf=None):
        settings = super().__new__(cls, (host, port, allow))
        settings.tprf = tprf
        return settings


def _tprf_settings(cluster, verifier, credential_file):
    if cluster is None:
        for name, value in (("--http-tprf-verifier", verifier), ("--http-tprf-credential-file", credential_file)):
            if value is not None:
                raise click.BadParameter("needs --http-tprf-cluster FILE", param_hint=f"'{name}'")
        return None
    if verifier is None or credential_file is None:
        raise click.BadParameter("needs --http-tprf-verifier NAME and --http-tprf-credential-file FILE",
                                 param_hint="'--http-tprf-cluster'")
    from otpfast_cli.clients import read_credential
    from otpfast_cli.tprf import load_cluster

    try:
        load_cluster(cluster)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint="'--http-tprf-cluster'") from None
    try:
        credential = read_credential(credential_file)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint="'--http-tprf-credential-file'") from None
    return cluster, verifier, credential


def http_options(f):
    @functools.wraps(f)
    def command(*, http_address, http_allow, http_tprf_cluster, http_tprf_verifier, http_tprf_credential_file,
                **kwargs):
        if http_address is None:
            if http_allow is not None:
                raise click.BadParameter("needs --http HOST:PORT", param_hint="'--http-allow'")
            if http_tprf_cluster is not None:
                raise click.BadParameter("needs --http HOST:PORT", param_hint="'--http-tprf-cluster'")
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
        tprf = _tprf_settings(http_tprf_cluster, http_tprf_verifier, http_tprf_credential_file)
        return f(http=HttpSettings(host, port, allow, tprf), **kwargs)

    command = click.option(
        "--http-tprf-credential-file", type=click.Path(dir_okay=False), default=None,
        help="The --http-tprf-verifier's cluster credential.")(command)
    command = click.option(
        "--http-tprf-verifier", metavar="NAME", default=None,
        help="The verifier principal the share servers know (for --http-tprf-cluster).")(command)
    command = click.option(
        "--http-tprf-cluster", type=click.Path(dir_okay=False), default=None,
        help="Also answer /validate for the tprf tokens of this cluster file, by gathering t partials "
             "from its share servers.")(command)
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
