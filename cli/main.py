"""The ``otpfast`` command group. Each command lives in its own thin module, imported only
when that command runs (so `otpfast batch ...` does not pay for the server stack)."""
import importlib

import click

from otpfast import __version__
from otpfast.errors import ThresholdUnavailable


class LazyGroup(click.Group):
    """A group whose subcommands are ``"module:attribute"`` strings, imported on first use."""

    def __init__(self, *args, lazy_commands=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx, name):
        if name in self.lazy_commands and name not in self.commands:
            module, attribute = self.lazy_commands[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)


class RootGroup(LazyGroup):
    """The ``otpfast`` group: a missing optional libsodium is an error message, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ThresholdUnavailable as exc:
            raise click.ClickException(str(exc)) from None


_BATCH = {
    "rsa-lfsr": "otpfast_cli.batch_rsa:rsa_lfsr",
    "rsa-primroot": "otpfast_cli.batch_rsa:rsa_primroot",
    "hotp": "otpfast_cli.batch_otp:hotp_command",
    "totp": "otpfast_cli.batch_otp:totp_command",
    "hashchain": "otpfast_cli.batch_otp:hashchain_command",
}

_COMMANDS = {
    "init": "otpfast_cli.admin:init_command",
    "fingerprint": "otpfast_cli.admin:fingerprint_command",
    "authority": "otpfast_cli.admin:authority_group",
    "client": "otpfast_cli.admin:client_group",
    "account": "otpfast_cli.admin:account_group",
    "enroll": "otpfast_cli.admin:enroll_command",
    "audit": "otpfast_cli.admin:audit_group",
    "token": "otpfast_cli.tokens:token_group",
    "keyserver": "otpfast_cli.servers:keyserver",
    "distserver": "otpfast_cli.servers:distserver",
    "serve": "otpfast_cli.servers:serve",
    "share-server": "otpfast_cli.shares:share_server_group",
    "contribute": "otpfast_cli.clients:contribute",
    "ceremony": "otpfast_cli.clients:ceremony_group",
    "request": "otpfast_cli.clients:request",
    "verify": "otpfast_cli.clients:verify",
    "demo": "otpfast_cli.demo:demo",
    "enroll-uri": "otpfast_cli.enroll_uri:enroll_uri_command",
    "qr": "otpfast_cli.enroll_uri:qr_command",
    "krb5": "otpfast_cli.krb5:krb5_group",
    "lfsr": "otpfast_cli.lfsr:lfsr_group",
    "rotate": "otpfast_cli.operations:rotate_group",
    "backup": "otpfast_cli.operations:backup_group",
}


@click.group(cls=RootGroup, lazy_commands=_COMMANDS,
             context_settings={"auto_envvar_prefix": "OTPFAST", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="otpfast")
def cli():
    """otpfast: generate, distribute and verify one-time passwords."""


@cli.group(cls=LazyGroup, lazy_commands=_BATCH)
def batch():
    """Generate (or --check) large batches of OTPs at C speed, no server."""
