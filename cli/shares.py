"""``otpfast share-server ...``: a share server of tprf tokens (serve, principal add/list, peer
id/add, accounts, transcript, events, verify, cluster-add). Thin: the logic lives in
otpfast.services.shares and otpfast.net.shares.

A share server is an initialised data directory (``otpfast init``); its shares and counters
live in ``shares.db`` there. A principal (a device of one account, a verifier, an admin who
runs DKGs) has one credential for the whole cluster: register it on every share server with
the same ``--credential-file`` (each server stores only the hash of a credential derived from
it and its own certificate fingerprint).
"""
import sys

import click

from otpfast.errors import InvalidParameter, Refused, StoreError
from otpfast_cli.logs import configure_logging
from otpfast_cli.options import bad_parameter, data_dir_option, exit_if_broken
from otpfast_cli.servers import (_announce, _binding, _run, _run_until_signalled,
                                 listen_address, open_datadir, server_options)


class _ShareServerGroup(click.Group):
    """A share store that fails its check (or a row of it that does) is a clear error, exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None


@click.group("share-server", cls=_ShareServerGroup)
def share_server_group():
    """A share server of threshold (tprf) tokens: one share of each token's key."""
    from otpfast import tprf

    tprf.require()


@share_server_group.command("serve")
@server_options
def serve(listen, data_dir, limits, verbose, log_format, failures_per_source):
    """Serve this share server: partial evaluations (with DLEQ proofs) and the DKG."""
    from otpfast.net import tls
    from otpfast.net._stream import bound_address
    from otpfast.net.shares import serve_shares
    from otpfast_cli.reload import Reloader

    ctx = click.get_current_context()
    host, port = listen_address(listen)
    configure_logging(verbose, log_format)
    datadir = open_datadir(data_dir)

    async def main():
        service = datadir.share_server()
        service.set_failure_limits(failures_per_source)
        identity = tls.ServerIdentity(datadir)
        try:
            server = await _binding("listen", serve_shares(service, identity.context, host, port,
                                                           limits=limits))
            await _run_until_signalled([server], lambda: _announce(bound_address(server), datadir.fingerprint()),
                                       Reloader(ctx, identity, [service]))
        finally:
            service.close()

    _run(main)


@share_server_group.group("principal")
def principal_group():
    """Who may talk to this share server."""


def _read_or_new(credential_file):
    from otpfast.services.credentials import new_credential
    from otpfast_cli.clients import read_credential

    if credential_file is None:
        return new_credential(), True
    return read_credential(credential_file).decode("ascii", "replace"), False


@principal_group.command("add")
@data_dir_option
@click.argument("name")
@click.option("--role", type=click.Choice(["device", "verifier", "admin"]), required=True,
              help="device: gets the OTPs of --account; verifier: checks OTPs (consumes counters); "
                   "admin: runs DKGs (token add --type tprf).")
@click.option("--account", default=None, help="The account of a device.")
@click.option("--credential-file", type=click.Path(dir_okay=False), default=None,
              help="The principal's cluster credential (register the same one on every share server); "
                   "without it a new one is made and printed once.")
def principal_add(data_dir, name, role, account, credential_file):
    """Register principal NAME on this share server."""
    from otpfast.services.tprfcluster import server_credential
    from otpfast_cli.clients import _wire_name

    _wire_name(None, None, name)
    if (role == "device") != (account is not None):
        raise click.BadParameter("a device needs --account; other roles take none", param_hint="'--account'")
    credential, fresh = _read_or_new(credential_file)
    datadir = open_datadir(data_dir)
    service = datadir.share_server()
    try:
        service.add_principal(name, role, account=account,
                              credential=server_credential(credential, datadir.fingerprint()))
    except Refused as exc:
        raise click.BadParameter(str(exc), param_hint="'NAME'") from None
    finally:
        service.close()
    click.echo(f"principal {name} ({role}) added", err=True)
    if fresh:
        click.echo("Its cluster credential (register it on the other share servers with --credential-file; "
                   "shown only now):", err=True)
        click.echo(credential)


@principal_group.command("list")
@data_dir_option
def principal_list(data_dir):
    """List the principals (no credentials); a row edited without the at-rest key is marked
    REFUSED (exit 1)."""
    datadir = open_datadir(data_dir)
    service = datadir.share_server()
    try:
        rows = service.store.principals()
    finally:
        service.close()
    for name, role, account, intact in rows:
        click.echo(f"{name}\t{role}\t{account or '-'}" + ("" if intact else "\tREFUSED (fails its integrity check)"))
    if not all(row[3] for row in rows):
        sys.exit(1)


@share_server_group.group("peer")
def peer_group():
    """The share servers this one deals with in a DKG (pinned by their DKG key ids)."""


@peer_group.command("id")
@data_dir_option
def peer_id(data_dir):
    """Print this share server's DKG key id (give it to the other share servers' operators)."""
    datadir = open_datadir(data_dir)
    service = datadir.share_server()
    try:
        click.echo(service.key_id)
    finally:
        service.close()


@peer_group.command("add")
@data_dir_option
@click.argument("key_id", metavar="sha256:HEX")
def peer_add(data_dir, key_id):
    """Pin a peer's DKG key id. Once any peer is pinned, this server takes part only in DKGs
    whose roster is itself and pinned peers (an admin cannot slip in share servers of its own)."""
    text = key_id.strip().lower()
    digits = text.removeprefix("sha256:")
    if not text.startswith("sha256:") or len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise click.BadParameter("must look like sha256:<64 hex digits> (otpfast share-server peer id)",
                                 param_hint="'KEY_ID'")
    datadir = open_datadir(data_dir)
    service = datadir.share_server()
    try:
        service.add_peer(text)
    finally:
        service.close()
    click.echo(f"peer {text} pinned")


@share_server_group.command("accounts")
@data_dir_option
def accounts(data_dir):
    """The accounts this share server holds a share of (index, threshold, watermark)."""
    datadir = open_datadir(data_dir)
    service = datadir.share_server()
    try:
        for account in service.store.accounts():
            record = service.store.share(account)
            watermark, outstanding = service.store.status(account)
            state = "active" if record.active else "pending"
            click.echo(f"{account}\tshare {record.index}\tt={record.threshold}\t{state}\twatermark {watermark}"
                       f"\toutstanding {len(outstanding)}")
    finally:
        service.close()


@share_server_group.command("events")
@data_dir_option
@click.argument("account")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many, newest first.")
def events(data_dir, account, limit):
    """ACCOUNT's latest evaluations on this share server: which counter was issued to or
    consumed by whom, and when."""
    import datetime

    datadir = open_datadir(data_dir)
    service = datadir.share_server()
    try:
        rows = service.store.events(account, limit)
    finally:
        service.close()
    for at, counter, purpose, principal in rows:
        when = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        click.echo(f"{when}\tcounter {counter}\t{'issued to' if purpose == 1 else 'consumed by'} {principal}")


@share_server_group.command("verify")
@data_dir_option
def verify(data_dir):
    """Check shares.db: its event chain against shares.head (a rollback to an older copy, a
    missing head file), every row against its MAC and the last event that wrote it (a row
    edited, rolled back or deleted without the at-rest key); exit 1 naming what is wrong."""
    datadir = open_datadir(data_dir)
    service = datadir.share_server(check=False)
    try:
        report = service.store.verify()
    finally:
        service.close()
    exit_if_broken(report, log="share store event log", entry="event", rows="share store rows")
    click.echo(f"share store intact: {report.entries} events, head {report.head_seq} "
               f"{report.head_hash.hex()}; rows intact")


@share_server_group.command("cluster-add")
@click.option("--cluster", "cluster_path", type=click.Path(dir_okay=False), required=True,
              help="The cluster file (created if absent).")
@click.argument("name")
@click.argument("address", metavar="HOST:PORT")
@click.option("--pin", required=True, metavar="sha256:HEX", help="The share server's certificate fingerprint.")
def cluster_add(cluster_path, name, address, pin):
    """Add share server NAME at HOST:PORT to a cluster file."""
    import os

    from otpfast.services.tprfcluster import Cluster
    from otpfast_cli.clients import checked_pin, server_address

    server_address(address)
    pin = checked_pin(pin)
    try:
        cluster = Cluster.load(cluster_path) if os.path.exists(cluster_path) else Cluster([], path=cluster_path)
    except InvalidParameter as exc:
        raise bad_parameter(exc)
    if any(s["name"] == name for s in cluster.servers):
        raise click.BadParameter(f"{name!r} is in the cluster file already", param_hint="'NAME'")
    cluster.servers.append({"name": name, "address": address, "pin": pin})
    cluster.save()
    click.echo(f"{name} {address} added to {cluster_path}")



@share_server_group.command("transcript")
@data_dir_option
@click.argument("account")
@click.option("--json", "as_json", is_flag=True, help="Print the transcript itself (canonical JSON).")
def transcript(data_dir, account, as_json):
    """ACCOUNT's DKG transcript as this share server keeps it: each share server's signature is
    checked; the qualified dealers and any dealer excluded, with the evidence."""
    from otpfast.services import tprfdkg

    datadir = open_datadir(data_dir)
    service = datadir.share_server()
    try:
        record = service.store.share(account)
    finally:
        service.close()
    if record is None:
        raise click.BadParameter(f"this share server holds no share of {account!r}", param_hint="'ACCOUNT'")
    if as_json:
        click.echo(record.transcript.decode())
        return
    body = tprfdkg.parse(record.transcript)
    signatures = record.signatures or {}
    click.echo(f"transcript {tprfdkg.digest(record.transcript)} of {account} (serial {body['setup']['serial']}, "
               f"t={body['setup']['threshold']} of {len(body['setup']['servers'])}); this server holds share "
               f"{record.index}")
    for server in body["setup"]["servers"]:
        signature = signatures.get(str(server["index"]))
        valid = signature is not None and tprfdkg.signed_by(server["key"], tprfdkg.FINISH, record.transcript,
                                                            bytes.fromhex(signature))
        click.echo(f"share server {server['index']} ({server['fingerprint'][:23]}...): "
                   f"{'signed' if valid else 'NO VALID SIGNATURE'}")
    click.echo("qualified dealers: " + ",".join(str(j) for j in body["qualified"]))
    for dealer, evidence in body["accused"].items():
        for item in evidence:
            click.echo(f"dealer {dealer} excluded: accused by {item['by']} ({item['reason']})")
    click.echo(f"public key {body['public']['key']}")
