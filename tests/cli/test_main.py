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


# --- enroll-uri / qr / enroll: bad URIs exit 2, QR files are private -------------------------

import base64  # noqa: E402
import os  # noqa: E402
import stat  # noqa: E402

import pytest  # noqa: E402

KEY_B32 = base64.b32encode(b"12345678901234567890").decode()
GOOD_URI = f"otpauth://totp/alice?secret={KEY_B32}"


def _run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.mark.parametrize("uri,message", [
    (f"otpauth://totp/%ff?secret={KEY_B32}", "label: not percent-encoded UTF-8"),
    (f"otpauth://totp/a?secret={KEY_B32}&issuer=%c3", "not percent-encoded UTF-8"),
    (f"otpauth://[::1/a?secret={KEY_B32}", "malformed URI"),
    (f"otpauth://totp/a?secret={KEY_B32}&digits=" + "9" * 5000, "too long"),
    (f"otpauth://totp/a?secret={KEY_B32}&issuer=" + "x" * 3000, "too long for a QR code"),
])
def test_qr_malformed_uri_exits_2_naming_the_argument(uri, message):
    result = _run("qr", uri)  # catch_exceptions=False: a traceback fails the test
    assert result.exit_code == 2, result.output
    assert "Invalid value for 'URI'" in result.stderr and message in result.stderr
    assert KEY_B32 not in result.stderr


def test_qr_malformed_uri_in_a_real_process_has_no_traceback():
    out = subprocess.run([sys.executable, "-m", "otpfast_cli", "qr", f"otpauth://totp/%ff?secret={KEY_B32}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "'URI'" in out.stderr


def test_qr_reads_the_uri_from_stdin(tmp_path):
    result = _run("qr", "-", "--out", str(tmp_path / "code.png"), input=GOOD_URI + "\n")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "code.png").read_bytes()[:4] == b"\x89PNG"
    assert _run("qr", "-", input="otpauth://totp/%ff\n").exit_code == 2


@pytest.mark.parametrize("args,option", [
    (["qr", GOOD_URI, "--out"], "--out"),
    (["enroll-uri", "--account", "alice", "--qr-file"], "--qr-file"),
])
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_qr_files_are_written_0600(tmp_path, args, option, suffix):
    path = tmp_path / f"code{suffix}"
    old = os.umask(0o022)
    try:
        result = _run(*args, str(path))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("args,option", [
    (["qr", GOOD_URI, "--out"], "--out"),
    (["enroll-uri", "--account", "alice", "--qr-file"], "--qr-file"),
])
def test_qr_file_symlink_is_refused(tmp_path, args, option):
    target = tmp_path / "elsewhere"
    link = tmp_path / "code.png"
    link.symlink_to(target)
    result = _run(*args, str(link))
    assert result.exit_code == 2, result.output
    assert f"'{option}'" in result.stderr and "symbolic link" in result.stderr
    assert not target.exists()


def test_admin_enroll_qr_files_are_private(tmp_path, monkeypatch):
    for var in ("OTPFAST_AT_REST_KEY", "OTPFAST_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    data = str(tmp_path / "data")
    assert _run("init", "--data-dir", data, "--rsa-bits", "2048").exit_code == 0
    assert _run("account", "add", "--data-dir", data, "alice", "--type", "totp").exit_code == 0
    old = os.umask(0o022)
    try:
        result = _run("enroll", "--data-dir", data, "alice", "--png", str(tmp_path / "a.png"),
                      "--svg", str(tmp_path / "a.svg"))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    for name in ("a.png", "a.svg"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    (tmp_path / "b.svg").symlink_to(tmp_path / "victim")
    result = _run("enroll", "--data-dir", data, "alice", "--svg", str(tmp_path / "b.svg"))
    assert result.exit_code == 2 and "'--svg'" in result.stderr
    assert not (tmp_path / "victim").exists()


@pytest.mark.parametrize("command, env", [
    (["enroll-uri", "--account", "alice"], "OTPFAST_ENROLL_URI_SECRET"),
    (["batch", "hotp", "--count", "1"], "OTPFAST_BATCH_HOTP_SECRET"),
])
def test_secret_in_argv_is_warned_about_and_the_environment_is_not(command, env):
    """A key on the command line still works but is visible to other users: a warning on
    stderr names the environment variable; given through it, no warning."""
    key = "3132333435363738393031323334353637383930"
    on_argv = CliRunner().invoke(cli, [*command, "--secret", key], catch_exceptions=False)
    assert on_argv.exit_code == 0 and env in on_argv.stderr and "visible" in on_argv.stderr
    from_env = CliRunner().invoke(cli, command, env={env: key}, catch_exceptions=False)
    assert from_env.exit_code == 0 and from_env.stderr == ""
    assert on_argv.stdout == from_env.stdout
