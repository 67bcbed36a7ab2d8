"""Admin commands over a local data directory: init, fingerprint, authority/client/account
management, enrolment and the audit check. Thin: the logic lives in otpfast.services.admin."""
import contextlib
import json
import os
import sys

import click

from otpfast.datadir import DataDir
from otpfast.errors import InvalidParameter, StoreError
from otpfast.services import audit, policy
from otpfast.services.admin import describe, describe_authority, describe_client
from otpfast_cli.options import (DATA_DIR_ERRORS, POSITIVE_INT, bad_parameter, data_dir_error, data_dir_option,
                                 exit_if_broken)


def _usage_error(exc: InvalidParameter):
    """InvalidParameter -> exit 2 naming the option (or the ID/NAME argument)."""
    if exc.field in ("id", "name"):
        return click.BadParameter(exc.message, param_hint=f"'{exc.field.upper()}'")
    return bad_parameter(exc)


@contextlib.contextmanager
def _admin(data_dir):
    """An Admin over the data dir; library errors become click errors."""
    try:
        admin = DataDir.resolve(data_dir).admin()
    except DATA_DIR_ERRORS as exc:
        raise data_dir_error(exc) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield admin
    except InvalidParameter as exc:
        raise _usage_error(exc) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        admin.store.close()


JSON_LINES_HELP = "Print one JSON object per line (stable keys; see the README)."


def _emit_json(info: dict) -> None:
    click.echo(json.dumps(info, sort_keys=True))


def _show_credential(kind: str, name, credential: str, data_dir) -> None:
    """The credential on stdout (alone: scripts capture it); the server's pin beside it on
    stderr, so the first connection can be pinned instead of trusted on first use."""
    click.echo(credential)
    click.echo(f"This is the {kind} credential of {name}. It is shown only once: store it in a "
               "file readable only by its user (e.g. mode 0600) and pass it with "
               "--credential-file or $OTPFAST_CREDENTIAL.", err=True)
    click.echo(f"Server pin: --pin {DataDir.resolve(data_dir).fingerprint()}", err=True)


@click.command("init")
@data_dir_option
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Use this PEM certificate instead of a self-signed one (with --tls-key).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The unencrypted PEM private key of --tls-cert.")
@click.option("--rsa-bits", type=click.IntRange(min=2048), default=3072, show_default=True,
              help="Size of the key server's RSA key.")
@click.option("--store-url", envvar="OTPFAST_STORE_URL", default=None, metavar="URL",
              help="Keep the store in this PostgreSQL database (postgresql://...) instead of "
                   "a SQLite file; recorded in the data dir (mode 0600). A URL with a password "
                   "is better passed as $OTPFAST_STORE_URL than on the command line.")
@click.option("--upgrade", is_flag=True,
              help="Do not create: upgrade the store schema of an existing data directory to "
                   "this otpfast's (other commands refuse an older store; the servers upgrade "
                   "it when they start).")
@click.option("--join", is_flag=True,
              help="Add a node to the existing PostgreSQL store of --store-url: this data dir "
                   "gets the store's at-rest key (--at-rest-key-file), its own node id and its "
                   "own RSA and TLS keys (or --tls-cert/--tls-key: one identity for all nodes).")
@click.option("--at-rest-key-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With --join: a copy of the first node's at-rest.key (bring it over a "
                   "secure channel; keep it mode 0600), or set $OTPFAST_AT_REST_KEY.")
def init_command(data_dir, tls_cert, tls_key, rsa_bits, store_url, upgrade, join,
                 at_rest_key_file):
    """Create the data directory: store, at-rest key, RSA key pair, TLS certificate.
    Prints the pin of the TLS key that clients pin."""
    dd = DataDir.resolve(data_dir)
    if upgrade:
        if tls_cert is not None or tls_key is not None:
            raise click.UsageError("--upgrade takes no --tls-cert/--tls-key: it changes only the store")
        _upgrade(dd)
        return
    try:
        if at_rest_key_file is not None and not join:
            raise InvalidParameter("at-rest-key-file", "goes with --join")
        fingerprint = dd.init(tls_cert=tls_cert, tls_key=tls_key, rsa_bits=rsa_bits,
                              store_url=store_url or None, join=join, key_file=at_rest_key_file)
    except InvalidParameter as exc:
        raise bad_parameter(exc) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(fingerprint)
    click.echo(f"initialised {dd.path}" + (f" (node {dd.node_id()})" if join else ""), err=True)
    click.echo(f"store: {dd.describe_store()}", err=True)


def _upgrade(dd):
    try:
        store = dd.open_store(upgrade=True)
    except DATA_DIR_ERRORS as exc:
        raise data_dir_error(exc) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        version = store.schema_version()
    finally:
        store.close()
    if store.upgraded_from is None:
        click.echo(f"store schema version {version} is current: nothing to upgrade ({dd.describe_store()})")
    else:
        click.echo(f"upgraded the store schema from version {store.upgraded_from} to {version} "
                   f"({dd.describe_store()})")


@click.command("fingerprint")
@data_dir_option
def fingerprint_command(data_dir):
    """Print the pin clients keep: sha256:<hex> of the TLS certificate's public key (a
    certificate renewed with the same key keeps it: `otpfast rotate tls --keep-key`)."""
    try:
        click.echo(DataDir.resolve(data_dir).fingerprint())
    except DATA_DIR_ERRORS as exc:
        raise data_dir_error(exc) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("authority")
def authority_group():
    """Key-ceremony authorities (key-generation clients)."""


@authority_group.command("add")
@data_dir_option
@click.argument("authority_id", metavar="ID", type=POSITIVE_INT)
def authority_add(data_dir, authority_id):
    """Register authority ID; prints its credential once."""
    with _admin(data_dir) as admin:
        credential = admin.add_authority(authority_id)
    _show_credential("authority", authority_id, credential, data_dir)


@authority_group.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True,
              help=JSON_LINES_HELP + " Keys: id, created (UTC).")
def authority_list(data_dir, as_json):
    """List the registered authorities (no credentials)."""
    with _admin(data_dir) as admin:
        records = admin.authorities()
    for record in records:
        info = describe_authority(record)
        if as_json:
            _emit_json(info)
        else:
            click.echo(f"{info['id']}\tcreated {info['created']}")


@authority_group.command("delete")
@data_dir_option
@click.argument("authority_id", metavar="ID", type=POSITIVE_INT)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def authority_delete(data_dir, authority_id, yes):
    """Delete authority ID: its credential stops working at once. Refused while an account
    still waits for its contribution."""
    if not yes:
        click.confirm(f"delete authority {authority_id}?", abort=True)
    with _admin(data_dir) as admin:
        admin.delete_authority(authority_id)
    click.echo(f"authority {authority_id} deleted")


@click.group("client")
def client_group():
    """OTP-requesting clients (devices) and verifier clients (relying services)."""


@client_group.command("add")
@data_dir_option
@click.argument("name")
@click.option("--account", default=None, help="The account whose OTPs this client requests.")
@click.option("--verifier", is_flag=True, help="A relying service that may verify any account.")
@click.option("--admin", "admin_role", is_flag=True,
              help="May call the HTTPS admin API (/admin/...) with its credential as a bearer "
                   "token; with --verifier it may also verify.")
def client_add(data_dir, name, account, verifier, admin_role):
    """Register client NAME (--account A, or --verifier and/or --admin); prints its
    credential once."""
    if (account is None) == (not (verifier or admin_role)):
        raise click.UsageError("give exactly one of --account A or --verifier/--admin")
    with _admin(data_dir) as admin:
        credential = admin.add_client(name, account=account, verifier=verifier,
                                      admin=admin_role)
    _show_credential("client", name, credential, data_dir)


@client_group.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True,
              help=JSON_LINES_HELP + " Keys: name, role (device|verifier|admin|verifier+admin), "
                   "account (null but for a device), created (UTC).")
def client_list(data_dir, as_json):
    """List the clients (no credentials)."""
    with _admin(data_dir) as admin:
        records = admin.clients()
    for record in records:
        info = describe_client(record)
        if as_json:
            _emit_json(info)
        else:
            click.echo(f"{info['name']}\t{info['role']}\t{info['account'] or '-'}\t"
                       f"created {info['created']}")


@client_group.command("delete")
@data_dir_option
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def client_delete(data_dir, name, yes):
    """Delete client NAME: its credential stops working at once."""
    if not yes:
        click.confirm(f"delete client {name}?", abort=True)
    with _admin(data_dir) as admin:
        admin.delete_client(name)
    click.echo(f"client {name} deleted")


@client_group.command("rotate")
@data_dir_option
@click.argument("name")
def client_rotate(data_dir, name):
    """Give client NAME a new credential, printed once; the old one stops working at once."""
    with _admin(data_dir) as admin:
        credential = admin.rotate_client(name)
    _show_credential("client", name, credential, data_dir)


@click.group("account")
def account_group():
    """Accounts (users): add, add-many, list, show, lock, unlock, delete, set-pin."""


@account_group.command("add")
@data_dir_option
@click.argument("name")
@click.option("--type", "type_", required=True, type=click.Choice(policy.TYPES),
              help="OTP scheme. rsa-lfsr and rsa-primroot are the paper's INSECURE, "
                   "predictable RSA-type OTPs (study only; need --insecure-paper-mode).")
@click.option("--authorities", default=None,
              help="Comma-separated authority ids (e.g. 1,2,3,4): the secret comes from their "
                   "key ceremony. Without: from the CSPRNG at once.")
@click.option("--digits", type=POSITIVE_INT, default=None, help="OTP length (default 6).")
@click.option("--ttl", type=POSITIVE_INT, default=None,
              help=f"Seconds an issued OTP stays valid (default {policy.DEFAULT_TTL}, "
                   f"{policy.MIN_TTL}..{policy.MAX_TTL}).")
@click.option("--algorithm", default=None,
              help="hotp/totp: sha1|sha256|sha512 (default sha1); "
                   "hashchain: sha1|sha256|sha384|sha512 (default sha256).")
@click.option("--chain-length", type=POSITIVE_INT, default=None,
              help=f"hashchain: number of uses (default {policy.DEFAULT_CHAIN_LENGTH}).")
@click.option("--lockout", type=POSITIVE_INT, default=None,
              help=f"Recent failed verifications before locking (default "
                   f"{policy.DEFAULT_LOCKOUT}, max {policy.MAX_LOCKOUT}); one is forgiven "
                   f"every {int(policy.FAILURE_LEAK // 60)} minutes.")
@click.option("--lockout-policy", type=click.Choice(policy.LOCKOUT_POLICIES), default=None,
              help=f"temporary (default): a lock lifts by itself after "
                   f"{int(policy.FIRST_LOCK // 60)} minutes, doubling at each repeated lock up "
                   f"to {int(policy.MAX_LOCK // 3600)} hours; permanent: until `account unlock`.")
@click.option("--window", type=click.IntRange(min=0), default=None,
              help=f"hotp/hashchain look-ahead (default {policy.DEFAULT_WINDOW}).")
@click.option("--period", type=POSITIVE_INT, default=None, help="totp: step in seconds (30).")
@click.option("--insecure-paper-mode", is_flag=True,
              help="Confirm an INSECURE rsa-lfsr/rsa-primroot account (the paper's scheme).")
@click.option("--secret-file", type=click.File("r"), default=None,
              help="hotp/totp: an existing device's secret (hex or base32, first line) "
                   "instead of a fresh one. Never give a secret on the command line.")
def account_add(data_dir, name, type_, authorities, digits, ttl, algorithm, chain_length,
                lockout, lockout_policy, window, period, insecure_paper_mode, secret_file):
    """Create account NAME."""
    if type_ in policy.INSECURE_TYPES:
        click.echo(f"WARNING: {type_} is the paper's RSA-type OTP with a ~20-bit modulus. It is "
                   "INSECURE: the next OTP can be predicted from a few observed ones. Use it "
                   "for study only, never for logins.", err=True)
    try:
        ids = policy.parse_authorities(authorities) if authorities is not None else None
    except InvalidParameter as exc:
        raise bad_parameter(exc) from None
    secret = None
    if secret_file is not None:
        from otpfast_cli.bulk import read_secret
        secret = read_secret(secret_file)
    with _admin(data_dir) as admin:
        record = admin.add_account(name, type_, secret=secret, digits=digits, ttl=ttl,
                                   algorithm=algorithm,
                                   chain_length=chain_length, lockout=lockout, window=window,
                                   period=period, authorities=ids,
                                   insecure_paper_mode=insecure_paper_mode,
                                   lockout_policy=lockout_policy)
    if record.authorities:
        click.echo(f"account {name} ({type_}) waits for the key ceremony of authorities "
                   f"{','.join(map(str, record.authorities))}")
    else:
        click.echo(f"account {name} ({type_}) is active")


@account_group.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True,
              help=JSON_LINES_HELP + " Keys as `account show --json`.")
def account_list(data_dir, as_json):
    """List accounts (no secrets)."""
    with _admin(data_dir) as admin:
        records = admin.accounts()
        now = admin.clock()
    for record in records:
        if as_json:
            _emit_json(describe(record, now))
        else:
            flags = " LOCKED" if record.locked_at(now) else ""
            if record.type == "hashchain" and describe(record, now)["uses_left"] == 0:
                flags += " EXHAUSTED"
            click.echo(f"{record.name}\t{record.type}\t{record.state}{flags}")


@account_group.command("show")
@data_dir_option
@click.argument("name")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (stable keys: name, type, state, failures, locked, "
                   "locked_until, lock_level, lockout_policy, the settings; counter, "
                   "last_step, uses_left and transcript where the type has them).")
def account_show(data_dir, name, as_json):
    """Show an account's settings and state (no secrets). A hash chain shows its uses left."""
    with _admin(data_dir) as admin:
        info = describe(admin.account(name), admin.clock())
    if as_json:
        _emit_json(info)
        return
    if info.get("uses_left") == 0:
        click.echo(f"warning: the hash chain of {name} is used up: it issues and accepts no "
                   "more OTPs (create a new account for this user)", err=True)
    for key in sorted(info):
        value = info[key]
        if isinstance(value, list):
            value = ",".join(map(str, value)) or "-"
        click.echo(f"{key}: {value}")


@account_group.command("lock")
@data_dir_option
@click.argument("name")
def account_lock(data_dir, name):
    """Lock account NAME for good: every OTP refused until `account unlock`."""
    with _admin(data_dir) as admin:
        admin.lock(name)
    click.echo(f"account {name} locked")


@account_group.command("unlock")
@data_dir_option
@click.argument("name")
def account_unlock(data_dir, name):
    """Lift any lock of account NAME and forget its failures and back-off."""
    with _admin(data_dir) as admin:
        admin.unlock(name)
    click.echo(f"account {name} unlocked")


@account_group.command("delete")
@data_dir_option
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def account_delete(data_dir, name, yes):
    """Delete an account, its contributions and issued OTPs, and the device clients bound
    to it (their credentials stop working; a new account of the same name needs new ones)."""
    if not yes:
        click.confirm(f"delete account {name}?", abort=True)
    with _admin(data_dir) as admin:
        revoked = admin.delete(name)
    click.echo(f"account {name} deleted")
    for client in revoked:
        click.echo(f"client {client} (bound to {name}) deleted")


@account_group.command("set-pin")
@data_dir_option
@click.argument("name")
@click.option("--pin-file", type=click.File("r"), default=None,
              help="Read the PIN from this file (first line) instead of stdin; never argv.")
@click.option("--remove", is_flag=True, help="Remove the PIN (the OTP alone is accepted again).")
def account_set_pin(data_dir, name, pin_file, remove):
    """Set the PIN of account NAME (from stdin or --pin-file): then only PIN followed by the
    OTP, in one field, is accepted, on every path (native verify, RADIUS, Kerberos)."""
    from otpfast.services.pin import MAX_PIN, MIN_PIN
    from otpfast.services.usertokens import TokenAdmin

    pin = None
    if not remove:
        if pin_file is not None:
            pin = pin_file.readline().rstrip("\r\n")
        elif sys.stdin.isatty():
            pin = click.prompt("PIN", hide_input=True, confirmation_prompt=True)
        else:
            pin = sys.stdin.readline().rstrip("\r\n")
        if not MIN_PIN <= len(pin) <= MAX_PIN:
            raise click.BadParameter(f"the PIN must be {MIN_PIN}..{MAX_PIN} characters",
                                     param_hint="'--pin-file'" if pin_file else "stdin")
    with _admin(data_dir) as admin:
        TokenAdmin(admin.store, clock=admin.clock).set_pin(name, pin)
    click.echo(f"account {name}: PIN {'removed' if remove else 'set'}")


@click.command("enroll")
@data_dir_option
@click.argument("name")
@click.option("--issuer", default="otpfast", show_default=True, help="Issuer shown by the app.")
@click.option("--png", "png", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the QR code as a PNG file.")
@click.option("--svg", "svg", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the QR code as an SVG file.")
def enroll_command(data_dir, name, issuer, png, svg):
    """Show the otpauth:// URI and QR code of a hotp/totp account for an authenticator app.
    The output contains the account's secret."""
    from otpfast import keyuri
    from otpfast_cli.enroll_uri import write_qr_file

    with _admin(data_dir) as admin:
        uri = admin.enrollment_uri(name, issuer=issuer)
    click.echo(uri)
    if sys.stdout.isatty() or not (png or svg):
        click.echo(keyuri.qr_text(uri))
    for option, path, suffix in (("png", png, ".png"), ("svg", svg, ".svg")):
        if path is None:
            continue
        if not path.lower().endswith(suffix):
            raise click.BadParameter(f"the file name must end in {suffix}",
                                     param_hint=f"'--{option}'")
        write_qr_file(uri, path, f"--{option}")


@click.group("audit")
def audit_group():
    """The hash-chained audit log."""


@audit_group.command("verify")
@data_dir_option
@click.option("--archive", "archives", multiple=True, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="Also prove this archive file (from `audit archive`; repeatable) and that "
                   "the archives join the log.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: ok, entries, first_bad (null: chain intact), "
                   "reason, head_seq, head_hash, anchor_seq, bad_rows (list), archives "
                   "(list of lines). Exit codes as without it.")
def audit_verify(data_dir, archives, as_json):
    """Check every audit entry, the recorded head and every client, account, issued OTP and
    authority row; exit 1 naming what is wrong."""
    with _admin(data_dir) as admin:
        report = audit.verify_chain(admin.store)
        lines = audit.verify_archives(admin.store, archives) if archives else []
    if as_json:
        _emit_json({"ok": report.ok, "entries": report.entries, "first_bad": report.first_bad,
                    "reason": report.reason, "head_seq": report.head_seq,
                    "head_hash": report.head_hash.hex(), "anchor_seq": report.anchor_seq,
                    "bad_rows": list(report.bad_rows), "archives": lines})
        sys.exit(0 if report.ok else 1)
    for line in lines:
        click.echo(line)
    exit_if_broken(report, log="audit log", entry="entry", rows="store rows")
    start = f", from archive anchor {report.anchor_seq}" if report.anchor_seq else ""
    click.echo(f"audit log intact: {report.entries} entries{start}, head {report.head_seq} "
               f"{report.head_hash.hex()}; rows intact")


def _parse_date(text: str, option: str = "--before", *, epoch: bool = False) -> float:
    try:
        return audit.parse_time(text, option, epoch=epoch)
    except InvalidParameter as exc:
        raise click.BadParameter(exc.message, param_hint=f"'{option}'") from None


@audit_group.command("archive")
@data_dir_option
@click.option("--before", required=True, metavar="DATE",
              help="Archive the entries dated before DATE (ISO 8601; UTC unless it names a "
                   "zone).")
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
def audit_archive(data_dir, before, file):
    """Move the audit entries older than DATE to FILE (JSON lines, a new file, mode 0600)
    and delete them from the store in one transaction; `audit verify` proves the rest from
    a MACed anchor, `audit verify --archive FILE` the archived part."""
    cutoff = _parse_date(before)
    if os.path.lexists(file):
        raise click.BadParameter(f"{file} exists already", param_hint="'FILE'")
    with _admin(data_dir) as admin:
        done = audit.archive(admin.store, cutoff, file, clock=admin.clock)
    if done.chains:
        spans = ", ".join(f"chain {chain} entries {first}..{last}" for chain, first, last in done.chains)
        click.echo(f"archived {spans} ({done.entries}) to {file}")
    elif done.entries:
        click.echo(f"archived entries {done.first}..{done.last} ({done.entries}) to {file}")
    else:
        click.echo("no entries before that date: nothing archived")


@audit_group.command("list")
@data_dir_option
@click.option("--account", default=None, help="Only this account's entries.")
@click.option("--since", default=None, metavar="T",
              help="Only entries at or after T: ISO 8601 (UTC unless it names a zone) or "
                   "seconds since the epoch.")
@click.option("--result", default=None, metavar="R",
              help="Only entries whose outcome starts with R (accepted, issued, refused, "
                   "rejected, rejected:locked, ...).")
@click.option("--json", "as_json", is_flag=True,
              help=JSON_LINES_HELP + " Keys: seq, time (UTC), epoch, event, account, client, "
                   "source (peer address), outcome (result and reason), intact (the entry's "
                   "MAC chains onto the one before it).")
def audit_list(data_dir, account, since, result, as_json):
    """Print the audit log, oldest first: time, event, account, client, source (the peer
    address) and outcome (with the refusal reason, which network replies never carry).
    An entry whose MAC does not chain is marked ALTERED (`audit verify` is the full proof)."""
    start = None if since is None else _parse_date(since, "--since", epoch=True)
    with _admin(data_dir) as admin:
        for info in admin.audit_entries(account=account, since=start, result=result):
            if as_json:
                _emit_json(info)
            else:
                mark = "" if info["intact"] else "\tALTERED"
                click.echo(f"{info['seq']}\t{info['time']}\t{info['event']}\t"
                           f"{info['account']}\t{info['client']}\t{info['source']}\t"
                           f"{info['outcome']}{mark}")


def _add_many():
    from otpfast_cli.bulk import account_add_many
    return account_add_many


account_group.add_command(_add_many())
