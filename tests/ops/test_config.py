"""`--config FILE` (TOML) and `--log-format json` of the server commands."""
import json
import pathlib
import socket
import ssl
import subprocess
import sys
import time
import tomllib

import pytest
from click.testing import CliRunner

from otpfast.datadir import DataDir
from otpfast_cli.main import cli
from ..conftest import stop_process

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def _options(command):
    return {max(param.opts, key=len)[2:] for param in command.params
            if param.name not in ("config", "help") and any(o.startswith("--") for o in param.opts)}


def test_config_example_in_docs_has_every_serve_option():
    from otpfast_cli.servers import distserver, keyserver, serve

    keys = set(tomllib.loads((DOCS / "otpfast.toml").read_text()))
    assert keys == _options(serve)
    assert _options(distserver) <= keys and _options(keyserver) <= keys


@pytest.mark.parametrize("command", ["serve", "distserver", "keyserver"])
@pytest.mark.parametrize("text, named", [
    ("listen = '127.0.0.1:0'\nno-such-option = 1\n", "no-such-option"),
    ("listen = '127.0.0.1:0'\nmax-connections = 0\n", "max-connections"),
    ("listen = '127.0.0.1:0'\nverbose = 'yes'\n", "verbose"),
    ("listen = '127.0.0.1:0'\nlog-format = 'xml'\n", "log-format"),
    ("listen = '127.0.0.1:0'\nfailures-per-source = '0,5'\n", "failures-per-source"),
    ("listen = [1, 2]\n", "listen"),
    ("listen = \n", "not TOML"),
])
def test_config_bad_key_or_value_exits_2_naming_it(tmp_path, command, text, named):
    config = tmp_path / "c.toml"
    config.write_text(text)
    result = CliRunner().invoke(cli, [command, "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "--config" in result.output and named in result.output


def test_config_missing_file_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["serve", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "--config" in result.output


def test_config_values_are_used_and_the_command_line_overrides_them(tmp_path):
    """The file gives every value; a command-line option wins over its key."""
    data_dir = DataDir(str(tmp_path / "data"))
    data_dir.init(rsa_bits=2048)
    config = tmp_path / "c.toml"
    # a port in the file that cannot be bound: the command line's --listen must win
    config.write_text(f'listen = "192.0.2.1:1"\ndata-dir = "{data_dir.path}"\nlog-format = "json"\n'
                      'verbose = true\nmax-connections = 64\n')
    proc = subprocess.Popen([sys.executable, "-m", "otpfast_cli", "serve", "--config", str(config),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        listening = proc.stdout.readline()
        assert listening.startswith("listening 127.0.0.1:")
        assert proc.stdout.readline().strip() == f"fingerprint {data_dir.fingerprint()}"
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        port = int(listening.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw):
            pass
        time.sleep(0.3)
    finally:
        stop_process(proc)
        out, err = proc.communicate()
    lines = [json.loads(line) for line in err.splitlines()]        # every line is one JSON object
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["logger"] == "otpfast.net.verifier" for line in lines)     # verbose = true
    opened = [line for line in lines if line.get("event") == "opened"]         # a structured field
    assert opened and opened[0]["peer"].startswith("127.0.0.1:")


def test_log_format_json_has_structured_fields_and_no_secret(tmp_path):
    """The JSON formatter: the standard keys, the call's extra fields, the traceback."""
    import logging

    from otpfast_cli.logs import JsonFormatter

    record = logging.LogRecord("otpfast.server", logging.ERROR, __file__, 1, "reload %s", ("refused",), None)
    record.peer = "192.0.2.7"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys as _sys
        record.exc_info = _sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "reload refused" and entry["level"] == "ERROR"
    assert entry["logger"] == "otpfast.server" and entry["peer"] == "192.0.2.7"
    assert entry["time"].endswith("Z") and "ValueError: boom" in entry["exception"]


def test_log_format_bad_value_exits_2():
    result = CliRunner().invoke(cli, ["serve", "--listen", "127.0.0.1:0", "--log-format", "xml"])
    assert result.exit_code == 2 and "--log-format" in result.output


def test_failure_throttle_defaults_are_the_policy_constants():
    from otpfast.services import policy
    from otpfast_cli.servers import _DEFAULT_FAILURES, FailureRate

    rate = FailureRate().convert(_DEFAULT_FAILURES, None, None)
    assert rate == policy.FAILED_PER_SOURCE == policy.FAILED_PER_CLIENT
    result = CliRunner().invoke(cli, ["serve", "--listen", "127.0.0.1:0", "--failures-per-client", "5"])
    assert result.exit_code == 2 and "--failures-per-client" in result.output
