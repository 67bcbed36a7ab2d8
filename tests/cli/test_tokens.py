"""``otpfast token ...`` and ``account set-pin`` (the logic is tested in tests/services)."""
import json
import re

import pytest
from click.testing import CliRunner

from otpfast.datadir import DataDir
from otpfast.hotp import HOTP
from otpfast.keyuri import parse_uri
from otpfast_cli.main import cli


@pytest.fixture
def run(tmp_path, monkeypatch):
    for var in ("OTPFAST_AT_REST_KEY", "OTPFAST_DATA_DIR", "OTPFAST_CREDENTIAL"):
        monkeypatch.delenv(var, raising=False)
    data_dir = str(tmp_path / "data")
    runner = CliRunner()

    def invoke(*args, input=None):
        if args[0] in ("account", "token"):
            args = [*args[:2], "--data-dir", data_dir, *args[2:]]
        else:
            args = [args[0], "--data-dir", data_dir, *args[1:]]
        return runner.invoke(cli, args, input=input)

    assert invoke("init", "--rsa-bits", "2048").exit_code == 0
    invoke.data_dir = data_dir
    return invoke


def _main_key(data_dir, user):
    store = DataDir(data_dir).open_store()
    try:
        return bytes.fromhex(store.account(user).material["key"])
    finally:
        store.close()


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_token_cli_lifecycle(run):
    _ok(run("account", "add", "alice", "--type", "hotp"))
    [main] = [json.loads(line) for line in _ok(run("token", "list", "alice", "--json"))
              .stdout.splitlines()]
    assert main["main"] and main["enabled"] and main["type"] == "hotp"
    added = _ok(run("token", "add", "alice", "--type", "totp", "--digits", "8",
                    "--description", "phone"))
    serial = re.search(r"token (OTPF\d{8})", added.stderr).group(1)
    uri = added.stdout.strip()
    assert parse_uri(uri).digits == 8
    listed = _ok(run("token", "list")).stdout
    assert serial in listed and main["serial"] in listed and "phone" in listed
    shown = json.loads(_ok(run("token", "show", serial, "--json")).stdout)
    assert (shown["type"], shown["digits"], shown["enabled"]) == ("totp", 8, True)
    assert "key" not in json.dumps(shown)
    _ok(run("token", "disable", serial))
    assert json.loads(run("token", "show", serial, "--json").stdout)["enabled"] is False
    _ok(run("token", "enable", serial))
    result = run("token", "delete", main["serial"], "--yes")
    assert result.exit_code == 2 and "SERIAL" in result.output
    _ok(run("token", "delete", serial, "--yes"))
    assert run("token", "show", serial).exit_code == 2


def test_token_cli_bad_input_names_the_option(run):
    _ok(run("account", "add", "alice", "--type", "totp"))
    result = run("token", "add", "alice", "--type", "hashchain")
    assert result.exit_code == 2 and "--type" in result.output
    result = run("token", "add", "nobody", "--type", "totp")
    assert result.exit_code == 2 and "USER" in result.output
    result = run("token", "add", "alice", "--type", "totp", "--count", "3")
    assert result.exit_code == 2 and "--count" in result.output


def test_token_cli_resync_and_verify(run):
    _ok(run("account", "add", "alice", "--type", "hotp"))
    [main] = [json.loads(line) for line in run("token", "list", "--json").stdout.splitlines()]
    device = HOTP(_main_key(run.data_dir, "alice"))
    assert run("verify", "--account", "alice", device.generate(400)).exit_code != 0
    result = _ok(run("token", "resync", main["serial"], device.generate(400),
                     device.generate(401)))
    assert "counter 402" in result.output
    _ok(run("verify", "--account", "alice", device.generate(402)))
    result = run("token", "resync", main["serial"], "123456", "654321")
    assert result.exit_code == 1 and "nothing changed" in result.output


def test_token_cli_recovery_codes(run):
    _ok(run("account", "add", "alice", "--type", "totp"))
    result = _ok(run("token", "add", "alice", "--type", "recovery", "--count", "10"))
    codes = result.stdout.split()
    assert len(codes) == 10 and all(re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){2}", c)
                                    for c in codes)
    serial = re.search(r"token (OTPF\d{8})", result.stderr).group(1)
    _ok(run("verify", "--account", "alice", codes[0]))
    assert run("verify", "--account", "alice", codes[0]).exit_code != 0
    assert json.loads(run("token", "show", serial, "--json").stdout)["remaining"] == 9


def test_account_set_pin_from_stdin_and_file(run, tmp_path):
    _ok(run("account", "add", "alice", "--type", "hotp"))
    device = HOTP(_main_key(run.data_dir, "alice"))
    _ok(run("account", "set-pin", "alice", input="2468\n"))
    assert run("verify", "--account", "alice", device.generate(0)).exit_code != 0
    _ok(run("verify", "--account", "alice", "2468" + device.generate(1)))
    shown = _ok(run("account", "show", "alice")).stdout
    assert "pin: True" in shown and "salt" not in shown and "hash" not in shown
    pin_file = tmp_path / "pin"
    pin_file.write_text("new pin 1\n")
    _ok(run("account", "set-pin", "alice", "--pin-file", str(pin_file)))
    _ok(run("verify", "--account", "alice", "new pin 1" + device.generate(2)))
    result = run("account", "set-pin", "alice", input="12\n")
    assert result.exit_code == 2 and "4..64" in result.output
    _ok(run("account", "set-pin", "alice", "--remove"))
    _ok(run("verify", "--account", "alice", device.generate(3)))
