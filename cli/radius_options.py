"""The ``--radius*`` options shared by ``otpfast serve`` and ``otpfast distserver``.

``@radius_options`` adds the options and passes one keyword argument ``radius``: a
:class:`otpfast.radius.config.RadiusConfig`, or None when no RADIUS listener was asked for.
"""
import functools

import click

from otpfast.errors import InvalidParameter
from otpfast_cli.options import bad_parameter

_readable_file = click.Path(exists=True, dir_okay=False, readable=True, path_type=str)

_OPTIONS = [
    click.option("--radius", "radius_udp", metavar="HOST:PORT", default=None,
                 help="Also answer RADIUS Access-Requests over UDP here (e.g. 127.0.0.1:1812)."),
    click.option("--radius-secret-file", type=_readable_file, default=None,
                 help="File whose first line is the RADIUS shared secret (for every client)."),
    click.option("--radius-clients", type=_readable_file, default=None,
                 help="Clients list: 'ADDRESS-or-CIDR SECRET' per line; the most specific wins."),
    click.option("--radius-socket", type=click.Path(dir_okay=False, path_type=str), default=None, metavar="PATH",
                 help="Also answer RADIUS over this UNIX stream socket (krb5kdc on this host; no secret)."),
    click.option("--radius-require-message-authenticator", is_flag=True, default=False,
                 help="Drop Access-Requests without a Message-Authenticator (Blast-RADIUS)."),
    click.option("--radius-strip-realm", is_flag=True, default=False,
                 help="Map User-Name 'alice@REALM' to the account 'alice'."),
]


def build_radius_config(radius_udp, radius_secret_file, radius_clients, radius_socket,
                        radius_require_message_authenticator, radius_strip_realm):
    """RadiusConfig from the option values, or None; InvalidParameter names the option."""
    from otpfast.radius.config import ClientSecrets, RadiusConfig, parse_host_port

    if radius_udp is None and radius_socket is None:
        for name, value in (("radius-secret-file", radius_secret_file), ("radius-clients", radius_clients),
                            ("radius-require-message-authenticator", radius_require_message_authenticator),
                            ("radius-strip-realm", radius_strip_realm)):
            if value:
                raise InvalidParameter(name, "needs --radius HOST:PORT or --radius-socket PATH")
        return None
    udp = None
    secrets = None
    if radius_udp is not None:
        udp = parse_host_port(radius_udp, option="radius")
        if radius_secret_file is None and radius_clients is None:
            raise InvalidParameter("radius-secret-file", "--radius needs --radius-secret-file or --radius-clients")
        secrets = ClientSecrets.from_files(clients_file=radius_clients, secret_file=radius_secret_file)
    elif radius_secret_file is not None or radius_clients is not None:
        name = "radius-secret-file" if radius_secret_file is not None else "radius-clients"
        raise InvalidParameter(name, "only used with --radius HOST:PORT (the UNIX socket has no secret)")
    return RadiusConfig(
        udp=udp,
        secrets=secrets,
        unix_socket=radius_socket,
        require_message_authenticator=radius_require_message_authenticator,
        strip_realm=radius_strip_realm,
    )


def radius_options(f):
    """Click decorator: add the RADIUS options; the command receives ``radius=RadiusConfig | None``."""

    @functools.wraps(f)
    def wrapper(*args, radius_udp, radius_secret_file, radius_clients, radius_socket,
                radius_require_message_authenticator, radius_strip_realm, **kwargs):
        try:
            radius = build_radius_config(radius_udp, radius_secret_file, radius_clients, radius_socket,
                                         radius_require_message_authenticator, radius_strip_realm)
        except InvalidParameter as exc:
            raise bad_parameter(exc, ctx=click.get_current_context(silent=True))
        return f(*args, radius=radius, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
