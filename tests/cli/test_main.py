import subprocess
import sys

import click
from click.testing import CliRunner

from otpfast_cli.main import _BATCH, _COMMANDS, batch, cli


def test_main_every_lazy_command_resolves_to_its_name():
    ctx = click.Context(cli)
    for group, table in ((cli, _COMMANDS), (batch, _BATCH)):
        for name in table:
            command = group.get_command(ctx, name)
            assert isinstance(command, click.Command), name
            assert command.name == name


def test_main_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in _COMMANDS:
        assert name in result.output


def test_main_batch_command_does_not_import_the_server_stack():
    code = ("import sys; from otpfast_cli.main import cli; "
            "cli(['batch', 'rsa-lfsr', '--help'], standalone_mode=False); "
            "print('asyncio' in sys.modules, 'otpfast.store' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_main_unknown_command_exits_2():
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
