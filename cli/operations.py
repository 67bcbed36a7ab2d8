"""Operations on a data directory: ``otpfast rotate tls|rsa|at-rest`` and ``otpfast backup
create|restore``. Thin: the logic lives in otpfast.rotate, otpfast.store.rekey and otpfast.backup."""
import contextlib

import click

from otpfast.datadir import DataDir
from otpfast.errors import InvalidParameter, StoreError
from otpfast_cli.options import DATA_DIR_ERRORS, bad_parameter, data_dir_error, data_dir_option

_pem_file = click.Path(exists=True, dir_okay=False, readable=True, path_type=str)


@contextlib.contextmanager
def _errors():
    """Library errors -> click's: exit 2 naming the option, or 1 with the message."""
    try:
        yield
    except InvalidParameter as exc:
        raise bad_parameter(exc) from None
    except DATA_DIR_ERRORS as exc:
        raise data_dir_error(exc) from None
    except (StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@click.group("rotate")
def rotate_group():
    """Replace a key: the TLS certificate, the key server's RSA key, the at-rest key."""


@rotate_group.command("tls")
@data_dir_option
@click.option("--keep-key", is_flag=True,
              help="Renew the certificate for the same key: clients keep their pin.")
@click.option("--tls-cert", type=_pem_file, default=None,
              help="Install this PEM certificate (with --tls-key) instead of a self-signed one.")
@click.option("--tls-key", type=_pem_file, default=None, help="The unencrypted PEM private key of --tls-cert.")
def rotate_tls_command(data_dir, keep_key, tls_cert, tls_key):
    """A new TLS certificate (self-signed unless given). Prints the key pin clients need:
    unchanged with --keep-key. A running server takes it on SIGHUP."""
    from otpfast.rotate import rotate_tls

    datadir = DataDir.resolve(data_dir)
    with _errors():
        before = datadir.fingerprint()
        pin = rotate_tls(datadir, keep_key=keep_key, cert_file=tls_cert, key_file=tls_key)
    click.echo(pin)
    if pin == before:
        click.echo("new certificate, same key: clients keep their pin; SIGHUP the server to use it", err=True)
    else:
        click.echo(f"new key: clients must pin {pin} (remove the server's line from their known_servers); "
                   "SIGHUP the server to use it", err=True)


@rotate_group.command("rsa")
@data_dir_option
@click.option("--rsa-bits", type=click.IntRange(min=2048), default=3072, show_default=True,
              help="Size of the new RSA key.")
def rotate_rsa_command(data_dir, rsa_bits):
    """A new RSA key for the key server (between ceremonies: contributions are encrypted to
    it, receipts and transcripts signed with it). The servers use it from their next start."""
    from otpfast.rotate import rotate_rsa

    with _errors():
        kept = rotate_rsa(DataDir.resolve(data_dir), rsa_bits)
    click.echo(f"new key server RSA key; the old one is kept in {kept}; restart the servers to use it", err=True)
