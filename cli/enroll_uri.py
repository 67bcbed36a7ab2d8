"""``otpfast enroll-uri`` (otpauth:// URI for authenticator apps) and ``otpfast qr`` (QR code)."""
import sys

import click

from otpfast import keyuri
from otpfast.errors import InvalidParameter
from otpfast.hotp import ALGORITHMS, generate_key, parse_key
from otpfast_cli.options import INT, POSITIVE_INT, bad_parameter, warn_secret_in_argv


def write_qr_file(uri, path, option, *, note=True):
    """Write the QR file (mode 0600, no symlink followed); exit 2 naming `option` if refused."""
    try:
        keyuri.save_qr(uri, path)
    except InvalidParameter as exc:
        raise click.BadParameter(exc.message, param_hint=f"'{option}'") from None
    except OSError as exc:
        raise click.BadParameter(f"cannot write {path}: {exc.strerror}",
                                 param_hint=f"'{option}'") from None
    if note:
        click.echo(f"QR code written to {path}", err=True)


def _qr_outputs(uri, show_qr, qr_file):
    if qr_file is not None:
        write_qr_file(uri, qr_file, "--qr-file")
    if show_qr:
        try:
            click.echo(keyuri.qr_text(uri), nl=False)
        except InvalidParameter as exc:
            raise click.BadParameter(exc.message, param_hint="'--qr'") from None


@click.command("enroll-uri")
@click.option("--type", "kind", type=click.Choice(keyuri.KINDS), default="totp", show_default=True)
@click.option("--account", required=True, help="Account name shown in the app (e.g. alice@example.com).")
@click.option("--issuer", default=None, help="Service name shown in the app.")
@click.option("--secret", "secret_hex", metavar="HEX", default=None, envvar="OTPFAST_ENROLL_URI_SECRET",
              help="Key in hex (default: 160 fresh random bits). Also OTPFAST_ENROLL_URI_SECRET.")
@click.option("--secret-base32", "secret_base32", metavar="B32", default=None,
              envvar="OTPFAST_ENROLL_URI_SECRET_BASE32",
              help="Key in base32. Also OTPFAST_ENROLL_URI_SECRET_BASE32.")
@click.option("--algorithm", type=click.Choice(ALGORITHMS), default="sha1", show_default=True)
@click.option("--digits", type=INT, default=6, show_default=True, help="6 to 8.")
@click.option("--period", type=POSITIVE_INT, default=30, show_default=True, help="TOTP step in seconds.")
@click.option("--counter", type=INT, default=0, show_default=True, help="HOTP initial counter.")
@click.option("--qr/--no-qr", "show_qr", default=False, help="Also print the QR code for a terminal.")
@click.option("--qr-file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the QR code to FILE.png or FILE.svg.")
def enroll_uri_command(kind, account, issuer, secret_hex, secret_base32, algorithm, digits, period,
                       counter, show_qr, qr_file):
    """Print an otpauth:// Key URI (and optionally its QR code) for authenticator apps.

    The URI holds the secret: treat the output like a password.
    """
    if qr_file is not None and not qr_file.lower().endswith(keyuri.QR_SUFFIXES):
        raise click.BadParameter("the QR file must end in .png or .svg", param_hint="'--qr-file'")
    warn_secret_in_argv(click.get_current_context(), "secret_hex", "secret_base32",
                        env_hint="OTPFAST_ENROLL_URI_SECRET or OTPFAST_ENROLL_URI_SECRET_BASE32")
    try:
        if secret_hex is not None or secret_base32 is not None:
            if secret_hex is not None and secret_base32 is not None:
                raise click.UsageError("give only one of --secret and --secret-base32")
            key = parse_key(hex=secret_hex, base32=secret_base32)
        else:
            key = generate_key()
        uri = keyuri.build_uri(kind, key, account, issuer=issuer, algorithm=algorithm, digits=digits,
                               period=period, counter=counter)
    except InvalidParameter as exc:
        raise bad_parameter(exc) from None
    click.echo(uri)
    _qr_outputs(uri, show_qr, qr_file)


@click.command("qr")
@click.argument("uri")
@click.option("--out", "qr_file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write FILE.png or FILE.svg instead of printing to the terminal.")
def qr_command(uri, qr_file):
    """Check an otpauth:// URI strictly and show it as a QR code (terminal, PNG or SVG).

    URI '-' reads it from stdin (keeps the secret out of the process list).
    """
    if uri == "-":
        uri = sys.stdin.readline().strip()
    try:
        keyuri.parse_uri(uri)
    except InvalidParameter as exc:
        raise click.BadParameter(exc.message if exc.field == "uri" else f"{exc.field}: {exc.message}",
                                 param_hint="'URI'") from None
    if qr_file is not None:
        write_qr_file(uri, qr_file, "--out")
        return
    try:
        click.echo(keyuri.qr_text(uri), nl=False)
    except InvalidParameter as exc:
        raise click.BadParameter(exc.message, param_hint="'URI'") from None
