"""``otpfast token ...``: a user's tokens (add, list, show, enable, disable, delete, resync).
Thin: the logic lives in otpfast.services.usertokens."""
import contextlib
import json

import click

from otpfast.datadir import DataDir
from otpfast.errors import InvalidParameter, InvalidToken, StoreError
from otpfast.services import policy
from otpfast.services.usertokens import FURTHER_TYPES, RESYNC_FAILED, TokenAdmin
from otpfast_cli.options import POSITIVE_INT, bad_parameter, data_dir_option


@contextlib.contextmanager
def _tokens(data_dir):
    """A TokenAdmin over the data dir; library errors become click errors."""
    try:
        store = DataDir.resolve(data_dir).open_store()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield TokenAdmin(store)
    except InvalidParameter as exc:
        if exc.field in ("user", "serial"):
            raise click.BadParameter(exc.message, param_hint=f"'{exc.field.upper()}'") from None
        raise bad_parameter(exc) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


def _echo_info(info: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
        return
    for key in sorted(info):
        click.echo(f"{key}: {info[key]}")


@click.group("token")
def token_group():
    """A user's tokens: an account is a user holding one or more tokens."""


@token_group.command("add")
@data_dir_option
@click.argument("user")
@click.option("--type", "type_", required=True,
              type=click.Choice(sorted(set(policy.TYPES) | set(FURTHER_TYPES) | {"tprf"})),
              help="hotp, totp (an authenticator app or key fob) or recovery (single-use "
                   "codes). Server-issued types are an account's main token (account add). "
                   "tprf: a threshold token, its key made by a DKG among --share-servers.")
@click.option("--description", default="", help="Free text shown by token list/show.")
@click.option("--digits", type=POSITIVE_INT, default=None, help="OTP length (default 6).")
@click.option("--algorithm", default=None, help="hotp/totp: sha1|sha256|sha512 (default sha1).")
@click.option("--window", type=click.IntRange(min=0), default=None,
              help=f"hotp look-ahead (default {policy.DEFAULT_WINDOW}).")
@click.option("--period", type=POSITIVE_INT, default=None, help="totp: step in seconds (30).")
@click.option("--count", type=POSITIVE_INT, default=None,
              help="recovery: how many codes (default 10).")
@click.option("--issuer", default="otpfast", show_default=True,
              help="hotp/totp: the issuer in the printed otpauth:// URI.")
@click.option("--cluster", "cluster_path", type=click.Path(dir_okay=False), default=None,
              help="tprf: the cluster file (share servers and pins); the DKG's public result is added to it.")
@click.option("--share-servers", default=None, metavar="A,B,C",
              help="tprf: the share servers (names in the cluster file) that run the DKG [default: all].")
@click.option("--threshold", type=POSITIVE_INT, default=None,
              help="tprf: t, the share servers needed per OTP (n/2 < t <= n) [default: a majority].")
@click.option("--admin", default="admin", show_default=True,
              help="tprf: the admin principal the share servers know; its credential from "
                   "--credential-file or $OTPFAST_CREDENTIAL.")
@click.option("--credential-file", type=click.Path(dir_okay=False), default=None,
              help="tprf: the admin's cluster credential (else $OTPFAST_CREDENTIAL).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="tprf: seconds to wait for each share server.")
def token_add(data_dir, user, type_, description, digits, algorithm, window, period, count,
              issuer, cluster_path, share_servers, threshold, admin, credential_file, timeout):
    """Give USER a further token. Prints its serial; for hotp/totp the otpauth:// URI to
    enrol it (contains the secret), for recovery the codes (shown only this once); for tprf
    the share servers run a DKG (nobody ever holds the key) and the cluster file gets its
    public result."""
    tprf_only = (("--cluster", cluster_path), ("--share-servers", share_servers), ("--threshold", threshold),
                 ("--credential-file", credential_file))
    if type_ == "tprf":
        from otpfast import tprf
        from otpfast_cli.tprf import add_tprf_token

        for name, value in (("--algorithm", algorithm), ("--window", window), ("--period", period),
                            ("--count", count)):
            if value is not None:
                raise click.UsageError(f"{name} is not used with --type tprf")
        tprf.require()
        add_tprf_token(user, cluster_path, share_servers, threshold, digits, admin, credential_file, timeout)
        return
    for name, value in tprf_only:
        if value is not None:
            raise click.UsageError(f"{name} is only used with --type tprf")
    settings = {name: value for name, value in (("digits", digits), ("algorithm", algorithm),
                                                ("window", window), ("period", period))
                if value is not None}
    with _tokens(data_dir) as admin:
        token, uri, codes = admin.enrol(user, type_, issuer=issuer, description=description,
                                        count=count, **settings)
    click.echo(f"token {token.serial} ({type_}) added to {user}", err=True)
    if codes is not None:
        click.echo("Recovery codes (each works once; they are shown only now):", err=True)
        for code in codes:
            click.echo(code)
    else:
        click.echo("Enrol it with this URI (it contains the secret):", err=True)
        click.echo(uri)


@token_group.command("list")
@data_dir_option
@click.argument("user", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def token_list(data_dir, user, as_json):
    """List the tokens (of USER)."""
    with _tokens(data_dir) as admin:
        infos = [admin.describe(token) for token in admin.list(user)]
    for info in infos:
        if as_json:
            click.echo(json.dumps(info, sort_keys=True))
        else:
            state = "enabled" if info["enabled"] else "disabled"
            main = " main" if info["main"] else ""
            click.echo(f"{info['serial']}\t{info['user']}\t{info['type']}\t{state}{main}"
                       f"\t{info['description']}")


@token_group.command("show")
@data_dir_option
@click.argument("serial")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def token_show(data_dir, serial, as_json):
    """Show a token's settings and state (no secrets; recovery: codes remaining)."""
    with _tokens(data_dir) as admin:
        info = admin.describe(admin.get(serial))
    _echo_info(info, as_json)


def _switch(enabled: bool):
    @data_dir_option
    @click.argument("serial")
    def command(data_dir, serial):
        with _tokens(data_dir) as admin:
            admin.set_enabled(serial, enabled)
        click.echo(f"token {serial} {'enabled' if enabled else 'disabled'}")
    return command


token_group.command("enable", help="Enable token SERIAL.")(_switch(True))
token_group.command("disable", help="Disable token SERIAL: its OTPs are refused.")(
    _switch(False))


@token_group.command("delete")
@data_dir_option
@click.argument("serial")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def token_delete(data_dir, serial, yes):
    """Delete a further token (a main token is disabled, or its account deleted)."""
    if not yes:
        click.confirm(f"delete token {serial}?", abort=True)
    with _tokens(data_dir) as admin:
        admin.delete(serial)
    click.echo(f"token {serial} deleted")


@token_group.command("resync")
@data_dir_option
@click.argument("serial")
@click.argument("otp1")
@click.argument("otp2")
def token_resync(data_dir, serial, otp1, otp2):
    """Resynchronise a hotp/totp token from two consecutive OTPs: HOTP within 1,000
    counters after the stored one; TOTP within 24 hours of the server's clock (the drift is
    kept and later checks use it). Wait for the second OTP to appear before running it."""
    try:
        with _tokens(data_dir) as admin:
            result = admin.resync(serial, otp1, otp2)
    except InvalidToken:
        raise click.ClickException(RESYNC_FAILED) from None
    if "drift_steps" in result:
        click.echo(f"token {serial} resynchronised (clock drift {result['drift_steps']} steps)")
    else:
        click.echo(f"token {serial} resynchronised (counter {result['counter']})")


def _bulk_commands():
    from otpfast_cli.bulk import token_export, token_import
    return token_import, token_export


for _command in _bulk_commands():
    token_group.add_command(_command)
