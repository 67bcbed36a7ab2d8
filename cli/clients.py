"""Network clients: ``otpfast contribute``, ``otpfast ceremony transcript``, ``otpfast request``,
``otpfast verify``.

Credentials come from ``--credential-file`` or ``$OTPFAST_CREDENTIAL``, never from argv.
Exit codes: 0 success / OTP accepted, 1 OTP rejected (verify), 2 usage error,
3 the server could not be reached, was not authenticated, or refused the request.
"""
import asyncio
import json
import os
import sys

import click

from otpfast.errors import InvalidParameter, InvalidToken, OtpfastError, Refused
from otpfast.net import tls
from otpfast.net.client import connect, parse_address
from otpfast.protocol.messages import NAME_LIMIT, OTP_LIMIT
from otpfast.services.credentials import MAX_CREDENTIAL_BYTES
from otpfast_cli.options import DATA_DIR_ERRORS, INT, POSITIVE_INT, bad_parameter, data_dir_error, data_dir_option

CREDENTIAL_ENV = "OTPFAST_CREDENTIAL"
EXIT_REJECTED = 1
EXIT_UNAVAILABLE = 3


def read_credential(path):
    """The credential text from ``path`` or $OTPFAST_CREDENTIAL (bytes, stripped)."""
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = f.read(4096)
        except OSError as exc:
            raise click.BadParameter(f"cannot read it: {exc.strerror}", param_hint="'--credential-file'")
    else:
        env = os.environ.get(CREDENTIAL_ENV)
        if env is None:
            raise click.UsageError(f"give --credential-file FILE or set ${CREDENTIAL_ENV}")
        data = env.encode("utf-8")
    credential = data.strip()
    if not credential or b"\n" in credential or len(credential) > MAX_CREDENTIAL_BYTES:
        raise click.BadParameter("must hold the credential on one line", param_hint="'--credential-file'")
    return credential


def server_address(text):
    try:
        return parse_address(text)
    except InvalidParameter as exc:
        raise bad_parameter(exc)


def checked_pin(pin):
    if pin is None:
        return None
    try:
        return tls.parse_pin(pin)
    except InvalidParameter as exc:
        raise bad_parameter(exc)


def _first_use(address, fingerprint):
    click.echo(f"note: trusting {address} on first use ({fingerprint}); remembered in "
               f"{tls.known_servers_path()}", err=True)


def run_client(coroutine):
    """Run a client coroutine; network and refusal errors end with exit code 3."""
    try:
        return asyncio.run(coroutine)
    except tls.FingerprintMismatch as exc:
        click.echo(f"error: {exc}", err=True)
    except Refused:
        click.echo("error: the server refused the request", err=True)
    except (OSError, asyncio.TimeoutError) as exc:
        click.echo(f"error: cannot talk to the server: {exc.strerror or type(exc).__name__}"
                   if isinstance(exc, OSError) else "error: the server did not answer in time", err=True)
    except OtpfastError:
        click.echo("error: the server closed the connection or broke the protocol", err=True)
    sys.exit(EXIT_UNAVAILABLE)


def _wire_name(ctx, param, value):
    """Account and client names must fit the protocol (printable, 1..128 UTF-8 bytes)."""
    if value is not None and not (value.isprintable() and 1 <= len(value.encode("utf-8")) <= NAME_LIMIT):
        raise click.BadParameter(f"must be printable text of 1 to {NAME_LIMIT} bytes")
    return value


def otp_fits_the_protocol(otp):
    return otp.isprintable() and 1 <= len(otp.encode("utf-8")) <= OTP_LIMIT


def _authority_id(ctx, param, value):
    if value is not None and value >= 2**31:
        raise click.BadParameter("must be below 2**31")
    return value


server_option = click.option("--server", required=True, metavar="HOST:PORT", help="Server address.")
pin_option = click.option("--pin", default=None, metavar="sha256:HEX",
                          help="Expected server key pin, sha256:HEX of its public key as `otpfast fingerprint` "
                               "prints it (else trust on first use).")
credential_option = click.option("--credential-file", type=click.Path(dir_okay=False), default=None,
                                 help=f"File holding the credential (else ${CREDENTIAL_ENV}).")
account_option = click.option("--account", required=True, callback=_wire_name, help="Account name.")
cluster_option = click.option(
    "--cluster", "cluster_path", type=click.Path(dir_okay=False), default=None,
    help="tprf tokens: the cluster file (share servers, pins, public DKG results).")
timeout_option = click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
                              help="Seconds to wait for the server.")


# -- contribute -----------------------------------------------------------------------------
def stdin_is_terminal():
    return sys.stdin.isatty()


def ask_value():
    """The operator's integer: prompted (re-asked on bad input) on a terminal, else one line
    of stdin. Only what otpfast.phrase takes: a non-negative integer of at most 1024 bytes."""
    def checked(text):
        n = INT.convert(text, None, None)
        if n < 0 or n.bit_length() > 8 * 1024:
            raise click.BadParameter(f"the integer must be 0 or more and fit in 1024 bytes, got {text.strip()}")
        return n

    if stdin_is_terminal():
        # a bad answer is re-asked with a message naming what is asked for (not --value)
        return click.prompt("Enter an integer (decimal or 0x-hex, 0 or more)", value_proc=checked)
    line = sys.stdin.readline()
    if not line.strip():
        raise click.UsageError("no --value given and stdin is empty (give --value INT or pipe an integer)")
    try:
        return checked(line.strip())
    except click.BadParameter as exc:
        raise click.UsageError(f"stdin does not hold a usable integer: {exc.message}") from None


def _ceremony_key(public_key_pem):
    """The key server's public key (received over the pinned TLS connection), checked."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise Refused("the key server's public key is not an RSA key of at least 2048 bits")
    return public_key_pem


async def _signed_transcript(client, pem, account):
    from otpfast.services.keyserver import check_transcript

    transcript, signature = await client.transcript(account)
    if not check_transcript(pem, account, transcript, signature):
        raise Refused("the transcript is not signed by the key server")
    return transcript


async def contribute_async(host, port, *, pin, account, authority_id, credential, phrase_data,
                           timeout=10.0, on_first_use=_first_use):
    """Authenticate as the authority, send the encrypted phrase, check the signed receipt;
    return (receipt, transcript or None while other authorities have not contributed)."""
    from otpfast.services.keyserver import check_receipt, encrypt_phrase

    async with connect(host, port, pin=pin, timeout=timeout, on_first_use=on_first_use) as client:
        pem = _ceremony_key(await client.public_key())
        await client.authenticate_authority(authority_id, credential)
        ciphertext = encrypt_phrase(pem, phrase_data, account, authority_id)
        receipt = await client.contribute(account, ciphertext)
        if not check_receipt(pem, account, authority_id, ciphertext, receipt.receipt, receipt.signature):
            raise Refused("the receipt is not signed by the key server")
        transcript = None if receipt.remaining else await _signed_transcript(client, pem, account)
        return receipt.receipt, transcript


@click.command()
@server_option
@click.option("--authority", "authority_id", type=POSITIVE_INT, required=True, callback=_authority_id,
              help="Authority id.")
@credential_option
@account_option
@click.option("--value", type=INT, default=None, help="The operator's integer (else asked for).")
@pin_option
@timeout_option
def contribute(server, authority_id, credential_file, account, value, pin, timeout):
    """Key-generation client: send this authority's secret phrase for ACCOUNT's ceremony."""
    from otpfast.phrase import secret_phrase

    host, port = server_address(server)
    pin = checked_pin(pin)
    credential = read_credential(credential_file)
    if value is None:
        value = ask_value()
    try:
        phrase = secret_phrase(authority_id, value)
    except InvalidParameter as exc:
        raise bad_parameter(exc)
    receipt, transcript = run_client(contribute_async(
        host, port, pin=pin, account=account, authority_id=authority_id, credential=credential,
        phrase_data=phrase.data, timeout=timeout))
    click.echo(f"contributed to {account} as authority {authority_id} ({phrase.algorithm})")
    click.echo(f"receipt {receipt.hex()} (signed by the key server)")
    if transcript is not None:
        click.echo(f"transcript {transcript.hex()} (ceremony complete, signed by the key server)")


async def transcript_async(host, port, *, pin, account, authority_id, credential, timeout=10.0,
                           on_first_use=_first_use):
    async with connect(host, port, pin=pin, timeout=timeout, on_first_use=on_first_use) as client:
        pem = _ceremony_key(await client.public_key())
        await client.authenticate_authority(authority_id, credential)
        return await _signed_transcript(client, pem, account)


@click.group("ceremony")
def ceremony_group():
    """Key ceremony, the authorities' side."""


@ceremony_group.command("transcript")
@server_option
@click.option("--authority", "authority_id", type=POSITIVE_INT, required=True, callback=_authority_id,
              help="Authority id.")
@credential_option
@account_option
@pin_option
@timeout_option
def ceremony_transcript(server, authority_id, credential_file, account, pin, timeout):
    """Fetch ACCOUNT's ceremony transcript once it is complete and check the key server's
    signature on it (exit 3 while the ceremony is pending or if the signature is wrong)."""
    host, port = server_address(server)
    pin = checked_pin(pin)
    credential = read_credential(credential_file)
    transcript = run_client(transcript_async(host, port, pin=pin, account=account, authority_id=authority_id,
                                             credential=credential, timeout=timeout))
    click.echo(f"transcript {transcript.hex()} (signed by the key server)")


# -- request --------------------------------------------------------------------------------
async def request_async(host, port, *, pin, client_name, credential, account, timeout=10.0,
                        on_first_use=_first_use):
    """Authenticate, request the next OTP of ``account`` (unmasked and checked by the client);
    return (otp, expires_at)."""
    async with connect(host, port, pin=pin, timeout=timeout, on_first_use=on_first_use) as client:
        await client.authenticate(client_name, credential)
        try:
            issued = await client.request(account)
        except InvalidToken:
            raise Refused("the response was not made for this session or was altered") from None
    return issued.otp, issued.expires_at


@click.command()
@click.option("--server", default=None, metavar="HOST:PORT", help="Distribution server address.")
@cluster_option
@click.option("--client", "client_name", required=True, callback=_wire_name, help="This client's name.")
@credential_option
@account_option
@pin_option
@timeout_option
def request(server, cluster_path, client_name, credential_file, account, pin, timeout):
    """Request the next OTP of ACCOUNT from a distribution server (--server), or combine a
    tprf token's OTP from t share servers (--cluster); print it."""
    if (server is None) == (cluster_path is None):
        raise click.UsageError("give either --server (a distribution server) or --cluster (tprf share servers)")
    if cluster_path is not None:
        if pin is not None:
            raise click.UsageError("--pin is not used with --cluster (the cluster file holds the pins)")
        from otpfast_cli.tprf import request_tprf
        click.echo(request_tprf(cluster_path, client_name, credential_file, account, timeout))
        return
    host, port = server_address(server)
    pin = checked_pin(pin)
    credential = read_credential(credential_file)
    otp, _expires_at = run_client(request_async(host, port, pin=pin, client_name=client_name,
                                                credential=credential, account=account, timeout=timeout))
    click.echo(otp)


# -- verify ---------------------------------------------------------------------------------
async def verify_async(host, port, *, pin, client_name, credential, account, otp, timeout=10.0,
                       on_first_use=_first_use):
    async with connect(host, port, pin=pin, timeout=timeout, on_first_use=on_first_use) as client:
        await client.authenticate(client_name, credential)
        return await client.verify(account, otp)


@click.command()
@click.option("--server", default=None, metavar="HOST:PORT",
              help="Verify over the network (else against the local data directory).")
@cluster_option
@click.option("--client", "client_name", default=None, callback=_wire_name,
              help="Verifier client name (with --server or --cluster).")
@credential_option
@account_option
@pin_option
@timeout_option
@data_dir_option
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object instead of the word: {"account": A, "accepted": '
                   'true|false, "result": "accepted"|"rejected"} (exit codes unchanged).')
@click.argument("otp")
def verify(server, cluster_path, client_name, credential_file, account, pin, timeout, data_dir, as_json, otp):
    """Verify OTP for ACCOUNT: exit 0 if accepted, 1 if rejected (2: usage error, e.g. no data
    directory there; 3: server or store unavailable, or this client refused). With --cluster
    (a tprf token) t share servers each consume the counter before answering."""
    from otpfast.services.otp_input import typed_otp_problem

    problem = typed_otp_problem(otp)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="'OTP'")
    if cluster_path is not None:
        for name, value in (("--server", server), ("--data-dir", data_dir), ("--pin", pin)):
            if value is not None:
                raise click.UsageError(f"{name} is not used with --cluster")
        if client_name is None:
            raise click.UsageError("--client is required with --cluster")
        from otpfast_cli.tprf import verify_tprf
        ok = otp_fits_the_protocol(otp) and verify_tprf(cluster_path, client_name, credential_file, account,
                                                        otp, timeout)
    elif server is not None:
        if data_dir is not None:
            raise click.UsageError("give either --server or --data-dir, not both")
        if client_name is None:
            raise click.UsageError("--client is required with --server")
        host, port = server_address(server)
        pin = checked_pin(pin)
        credential = read_credential(credential_file)
        # an OTP the protocol cannot even carry is simply not a valid OTP
        ok = otp_fits_the_protocol(otp) and run_client(verify_async(
            host, port, pin=pin, client_name=client_name, credential=credential, account=account, otp=otp,
            timeout=timeout))
    else:
        for name, value in (("--client", client_name), ("--credential-file", credential_file), ("--pin", pin)):
            if value is not None:
                raise click.UsageError(f"{name} is only used with --server or --cluster")
        ok = verify_local(data_dir, account, otp)
    result = "accepted" if ok else "rejected"
    if as_json:
        click.echo(json.dumps({"account": account, "accepted": ok, "result": result},
                              sort_keys=True))
    else:
        click.echo(result)
    sys.exit(0 if ok else EXIT_REJECTED)


def verify_local(data_dir, account, otp):
    from otpfast.datadir import DataDir

    try:
        distribution = DataDir.resolve(data_dir).distribution()
    except InvalidParameter as exc:
        raise bad_parameter(exc)
    except DATA_DIR_ERRORS as exc:
        raise data_dir_error(exc) from None
    except OtpfastError as exc:  # not a data directory, wrong at-rest key: not a rejection
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    try:
        distribution.verify(account, otp, source="cli")
    except InvalidToken:
        _explain_exhausted(distribution.store, account)
        return False
    finally:
        distribution.store.close()
    return True


def _explain_exhausted(store, account):
    """The admin's side (local verify): say when a hash chain has no use left."""
    from otpfast.services.tokens import uses_left

    record = store.account(account)
    if record is not None and uses_left(record) == 0:
        click.echo(f"note: the hash chain of {account} is used up (0 uses left): it issues and "
                   "accepts no more OTPs; create a new account for this user", err=True)
