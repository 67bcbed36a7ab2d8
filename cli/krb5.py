"""``otpfast krb5 config``: the kdc.conf ``[otp]`` stanza and the kadmin commands that make
MIT Kerberos ask otpfast (over RADIUS) for each principal's OTP."""
import json
import os
import re

import click

from otpfast.errors import InvalidParameter
from otpfast_cli.options import bad_parameter

_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
_PRINCIPAL = re.compile(r"[A-Za-z0-9_.@/+-]+\Z")


def _check(pattern, value, option, what):
    if not pattern.match(value):
        raise InvalidParameter(option, f"{value!r} is not a valid {what}")
    return value


def kadmin_quote(text):
    """One kadmin (libss) argument: in double quotes, a literal " written as ""."""
    return '"' + text.replace('"', '""') + '"'


def otp_token_json(token_type, account=None):
    token = {"type": token_type}
    if account is not None:
        token["username"] = account
    return json.dumps([token], separators=(",", ":"), ensure_ascii=False)


def kdc_conf_stanza(realm, token_type, *, radius_socket=None, radius=None, secret_file=None,
                    timeout=5, indicator=None):
    """The ``[otp]`` section text. krb5 profiles have no inline comments: only whole lines."""
    lines = [
        f"# kdc.conf for realm {realm}: merge into the [otp] section, then restart krb5kdc.",
        "# Comments must stay on their own lines (a '#' after a value becomes part of it).",
        "[otp]",
        f"    {token_type} = {{",
    ]
    if radius_socket is not None:
        lines += [
            "        # a path: RADIUS over otpfast's UNIX stream socket (otpfast serve --radius-socket)",
            f"        server = {radius_socket}",
            f"        timeout = {timeout}",
            "        retries = 0",
        ]
    else:
        lines += [
            "        # host:port: RADIUS over UDP. krb5 1.20 sends no Message-Authenticator, which",
            "        # otpfast requires by default: opt this KDC's address out with",
            "        #   otpfast serve --radius ... --radius-secret-file FILE",
            "        #     --radius-client-networks KDC-ADDRESS --radius-legacy-no-message-authenticator",
            "        # or a line 'KDC-ADDRESS SECRET no-message-authenticator' in --radius-clients.",
            "        # That exposes these logins to Blast-RADIUS forgery (CVE-2024-3596) on the path",
            "        # between KDC and otpfast: prefer the UNIX socket (--radius-socket) on the KDC host.",
            "        # secret is a FILE whose first line is the shared secret (16+ characters)",
            f"        server = {radius}",
            f"        secret = {secret_file}",
            f"        timeout = {timeout}",
            "        # retransmissions are answered from otpfast's reply cache: never a second check",
            "        retries = 3",
        ]
    if indicator is not None:
        lines.append(f"        indicator = {indicator}")
    lines.append("    }")
    return "\n".join(lines) + "\n"


def kadmin_commands(token_type, pairs):
    """``addprinc``/``setstr`` lines for kadmin.local (batch them on its stdin)."""
    out = []
    for principal, account in pairs:
        out.append(f"addprinc +requires_preauth -nokey {principal}")
        out.append(f"setstr {principal} otp {kadmin_quote(otp_token_json(token_type, account))}")
    return "\n".join(out) + ("\n" if out else "")


@click.group("krb5")
def krb5_group():
    """MIT Kerberos integration (OTP preauth through otpfast's RADIUS front end)."""


@krb5_group.command("config")
@click.option("--realm", required=True, help="Kerberos realm, e.g. EXAMPLE.COM.")
@click.option("--radius-socket", type=click.Path(dir_okay=False, path_type=str), default=None, metavar="PATH",
              help="otpfast's RADIUS UNIX socket (KDC on the same host).")
@click.option("--radius", metavar="HOST:PORT", default=None, help="otpfast's RADIUS UDP address.")
@click.option("--radius-secret-file", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Shared-secret file as the KDC host sees it (with --radius).")
@click.option("--token-type", default="otpfast", show_default=True, help="Token type name in [otp].")
@click.option("--principal", "principals", multiple=True, help="Principal to protect (repeatable).")
@click.option("--account", "accounts", multiple=True,
              help="otpfast account of the --principal at the same position (repeatable).")
@click.option("--indicator", default=None, help="Authentication indicator added to tickets (require_auth).")
@click.option("--timeout", type=click.IntRange(1, 60), default=5, show_default=True,
              help="Seconds the KDC waits for otpfast (keep it <= 10).")
@click.option("--only", type=click.Choice(["kdc.conf", "kadmin"]), default=None,
              help="Print only one part (for scripts: kadmin.local < FILE).")
def krb5_config_command(realm, radius_socket, radius, radius_secret_file, token_type, principals, accounts,
                        indicator, timeout, only):
    """Print the kdc.conf [otp] stanza and the kadmin commands for otpfast OTP logins."""
    try:
        text = render_config(realm, radius_socket, radius, radius_secret_file, token_type, principals,
                             accounts, indicator, timeout, only)
    except InvalidParameter as exc:
        raise bad_parameter(exc)
    click.echo(text, nl=False)


def render_config(realm, radius_socket, radius, radius_secret_file, token_type, principals, accounts,
                  indicator, timeout, only):
    from otpfast.net.address import format_address
    from otpfast.radius.config import parse_host_port

    _check(_PRINCIPAL, realm, "realm", "realm")
    _check(_NAME, token_type, "token-type", "token type name")
    if indicator is not None:
        _check(_NAME, indicator, "indicator", "indicator name")
    if (radius_socket is None) == (radius is None):
        raise InvalidParameter("radius-socket", "give exactly one of --radius-socket PATH or --radius HOST:PORT")
    server = None
    secret_file = None
    if radius is not None:
        host, port = parse_host_port(radius, option="radius")
        server = format_address(host, port)
        if radius_secret_file is None:
            raise InvalidParameter("radius-secret-file", "--radius needs --radius-secret-file")
        # relative names would resolve against /etc/krb5kdc on the KDC
        secret_file = os.path.abspath(radius_secret_file)
    elif radius_secret_file is not None:
        raise InvalidParameter("radius-secret-file", "only used with --radius (the socket has no secret)")
    else:
        radius_socket = os.path.abspath(radius_socket)
    for value, option in ((radius_socket, "radius-socket"), (secret_file, "radius-secret-file")):
        if value is not None and (any(ch.isspace() for ch in value) or "#" in value):
            raise InvalidParameter(option, "paths with spaces or '#' do not survive kdc.conf")
    for principal in principals:
        _check(_PRINCIPAL, principal, "principal", "principal name")
    if accounts and len(accounts) != len(principals):
        raise InvalidParameter("account", "give one --account per --principal (or none)")
    for account in accounts:
        if not account or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in account):
            raise InvalidParameter("account", f"{account!r} is not a valid account name")
    pairs = list(zip(principals, accounts or [None] * len(principals)))
    stanza = kdc_conf_stanza(realm, token_type, radius_socket=radius_socket, radius=server,
                             secret_file=secret_file, timeout=timeout, indicator=indicator)
    commands = kadmin_commands(token_type, pairs)
    if only == "kdc.conf":
        return stanza
    if only == "kadmin":
        return commands
    text = stanza
    if commands:
        text += ("\n# kadmin.local commands (users need FAST armor: kinit -T ARMOR_CCACHE ...)\n"
                 + commands)
    return text
