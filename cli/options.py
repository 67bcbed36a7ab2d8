"""Shared click parameter types and options."""
import sys

import click

from otpfast.errors import InvalidParameter, NotInitialised, StoreOutdated


class IntLiteral(click.ParamType):
    """An integer written in decimal or 0x-hex (``0x100009``)."""

    name = "INT"

    def __init__(self, min=None):
        self.min = min

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            n = value
        else:
            text = str(value).strip().replace("_", "")
            try:
                n = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
            except ValueError:
                self.fail(f"{value!r} is not a decimal or 0x-hex integer", param, ctx)
            if not text.isascii():
                self.fail(f"{value!r} is not a decimal or 0x-hex integer", param, ctx)
        if self.min is not None and n < self.min:
            self.fail(f"must be at least {self.min}, got {n}", param, ctx)
        return n


INT = IntLiteral()
POSITIVE_INT = IntLiteral(min=1)


def bad_parameter(exc: InvalidParameter, ctx=None):
    """Turn a library InvalidParameter into click's usage error (exit 2) naming the option."""
    name = exc.field if exc.field.startswith("-") else f"--{exc.field.replace('_', '-')}"
    return click.BadParameter(exc.message, ctx=ctx, param_hint=f"'{name}'")


# the data-dir problems the user fixes with a command (`otpfast init [--upgrade]`): exit 2
DATA_DIR_ERRORS = (NotInitialised, StoreOutdated)


def data_dir_error(exc):
    """NotInitialised / StoreOutdated -> click's usage error (exit 2) naming --data-dir."""
    return click.BadParameter(str(exc), param_hint="'--data-dir'")


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Data directory (default: $OTPFAST_DATA_DIR or the XDG data dir).",
)


def warn_secret_in_argv(ctx, *names, env_hint):
    """A secret given on the command line is readable by every local user (the process
    list, shell history): say so on stderr and name the environment variable that keeps it
    off argv. The option still works (scripts keep running)."""
    for name in names:
        if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
            click.echo(f"warning: a secret on the command line is visible to other local users "
                       f"(process list, shell history); prefer {env_hint}", err=True)
            return


def exit_if_broken(report, *, log: str, entry: str, rows: str) -> None:
    """Exit 1 after naming what an integrity check (an AuditReport) found: the first broken
    ``entry`` of ``log``, or the refused ``rows``."""
    if report.first_bad is not None:
        click.echo(f"{log} BROKEN at {entry} {report.first_bad}: {report.reason}", err=True)
        sys.exit(1)
    if report.bad_rows:
        click.echo(f"{rows} REFUSED ({len(report.bad_rows)}):", err=True)
        for problem in report.bad_rows:
            click.echo(f"  {problem}", err=True)
        sys.exit(1)
