"""Tokens in bulk: ``otpfast token import|export`` and ``otpfast account add-many``; the
``--secret-file`` reader of ``account add``. Thin: the logic lives in otpfast.services.bulk
and otpfast.importers."""
import base64
import binascii
import contextlib
import csv
import json
import os
import re

import click

from otpfast.datadir import DataDir
from otpfast.errors import InvalidParameter, StoreError
from otpfast_cli.options import POSITIVE_INT, bad_parameter, data_dir_option

_HEX = re.compile(r"[0-9a-fA-F]+")


def read_secret(stream, option: str = "--secret-file") -> bytes:
    """The secret on a file's first line: hex (even length, 0-9a-f), else base32 (spaces
    and '=' padding ignored). Exit 2 naming ``option``; the value is never echoed."""
    text = stream.readline().strip().replace(" ", "")
    if _HEX.fullmatch(text) and len(text) % 2 == 0:
        return bytes.fromhex(text)
    text = text.upper().rstrip("=")
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise click.BadParameter("the file's first line is neither hex nor base32",
                                 param_hint=f"'{option}'") from None


def _first_line(stream) -> str:
    return stream.readline().rstrip("\r\n")


@contextlib.contextmanager
def _bulk(data_dir):
    """A Bulk service over the data dir; library errors become click errors: a place in a
    file (``line 3``, ``KeyPackage 2``) or an option -> exit 2 naming it."""
    from otpfast.services.bulk import Bulk
    try:
        store = DataDir.resolve(data_dir).open_store()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield Bulk(store)
    except InvalidParameter as exc:
        raise _usage_error(exc) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


def _usage_error(exc: InvalidParameter):
    if exc.field.startswith(("line ", "KeyPackage", "token ")):
        return click.UsageError(f"{exc.field}: {exc.message} (nothing was imported or added)")
    if exc.field in ("user", "serial"):
        return click.BadParameter(exc.message, param_hint=f"'--{exc.field}'")
    return bad_parameter(exc)


def _open_private(path: str, option: str):
    """A new file only its owner can read (0600; an existing file is replaced, a symlink
    refused)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
    except OSError as exc:
        raise click.BadParameter(f"cannot write {path}: {exc.strerror}",
                                 param_hint=f"'{option}'") from None
    return os.fdopen(fd, "w", encoding="utf-8")


# -- token import / export ----------------------------------------------------------------
@click.command("import")
@data_dir_option
@click.argument("file", type=click.File("rb"))
@click.option("--format", "fmt", required=True, type=click.Choice(["pskc", "oathcsv", "uri"]),
              help="pskc (RFC 6030), oathcsv (privacyIDEA/LinOTP seed file) or uri (one "
                   "otpauth:// URI per line).")
@click.option("--psk-file", type=click.File("r"), default=None,
              help="pskc: the pre-shared key (hex, first line) the file is encrypted with.")
@click.option("--password-file", type=click.File("r"), default=None,
              help="pskc: the password (first line) of a PBKDF2-protected file.")
@click.option("--user", default=None,
              help="The user of tokens whose file names none (created if new).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per imported token.")
def token_import(data_dir, file, fmt, psk_file, password_file, user, as_json):
    """Import every token of FILE in one transaction: all or none. Each goes to the user the
    file names (else --user); a new user is created and its first token becomes its main
    token. A serial the store holds already refuses the import. Secrets are never shown."""
    psk = None if psk_file is None else _first_line(psk_file)
    password = None if password_file is None else _first_line(password_file)
    data = file.read()
    with _bulk(data_dir) as bulk:
        try:
            done = bulk.import_data(data, fmt, psk=psk, password=password, user=user)
        except InvalidParameter as exc:
            option = {"format": "--format", "psk": "--psk-file",
                      "password": "--password-file"}.get(exc.field)
            if option is not None:
                raise click.BadParameter(exc.message, param_hint=f"'{option}'") from None
            if exc.field == "file":
                raise click.UsageError(exc.message) from None
            raise
    for token in done:
        if as_json:
            click.echo(json.dumps(token, sort_keys=True))
        else:
            what = "main token of new user" if token["new_user"] and token["main"] else "token of"
            click.echo(f"{token['serial']}\t{token['type']}\t{what} {token['user']}"
                       f"\t({token['source']})")
    click.echo(f"imported {len(done)} tokens", err=True)


@click.command("export")
@data_dir_option
@click.option("--format", "fmt", required=True, type=click.Choice(["pskc"]),
              help="pskc (RFC 6030), secrets always encrypted.")
@click.option("--psk-file", type=click.File("r"), default=None,
              help="The pre-shared key (hex, 16/24/32 bytes, first line) to encrypt with.")
@click.option("--password-file", type=click.File("r"), default=None,
              help="A password (first line): the key is derived with PBKDF2.")
@click.option("--user", default=None, help="Only this user's tokens.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write here (mode 0600) instead of stdout.")
def token_export(data_dir, fmt, psk_file, password_file, user, out):
    """Write the hotp/totp tokens (of --user) as an encrypted PSKC file. Other token types
    cannot be exported: they are skipped with a note on stderr."""
    from otpfast.importers import export_pskc

    if (psk_file is None) == (password_file is None):
        raise click.BadParameter("give exactly one of --psk-file or --password-file",
                                 param_hint="'--psk-file'")
    psk = password = None
    if psk_file is not None:
        text = _first_line(psk_file).strip()
        if not _HEX.fullmatch(text) or len(text) // 2 not in (16, 24, 32) or len(text) % 2:
            raise click.BadParameter("the pre-shared key must be 16, 24 or 32 bytes of hex "
                                     "on the first line", param_hint="'--psk-file'")
        psk = bytes.fromhex(text)
    else:
        password = _first_line(password_file)
        if not password:
            raise click.BadParameter("the first line is empty", param_hint="'--password-file'")
    with _bulk(data_dir) as bulk:
        specs, skipped = bulk.export_specs(user)
        for serial, kind in skipped:
            click.echo(f"note: token {serial} ({kind}) cannot be exported: skipped", err=True)
        if not specs:
            raise click.ClickException("no hotp/totp token to export")
        data = export_pskc(specs, psk=psk, password=password)
        if out is not None:
            with _open_private(out, "--out") as stream:
                stream.buffer.write(data)
        else:
            click.get_binary_stream("stdout").write(data)
        bulk.note_export(len(specs), user)
    click.echo(f"exported {len(specs)} tokens", err=True)


# -- account add-many ---------------------------------------------------------------------
def _users(stream):
    """(line number, name, issuer or None) per user of a users CSV (``name[,issuer]``; blank
    lines and # lines skipped), streamed."""
    reader = csv.reader(stream)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:      # decoded in blocks: the line is not known
            raise InvalidParameter("from", "the file is not UTF-8 text") from None
        except csv.Error as exc:
            raise InvalidParameter(f"line {reader.line_num}", str(exc)) from None
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        issuer = row[1].strip() if len(row) > 1 and row[1].strip() else None
        yield reader.line_num, row[0].strip(), issuer


_SAFE = re.compile(r"[^A-Za-z0-9._@-]")


def qr_file_name(name: str, line: int) -> str:
    """NAME.png; a name with other characters (a path, spaces) or a leading dot is made
    safe and takes its line number: a_b~12.png (no name written as is contains ~)."""
    safe = _SAFE.sub("_", name)
    if safe != name or name.startswith("."):
        return f"{safe.lstrip('.') or '_'}~{line}.png"
    return f"{name}.png"


@click.command("add-many")
@data_dir_option
@click.option("--from", "source", required=True, type=click.File("r", encoding="utf-8"),
              help="users.csv: one user per line, name[,issuer]; # lines are comments.")
@click.option("--type", "type_", required=True, type=click.Choice(["hotp", "totp"]))
@click.option("--digits", type=POSITIVE_INT, default=None, help="OTP length (default 6).")
@click.option("--algorithm", default=None, help="sha1|sha256|sha512 (default sha1).")
@click.option("--period", type=POSITIVE_INT, default=None, help="totp: step in seconds (30).")
@click.option("--issuer", default="otpfast", show_default=True,
              help="The issuer in the URIs of users whose line names none.")
@click.option("--uris-out", type=click.Path(dir_okay=False), default=None,
              help="Write each user's otpauth:// URI here (name<TAB>URI, mode 0600).")
@click.option("--qr-dir", type=click.Path(file_okay=False), default=None,
              help="Write a QR code PNG per user here (NAME.png, mode 0600; a name that is "
                   "not a safe file name: its safe form + ~LINE.png).")
def account_add_many(data_dir, source, type_, digits, algorithm, period, issuer, uris_out,
                     qr_dir):
    """Create many hotp/totp users in ONE transaction (all or none), each with a fresh
    secret. Their URIs contain the secrets: give --uris-out and/or --qr-dir."""
    if uris_out is None and qr_dir is None:
        raise click.BadParameter("the new secrets must go somewhere: give --uris-out FILE "
                                 "and/or --qr-dir DIR", param_hint="'--uris-out'")
    if qr_dir is not None:
        from otpfast_cli.enroll_uri import write_qr_file
        try:
            os.makedirs(qr_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise click.BadParameter(f"cannot create {qr_dir}: {exc.strerror}",
                                     param_hint="'--qr-dir'") from None
    settings = {name: value for name, value in (("digits", digits), ("algorithm", algorithm),
                                                ("period", period)) if value is not None}
    partial = None if uris_out is None else uris_out + ".partial"
    written_qr = []
    count, committed = 0, False
    try:
        uris = None if partial is None else _open_private(partial, "--uris-out")
        try:
            with _bulk(data_dir) as bulk:
                added = bulk.add_many(_users(source), type_, issuer=issuer, **settings)
                with contextlib.closing(added):     # an error here rolls everything back
                    for number, name, uri in added:
                        if uris is not None:
                            uris.write(f"{name}\t{uri}\n")
                        if qr_dir is not None:
                            path = os.path.join(qr_dir, qr_file_name(name, number))
                            written_qr.append(path)
                            write_qr_file(uri, path, "--qr-dir", note=False)
                        count += 1
        finally:
            if uris is not None:
                uris.close()
        committed = True
        if partial is not None:
            os.replace(partial, uris_out)
    finally:
        if not committed:               # nothing was added: no secret kept
            for path in ([partial] if partial else []) + written_qr:
                with contextlib.suppress(OSError):
                    os.unlink(path)
    click.echo(f"{count} {type_} accounts added", err=True)
