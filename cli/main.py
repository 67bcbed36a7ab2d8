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
