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
        if exc.field == "FILE":
            raise click.BadParameter(exc.message, param_hint="'FILE'") from None
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


def _passphrase(path):
    """The first line of --passphrase-file (never a command-line argument)."""
    if path is None:
        return None
    with open(path, "rb") as fh:
        passphrase = fh.readline().rstrip(b"\r\n")
    if len(passphrase) < 12:
        raise click.BadParameter("the passphrase must be 12 characters or more", param_hint="'--passphrase-file'")
    return passphrase


_passphrase_option = click.option(
    "--passphrase-file", type=_pem_file, default=None,
    help="File whose first line is the passphrase the backup is encrypted with (scrypt + AES-256-GCM).")


@click.group("backup")
def backup_group():
    """A consistent backup of a data directory (keys, certificate, store, audit anchors)."""


@backup_group.command("create")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@data_dir_option
@_passphrase_option
def backup_create_command(file, data_dir, passphrase_file):
    """Write a backup of the data directory to FILE (new, mode 0600): the keys, the TLS
    certificate and a consistent copy of the store, checked with `audit verify` first. It
    holds the at-rest key: keep it like the data directory, or encrypt it (--passphrase-file)."""
    from otpfast import backup

    passphrase = _passphrase(passphrase_file)
    with _errors():
        manifest = backup.create(DataDir.resolve(data_dir), file, passphrase=passphrase)
    click.echo(f"backup of a {manifest['store']} store written to {file} (audit head {manifest['audit_head']}, "
               f"at-rest key {manifest['at_rest_key']}, {'encrypted' if passphrase else 'not encrypted: mode 0600'})")


@backup_group.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=str))
@data_dir_option
@_passphrase_option
@click.option("--store-url", default=None, metavar="URL",
              help="A PostgreSQL store goes to this (empty) database [default: the backed-up one].")
@click.option("--force", is_flag=True,
              help="Restore over a data directory (or database) that holds one; stop its servers first.")
def backup_restore_command(file, data_dir, passphrase_file, store_url, force):
    """Restore FILE into the data directory (a new one unless --force), checked with
    `audit verify` before anything is written."""
    from otpfast import backup

    passphrase = _passphrase(passphrase_file)
    datadir = DataDir.resolve(data_dir)
    with _errors():
        manifest = backup.restore(file, datadir, passphrase=passphrase, force=force, store_url=store_url)
    click.echo(f"restored the backup of {manifest['created']} into {datadir.path} ({datadir.describe_store()}; "
               f"audit head {manifest['audit_head']}, pin {manifest['pin']})")


@rotate_group.command("at-rest")
@data_dir_option
def rotate_at_rest_command(data_dir):
    """A new at-rest key: every secret re-encrypted, every row and the audit chain MACed
    again, in one transaction (refused if `audit verify` fails). Stop the servers first;
    with PostgreSQL, copy the new at-rest.key to every node's data dir before starting them."""
    from otpfast.rotate import rotate_at_rest

    with _errors():
        seq = rotate_at_rest(DataDir.resolve(data_dir))
    click.echo(f"new at-rest key in place; the store is re-encrypted (audit entry {seq})", err=True)
