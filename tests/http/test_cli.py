"""`serve`/`distserver --http`: bad values exit 2 naming the option, before anything listens."""
import pytest
from click.testing import CliRunner

from otpfast_cli.main import cli


@pytest.mark.parametrize("command", ["serve", "distserver"])
@pytest.mark.parametrize("args,option", [
    (["--http-allow", "127.0.0.1/32"], "--http-allow"),                     # without --http
    (["--http", "127.0.0.1:0", "--http-allow", "10.0.0.0/33"], "--http-allow"),
    (["--http", "127.0.0.1:0", "--http-allow", "127.0.0.1,nonsense"], "--http-allow"),
    (["--http", "no-port"], "--http"),
    (["--http", "127.0.0.1:99999"], "--http"),
])
def test_bad_http_options_exit_2_naming_the_option(tmp_path, command, args, option):
    result = CliRunner().invoke(cli, [command, "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), *args])
    assert result.exit_code == 2 and f"'{option}'" in result.output, result.output
