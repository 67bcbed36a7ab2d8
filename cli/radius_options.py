"""The ``--radius*`` options shared by ``otpfast serve`` and ``otpfast distserver``.

``@radius_options`` adds the options and passes one keyword argument ``radius``: a
:class:`otpfast.radius.config.RadiusConfig`, or None when no RADIUS listener was asked for.
Every shared secret is read from a file and bound to the source networks it belongs to;
every UDP request must carry a Message-Authenticator unless its client is opted out.
"""
import functools

import click

from otpfast.errors import InvalidParameter
from otpfast_cli.options import bad_parameter

_readable_file = click.Path(exists=True, dir_okay=False, readable=True, path_type=str)
_LOOPBACK = "127.0.0.0/8,::1/128"  # = otpfast.radius.config.LOOPBACK_NETWORKS (CLI start-up time)

_OPTIONS = [
    click.option("--radius", "radius_udp", metavar="HOST:PORT", default=None,
                 help="Also answer RADIUS Access-Requests over UDP here (e.g. 127.0.0.1:1812)."),
    click.option("--radius-secret-file", type=_readable_file, default=None,
                 help="File whose first line is the RADIUS shared secret (16 characters or more) "
                      "of the clients in --radius-client-networks."),
    click.option("--radius-client-networks", metavar="CIDR[,CIDR]", default=None,
                 help=f"Source addresses/networks that --radius-secret-file belongs to [default: {_LOOPBACK}]."),
    click.option("--radius-legacy-no-message-authenticator", is_flag=True, default=False,
                 help="Let the --radius-client-networks clients omit the Message-Authenticator "
                      "(krb5 1.20, pam_radius_auth): exposes them to Blast-RADIUS forgery."),
    click.option("--radius-clients", type=_readable_file, default=None,
                 help="Clients list: 'ADDRESS-or-CIDR SECRET [no-message-authenticator]' per line; "
                      "the most specific wins."),
    click.option("--radius-socket", type=click.Path(dir_okay=False, path_type=str), default=None, metavar="PATH",
                 help="Also answer RADIUS over this UNIX stream socket (krb5kdc on this host; no secret)."),
    click.option("--radius-require-message-authenticator", is_flag=True, default=False,
                 help="No opt-out: every request needs a Message-Authenticator, the UNIX socket's "
                      "too (UDP clients need one by default)."),
    click.option("--radius-strip-realm", is_flag=True, default=False,
                 help="Map User-Name 'alice@REALM' to the account 'alice'."),
]

RADIUS_NAMES = ("radius_udp", "radius_secret_file", "radius_client_networks", "radius_legacy_no_message_authenticator",
          "radius_clients", "radius_socket", "radius_require_message_authenticator", "radius_strip_realm")


def build_radius_config(radius_udp=None, radius_secret_file=None, radius_client_networks=None,
                        radius_legacy_no_message_authenticator=False, radius_clients=None, radius_socket=None,
                        radius_require_message_authenticator=False, radius_strip_realm=False):
    """RadiusConfig from the option values, or None; InvalidParameter names the option."""
    from otpfast.radius.config import RadiusClients, RadiusConfig, parse_host_port

    udp_only = (("radius-secret-file", radius_secret_file), ("radius-clients", radius_clients),
                ("radius-client-networks", radius_client_networks),
                ("radius-legacy-no-message-authenticator", radius_legacy_no_message_authenticator))
    if radius_udp is None:
        if radius_socket is None:
            for name, value in udp_only + (("radius-require-message-authenticator",
                                            radius_require_message_authenticator),
                                           ("radius-strip-realm", radius_strip_realm)):
                if value:
                    raise InvalidParameter(name, "needs --radius HOST:PORT or --radius-socket PATH")
            return None
        for name, value in udp_only:
            if value:
                raise InvalidParameter(name, "only used with --radius HOST:PORT (the UNIX socket has no secret)")
        return RadiusConfig(unix_socket=radius_socket, strip_realm=radius_strip_realm,
                            unix_require_message_authenticator=radius_require_message_authenticator)
    udp = parse_host_port(radius_udp, option="radius")
    if radius_secret_file is None and radius_clients is None:
        raise InvalidParameter("radius-secret-file", "--radius needs --radius-secret-file or --radius-clients")
    if radius_secret_file is None:
        for name, value in udp_only[2:4]:
            if value:
                raise InvalidParameter(name, "only used with --radius-secret-file")
    if radius_require_message_authenticator and radius_legacy_no_message_authenticator:
        raise InvalidParameter("radius-require-message-authenticator",
                               "conflicts with --radius-legacy-no-message-authenticator")
    clients = RadiusClients.from_files(
        clients_file=radius_clients, secret_file=radius_secret_file,
        secret_networks=radius_client_networks or _LOOPBACK,
        secret_file_requires_message_authenticator=not radius_legacy_no_message_authenticator)
    opted_out = clients.without_message_authenticator()
    if radius_require_message_authenticator and opted_out:
        raise InvalidParameter("radius-require-message-authenticator",
                               f"--radius-clients lets {', '.join(map(str, opted_out))} omit it "
                               "(no-message-authenticator)")
    return RadiusConfig(udp=udp, clients=clients, unix_socket=radius_socket, strip_realm=radius_strip_realm,
                        unix_require_message_authenticator=radius_require_message_authenticator)


def radius_options(f):
    """Click decorator: add the RADIUS options; the command receives ``radius=RadiusConfig | None``."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        values = {name: kwargs.pop(name) for name in RADIUS_NAMES}
        try:
            radius = build_radius_config(**values)
        except InvalidParameter as exc:
            raise bad_parameter(exc, ctx=click.get_current_context(silent=True))
        return f(*args, radius=radius, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
