"""The ``otpfast`` command group. Each command lives in its own thin module."""
import click

from otpfast import __version__


@click.group(context_settings={"auto_envvar_prefix": "OTPFAST", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="otpfast")
def cli():
    """otpfast: generate, distribute and verify one-time passwords."""


@cli.group()
def batch():
    """Generate (or --check) large batches of OTPs at C speed, no server."""


# --- command registrations: one import + add_command per module (insert lines here) ---
from otpfast_cli.batch_otp import hashchain_command, hotp_command, totp_command  # noqa: E402
from otpfast_cli.enroll_uri import enroll_uri_command, qr_command  # noqa: E402

batch.add_command(hotp_command)
batch.add_command(totp_command)
batch.add_command(hashchain_command)
cli.add_command(enroll_uri_command)
cli.add_command(qr_command)
from otpfast_cli.krb5 import krb5_group  # noqa: E402

cli.add_command(krb5_group)
from otpfast_cli.admin import COMMANDS as _ADMIN_COMMANDS  # noqa: E402

for _command in _ADMIN_COMMANDS:
    cli.add_command(_command)
from otpfast_cli.clients import contribute, request, verify  # noqa: E402
from otpfast_cli.servers import distserver, keyserver, serve  # noqa: E402

for _command in (keyserver, distserver, serve, contribute, request, verify):
    cli.add_command(_command)
from otpfast_cli.demo import demo  # noqa: E402

cli.add_command(demo)
from otpfast_cli.batch_rsa import rsa_lfsr, rsa_primroot  # noqa: E402
from otpfast_cli.lfsr import lfsr_group  # noqa: E402

batch.add_command(rsa_lfsr)
batch.add_command(rsa_primroot)
cli.add_command(lfsr_group)
