"""``otpfast demo``: the whole story on loopback, in a fresh temporary data directory.

init -> four authorities authenticate (challenge-response, the credential never sent) and
contribute (SHA-256/512/384/512 secret phrases, RSA-OAEP over TLS with the pinned fingerprint),
each receiving a signed receipt, the last one the signed transcript -> a device requests an
OTP -> a verifier accepts it -> the replay is refused -> a wrong OTP is refused. One line per step; exit 0 iff every step behaved.
"""
import asyncio
import secrets
import sys
import tempfile

import click

from otpfast.errors import OtpfastError

AUTHORITIES = (1, 2, 3, 4)
ACCOUNT = "alice"
DEVICE = "alice-phone"
VERIFIER = "login-service"


class Steps:
    def __init__(self):
        self.failed = 0

    def report(self, what, ok, detail=""):
        click.echo(f"{what:<72} {'ok' if ok else 'FAILED'}{('  ' + detail) if detail else ''}")
        if not ok:
            self.failed += 1
        return ok


def _wrong_otp(otp):
    last = otp[-1]
    return otp[:-1] + ("1" if last == "0" else "0")


async def _story(datadir, fingerprint, credentials, steps, scheme):
    from otpfast.net import tls
    from otpfast.net._stream import bound_address
    from otpfast.net.address import format_address
    from otpfast.net.server import serve_combined
    from otpfast.net.verifier import AsyncVerifier
    from otpfast.phrase import secret_phrase
    from otpfast_cli.clients import contribute_async, request_async, verify_async

    keyserver = datadir.keyserver()
    distribution = datadir.distribution()
    verifier = AsyncVerifier(distribution)
    server = await serve_combined(keyserver, verifier, tls.server_context(datadir), "127.0.0.1", 0)
    host, port = bound_address(server)
    steps.report(f"serve: key + distribution server on {format_address(host, port)} (TLS)", True)
    common = dict(pin=fingerprint, on_first_use=None)
    try:
        for authority_id in AUTHORITIES:
            value = secrets.randbelow(10**9)
            phrase = secret_phrase(authority_id, value)
            try:
                receipt, transcript = await contribute_async(
                    host, port, account=ACCOUNT, authority_id=authority_id,
                    credential=credentials[f"authority {authority_id}"], phrase_data=phrase.data, **common)
                ok, detail = True, f"signed receipt {receipt.hex()[:16]}..."
                if transcript is not None:
                    detail += f", signed transcript {transcript.hex()[:16]}..."
            except OtpfastError as exc:
                ok, detail = False, type(exc).__name__
            steps.report(f"authority {authority_id} contributes a {phrase.algorithm} secret phrase", ok, detail)
        active = datadir.admin().account(ACCOUNT).state == "active"
        steps.report(f"ceremony complete: {ACCOUNT}'s {scheme} secret derived from all four", active)

        try:
            otp, _expires_at = await request_async(host, port, client_name=DEVICE, credential=credentials[DEVICE],
                                                   account=ACCOUNT, **common)
            steps.report(f"{DEVICE} requests an OTP (masked with a per-connection key)", True, otp)
        except OtpfastError as exc:
            steps.report(f"{DEVICE} requests an OTP (masked with a per-connection key)", False,
                         type(exc).__name__)
            return

        async def check(otp_value):
            return await verify_async(host, port, client_name=VERIFIER, credential=credentials[VERIFIER],
                                      account=ACCOUNT, otp=otp_value, **common)
        steps.report(f"{VERIFIER} verifies it: accepted", await check(otp) is True)
        steps.report(f"{VERIFIER} verifies it again (replay): refused", await check(otp) is False)
        steps.report(f"{VERIFIER} verifies a wrong OTP: refused", await check(_wrong_otp(otp)) is False)
    finally:
        server.close()
        await server.wait_closed()
        await verifier.aclose()
        keyserver.store.close()
        distribution.store.close()


@click.command()
@click.option("--scheme", type=click.Choice(["rsa-prf", "hotp", "hashchain"]), default="rsa-prf",
              show_default=True, help="Account type of the demo account (server-issued types).")
@click.option("--keep", is_flag=True, help="Keep the temporary data directory (its path is printed).")
@click.option("--threshold", is_flag=True,
              help="Threshold OTPs instead: 5 share servers, t = 3, a DKG, issue and verify through "
                   "different quorums, replays refused, servers killed.")
def demo(scheme, keep, threshold):
    """Run the whole ceremony -> issue -> verify -> replay-refused story on loopback."""
    from otpfast.datadir import DataDir

    steps = Steps()
    if threshold:
        from otpfast import tprf
        from otpfast_cli.demo_threshold import run

        tprf.require()

        run(steps, keep)
        _finish(steps)
        return
    tmp = tempfile.mkdtemp(prefix="otpfast-demo-")
    datadir = DataDir(tmp)
    try:
        fingerprint = datadir.init()
        steps.report(f"init: store, RSA key, TLS certificate in {tmp}", True, fingerprint[:23] + "...")
        admin = datadir.admin()
        credentials = {}
        for authority_id in AUTHORITIES:
            credentials[f"authority {authority_id}"] = admin.add_authority(authority_id).encode()
        admin.add_account(ACCOUNT, scheme, authorities=list(AUTHORITIES))
        credentials[DEVICE] = admin.add_client(DEVICE, account=ACCOUNT).encode()
        credentials[VERIFIER] = admin.add_client(VERIFIER, verifier=True).encode()
        admin.store.close()
        steps.report(f"admin: authorities 1-4, account {ACCOUNT} ({scheme}), 2 clients", True)
        asyncio.run(_story(datadir, fingerprint, credentials, steps, scheme))
        store = datadir.open_store()
        try:
            report = store.verify_audit()
        finally:
            store.close()
        steps.report(f"audit log: {report.entries} hash-chained entries intact", report.first_bad is None)
    finally:
        if keep:
            click.echo(f"data directory kept: {tmp}")
        else:
            datadir.remove()
    _finish(steps)


def _finish(steps):
    if steps.failed:
        click.echo(f"demo FAILED: {steps.failed} step(s) misbehaved")
        sys.exit(1)
    click.echo("demo ok: every step behaved")
