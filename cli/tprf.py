"""The tprf side of ``token add --type tprf`` (the DKG), ``request --cluster`` and ``verify
--cluster``: thin wrappers over otpfast.net.tprf, with the exit codes of cli/clients.py."""
import click

from otpfast.errors import InvalidParameter
from otpfast_cli.clients import read_credential, run_client
from otpfast_cli.options import bad_parameter

def load_cluster(path):
    from otpfast.services.tprfcluster import Cluster

    try:
        return Cluster.load(path)
    except InvalidParameter as exc:
        raise bad_parameter(exc)


def _account(cluster, account):
    try:
        cluster.account(account)
    except InvalidParameter as exc:
        raise bad_parameter(exc)


def add_tprf_token(user, cluster_path, share_servers, threshold, digits, admin, credential_file, timeout):
    """Run the DKG among the named share servers; record the public result in the cluster file."""
    from otpfast.net.tprf import run_dkg
    from otpfast.services.tprfdkg import MAX_SERVERS, quorum_ok

    from otpfast.protocol.messages import NAME_LIMIT

    if not (user.isprintable() and 1 <= len(user.encode("utf-8")) <= NAME_LIMIT):
        raise click.BadParameter(f"must be printable text of 1 to {NAME_LIMIT} bytes", param_hint="'USER'")
    if cluster_path is None:
        raise click.UsageError("--type tprf needs --cluster FILE")
    cluster = load_cluster(cluster_path)
    names = [n.strip() for n in share_servers.split(",")] if share_servers else [s["name"] for s in cluster.servers]
    if len(set(names)) != len(names) or not all(names):
        raise click.BadParameter("name each share server once", param_hint="'--share-servers'")
    try:
        for name in names:
            cluster.server(name)
    except InvalidParameter as exc:
        raise bad_parameter(exc)
    if threshold is None:
        threshold = len(names) // 2 + 1
    if not quorum_ok(threshold, len(names)):
        raise click.BadParameter(f"need 2..{MAX_SERVERS} share servers and n/2 < t <= n (quorums must "
                                 f"overlap for exactly-once); got t={threshold}, n={len(names)}",
                                 param_hint="'--threshold'")
    if user in cluster.accounts:
        raise click.BadParameter(f"{user!r} has a tprf token in {cluster_path} already", param_hint="'USER'")
    if digits is not None and digits not in (6, 7, 8):
        raise click.BadParameter("tprf OTPs have 6, 7 or 8 digits", param_hint="'--digits'")
    credential = read_credential(credential_file)
    entry, (_transcript, signatures), accused = run_client(run_dkg(
        cluster, names, user, threshold, admin, credential, digits=digits or 6, timeout=timeout))
    cluster.accounts[user] = entry
    cluster.save()
    for dealer, evidence in accused.items():
        click.echo(f"dealer {dealer} EXCLUDED: " + "; ".join(evidence), err=True)
    click.echo(f"token {entry['serial']} (tprf, {threshold} of {len(names)}: {','.join(names)}) added to {user}",
               err=True)
    click.echo(f"transcript {entry['transcript']} signed by all {len(signatures)} share servers", err=True)
    click.echo(f"public key {entry['public']['key']}")


def request_tprf(cluster_path, client_name, credential_file, account, timeout):
    """The device's side: print the OTP combined from t share servers."""
    from otpfast.net.tprf import issue

    cluster = load_cluster(cluster_path)
    _account(cluster, account)
    credential = read_credential(credential_file)
    otp, _counter, _answered, cheaters = run_client(issue(cluster, account, client_name, credential, timeout=timeout))
    for name in cheaters:
        click.echo(f"warning: share server {name} sent a partial with a wrong proof (ignored)", err=True)
    return otp


def verify_tprf(cluster_path, client_name, credential_file, account, otp, timeout):
    from otpfast.net.tprf import verify

    cluster = load_cluster(cluster_path)
    _account(cluster, account)
    credential = read_credential(credential_file)
    ok, _answered, cheaters = run_client(verify(cluster, account, otp, client_name, credential, timeout=timeout))
    for name in cheaters:
        click.echo(f"warning: share server {name} sent a partial with a wrong proof (ignored)", err=True)
    return ok
