"""CLI: otpfast batch hotp|totp|hashchain, enroll-uri, qr (logic is tested in tests/schemes)."""
import array
import base64
import hashlib
import json
import pathlib
import re
import subprocess
import sys

import pyotp
import pytest
from click.testing import CliRunner

from otpfast._compat import NO_EXTENSIONS

from otpfast_cli.main import cli

KEY_HEX = "3132333435363738393031323334353637383930"
KEY_B32 = base64.b32encode(bytes.fromhex(KEY_HEX)).decode()
VECTORS = pathlib.Path(__file__).resolve().parent.parent / "vectors"


def run(*args, input=None, env=None):
    return CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=False)


def assert_names_real_options(args, message):
    """Every --option an error message names is an option of the command that printed it."""
    command = cli.get_command(None, args[0])
    if args[0] == "batch":
        command = command.get_command(None, args[1])
    options = {opt for param in command.params for opt in param.opts}
    error = message[message.index("Error:"):]
    named = set(re.findall(r"--[a-z][a-z0-9-]*", error))
    assert named and named <= options, (named - options, message)


def test_batch_hotp_text_is_rfc4226():
    data = json.loads((VECTORS / "rfc4226_appendix_d.json").read_text())
    result = run("batch", "hotp", "--secret", KEY_HEX, "--count", "10")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [c["hotp"] for c in data["cases"]]


def test_batch_hotp_u32_and_base32(tmp_path):
    out = tmp_path / "codes.u32"
    result = run("batch", "hotp", "--secret-base32", KEY_B32.lower(), "--counter", "0x10", "--count", "1000",
                 "--digits", "8", "--algorithm", "sha512", "--format", "u32", "--out", str(out), "--threads", "2")
    assert result.exit_code == 0, result.output
    values = array.array("I")
    values.frombytes(out.read_bytes())
    ref = pyotp.HOTP(KEY_B32, digits=8, digest=hashlib.sha512)
    assert len(values) == 1000
    assert [f"{v:08d}" for v in values[:20]] == [ref.at(16 + i) for i in range(20)]
    assert f"{values[-1]:08d}" == ref.at(16 + 999)


def test_batch_hotp_secret_from_environment():
    result = run("batch", "hotp", "--count", "2", env={"OTPFAST_BATCH_HOTP_SECRET": KEY_HEX})
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["755224", "287082"]


def test_batch_totp_rfc6238_all_hashes():
    data = json.loads((VECTORS / "rfc6238_appendix_b.json").read_text())
    for algorithm, seed in data["seeds_ascii"].items():
        for case in data["cases"]:
            result = run("batch", "totp", "--secret", seed.encode().hex(), "--time", str(case["time"]),
                         "--count", "1", "--digits", "8", "--algorithm", algorithm)
            assert result.exit_code == 0, result.output
            assert result.stdout.split() == [case[algorithm]]


def test_batch_totp_consecutive_steps():
    result = run("batch", "totp", "--secret", KEY_HEX, "--time", "1000000", "--step", "60", "--count", "3")
    ref = pyotp.TOTP(KEY_B32, interval=60)
    assert result.stdout.split() == [ref.at(1000000 + 60 * i) for i in range(3)]
    assert "first step: 16666" in result.stderr


def test_batch_hashchain_paper_mode():
    seed = bytes(range(16))
    result = run("batch", "hashchain", "--seed", seed.hex(), "--length", "4")
    assert result.exit_code == 0, result.output
    chain = [seed]
    for _ in range(4):
        chain.append(hashlib.sha256(chain[-1]).digest())
    assert result.stdout.splitlines() == [f"{i}: {chain[4 - i].hex()}" for i in range(1, 5)]
    assert f"anchor: {chain[4].hex()}" in result.stderr


def test_batch_hashchain_rfc2289_words_and_hex(tmp_path):
    pass_file = tmp_path / "pass"
    pass_file.write_text("This is a test.\n")
    result = run("batch", "hashchain", "--rfc2289", "--algorithm", "md5", "--seed", "TeSt",
                 "--passphrase-file", str(pass_file), "--sequence", "1", "--count", "2", "--format", "words")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["1: EASE OIL FUM CURE AWRY AVIS", "0: INCH SEA ANNE LONG AHEM TOUR"]
    result = run("batch", "hashchain", "--rfc2289", "--algorithm", "sha1", "--seed", "TeSt",
                 "--sequence", "99", "--format", "hex", input="This is a test.\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["99: 87FE C776 8B73 CCF9"]


@pytest.mark.parametrize("args,option", [
    (["batch", "hotp", "--secret", "31323334", "--count", "1"], "--secret"),
    (["batch", "hotp", "--secret", "zz", "--count", "1"], "--secret"),
    (["batch", "hotp", "--secret-base32", "GEZDGNBV", "--count", "1"], "--secret-base32"),
    (["batch", "hotp", "--secret", KEY_HEX, "--count", "1", "--digits", "5"], "--digits"),
    (["batch", "hotp", "--secret", KEY_HEX, "--count", "1", "--digits", "11"], "--digits"),
    (["batch", "hotp", "--secret", KEY_HEX, "--count", "0"], "--count"),
    (["batch", "hotp", "--secret", KEY_HEX, "--count", "١٢٣"], "--count"),
    (["batch", "hotp", "--secret", KEY_HEX, "--count", "1", "--counter", "-1"], "--counter"),
    (["batch", "hotp", "--secret", KEY_HEX, "--count", "1", "--algorithm", "md5"], "--algorithm"),
    (["batch", "hotp", "--secret", KEY_HEX, "--count", "1", "--threads", "0"], "--threads"),
    (["batch", "hotp", "--secret", KEY_HEX, "--count", "1", "--out", "/nonexistent/dir/x"], "--out"),
    (["batch", "totp", "--secret", KEY_HEX, "--count", "1", "--step", "0"], "--step"),
    (["batch", "hashchain", "--seed", "00" * 16], "--length"),
    (["batch", "hashchain", "--seed", "00" * 8, "--length", "3"], "--seed"),
    (["batch", "hashchain", "--seed", "xyz", "--length", "3"], "--seed"),
    (["batch", "hashchain", "--seed", "00" * 16, "--length", "3", "--algorithm", "md5"], "--algorithm"),
    (["batch", "hashchain", "--rfc2289", "--seed", "te st", "--sequence", "5"], "--seed"),
    (["batch", "hashchain", "--rfc2289", "--seed", "TeSt", "--sequence", "5", "--count", "7"], "--count"),
    (["batch", "hashchain", "--rfc2289", "--seed", "TeSt"], "--sequence"),
    (["batch", "hashchain", "--rfc2289", "--seed", "TeSt", "--sequence", "5", "--algorithm", "sha256"], "--algorithm"),
])
def test_bad_input_exits_2_naming_the_option(args, option):
    result = run(*args, input="This is a test.\n")
    assert result.exit_code == 2, result.output
    assert option in result.stderr
    assert_names_real_options(args, result.stderr)


def test_short_passphrase_from_stdin_exits_2_naming_stdin_and_the_real_option():
    args = ["batch", "hashchain", "--rfc2289", "--seed", "TeSt", "--sequence", "5"]
    result = run(*args, input="too short\n")
    assert result.exit_code == 2
    assert "pass-phrase read from stdin" in result.stderr and "10 to 63" in result.stderr
    assert_names_real_options(args, result.stderr)          # --passphrase-file, never "--passphrase"


def test_short_passphrase_file_exits_2_naming_passphrase_file(tmp_path):
    pass_file = tmp_path / "pass.txt"
    pass_file.write_text("too short\n")
    args = ["batch", "hashchain", "--rfc2289", "--seed", "TeSt", "--sequence", "5", "--passphrase-file",
            str(pass_file)]
    result = run(*args)
    assert result.exit_code == 2
    assert "Invalid value for '--passphrase-file'" in result.stderr and "10 to 63" in result.stderr
    assert_names_real_options(args, result.stderr)


@pytest.mark.parametrize("args", [
    ["batch", "hotp", "--count", "1"],
    ["batch", "hotp", "--count", "1", "--secret", KEY_HEX, "--secret-base32", KEY_B32],
    ["batch", "hotp", "--secret", KEY_HEX],
    ["batch", "totp", "--secret", KEY_HEX],
    ["batch", "hotp", "--secret", KEY_HEX, "--counter", str(2**64 - 2), "--count", "3"],
    ["batch", "totp", "--secret", KEY_HEX, "--time", "-1", "--count", "1"],
    ["batch", "totp", "--secret", KEY_HEX, "--time", str(30 * 2**64), "--count", "1"],
])
def test_usage_errors_exit_2_naming_real_options(args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert_names_real_options(args, result.stderr)


def test_enroll_uri_and_qr(tmp_path):
    result = run("enroll-uri", "--account", "alice@example.com", "--issuer", "Example", "--secret", KEY_HEX,
                 "--digits", "8", "--qr-file", str(tmp_path / "qr.svg"))
    assert result.exit_code == 0, result.output
    uri = result.stdout.strip()
    parsed = pyotp.parse_uri(uri)
    assert parsed.secret == KEY_B32 and parsed.digits == 8 and parsed.issuer == "Example"
    assert b"<svg" in (tmp_path / "qr.svg").read_bytes()
    shown = run("qr", uri)
    assert shown.exit_code == 0 and "█" in shown.stdout
    assert run("qr", uri, "--out", str(tmp_path / "qr.png")).exit_code == 0
    assert (tmp_path / "qr.png").read_bytes()[:4] == b"\x89PNG"


def test_enroll_uri_generates_a_fresh_secret():
    first = run("enroll-uri", "--type", "hotp", "--account", "bob", "--counter", "5").stdout
    second = run("enroll-uri", "--type", "hotp", "--account", "bob", "--counter", "5").stdout
    assert first != second and "counter=5" in first


@pytest.mark.parametrize("args,option", [
    (["enroll-uri", "--account", "a", "--secret", "3132"], "--secret"),
    (["enroll-uri", "--account", "a", "--digits", "5"], "--digits"),
    (["enroll-uri", "--account", "a:b"], "--account"),
    (["enroll-uri", "--account", "a", "--qr-file", "x.gif"], "--qr-file"),
    (["enroll-uri", "--account", "a", "--qr-file", "/nonexistent/dir/x.png"], "--qr-file"),
    (["qr", "otpauth://totp/a?secret=AAAA"], "URI"),
    (["qr", f"otpauth://totp/a?secret={KEY_B32}", "--out", "x.jpg"], "--out"),
])
def test_enroll_bad_input_exits_2(args, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert option in result.stderr


# --- streamed hotp/totp, --check, --count with --check (issue 10, item 7) ---

HOTP_ARGS = ["batch", "hotp", "--secret", KEY_HEX, "--counter", "7"]
TOTP_ARGS = ["batch", "totp", "--secret", KEY_HEX, "--time", "1700000000", "--step", "60"]


@pytest.mark.parametrize("args", [HOTP_ARGS, TOTP_ARGS], ids=["hotp", "totp"])
@pytest.mark.parametrize("fmt", ["text", "u32"])
def test_chunked_stream_equals_one_piece(monkeypatch, tmp_path, args, fmt):
    from otpfast_cli import batch_io
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    assert run(*args, "--count", "5500", "--format", fmt, "--out", str(whole)).exit_code == 0
    monkeypatch.setattr(batch_io, "CHUNK", 1000)
    assert run(*args, "--count", "5500", "--format", fmt, "--out", str(chunked)).exit_code == 0
    assert chunked.read_bytes() == whole.read_bytes()
    if args is HOTP_ARGS and fmt == "text":
        ref = pyotp.HOTP(KEY_B32)
        assert whole.read_text().split()[-1] == ref.at(7 + 5499)


def test_hotp_progress_bar_only_on_a_terminal(monkeypatch):
    from otpfast_cli import batch_io
    monkeypatch.setattr(batch_io, "CHUNK", 1000)
    quiet = run(*HOTP_ARGS, "--count", "3000")
    assert quiet.exit_code == 0 and "generating" not in quiet.stderr     # CliRunner's stderr is no terminal
    monkeypatch.setattr(batch_io, "show_progress", lambda count: count > batch_io.CHUNK)
    loud = run(*HOTP_ARGS, "--count", "3000")
    assert loud.exit_code == 0 and loud.stdout == quiet.stdout and "generating" in loud.stderr


@pytest.mark.parametrize("args", [HOTP_ARGS, TOTP_ARGS], ids=["hotp", "totp"])
@pytest.mark.parametrize("fmt", ["text", "u32"])
def test_check_verifies_a_file_chunk_by_chunk(monkeypatch, tmp_path, args, fmt):
    from otpfast_cli import batch_io
    f = tmp_path / "otps"
    assert run(*args, "--count", "5000", "--format", fmt, "--out", str(f)).exit_code == 0
    monkeypatch.setattr(batch_io, "CHUNK", 700)
    monkeypatch.setattr(batch_io, "TEXT_BLOCK", 1000)     # numbers split across blocks
    result = run(*args, "--format", fmt, "--check", str(f))
    assert result.exit_code == 0 and result.stdout == "5000 of 5000 OTPs verified\n"
    values = array.array("I")
    if fmt == "u32":
        values.frombytes(f.read_bytes())
    else:
        values.extend(int(x) for x in f.read_text().split())
    values[3] ^= 1
    values[4999] = 0
    f.write_bytes(values.tobytes() if fmt == "u32" else "\n".join(f"{v:06d}" for v in values).encode())
    result = run(*args, "--format", fmt, "--check", str(f))    # (text now without a final newline)
    assert result.exit_code == 1 and result.stdout == "4998 of 5000 OTPs verified\n"


def test_check_against_other_parameters_fails(tmp_path):
    f = tmp_path / "otps.txt"
    assert run(*HOTP_ARGS, "--count", "50", "--out", str(f)).exit_code == 0
    result = run("batch", "hotp", "--secret", KEY_HEX, "--counter", "8", "--check", str(f))
    assert result.exit_code == 1 and re.fullmatch(r"\d+ of 50 OTPs verified\n", result.stdout)


@pytest.mark.parametrize("args", [HOTP_ARGS, TOTP_ARGS], ids=["hotp", "totp"])
def test_check_takes_the_generation_count(tmp_path, args):
    f = tmp_path / "otps.txt"
    generate = [*args, "--count", "300"]
    assert run(*generate, "--out", str(f)).exit_code == 0
    result = run(*generate, "--check", str(f))          # the generating command line + --check
    assert result.exit_code == 0 and result.stdout == "300 of 300 OTPs verified\n"
    result = run(*args, "--count", "301", "--check", str(f))
    assert result.exit_code == 2 and "verified" not in result.stdout
    assert "Invalid value for '--count'" in result.stderr and "holds 300 OTPs, not 301" in result.stderr


def test_totp_check_needs_time(tmp_path):
    f = tmp_path / "otps.txt"
    f.write_text("123456\n")
    result = run("batch", "totp", "--secret", KEY_HEX, "--check", str(f))
    assert result.exit_code == 2 and "--time" in result.stderr


@pytest.mark.parametrize("content, fmt", [(b"12x\n", "text"), (b"", "text"), (b" \n", "text"),
                                          (b"-5\n", "text"), (b"\x01\x02\x03", "u32"), (b"", "u32")])
def test_check_bad_file_exits_2(tmp_path, content, fmt):
    f = tmp_path / "x"
    f.write_bytes(content)
    result = run(*HOTP_ARGS, "--format", fmt, "--check", str(f))
    assert result.exit_code == 2 and "--check" in result.stderr and "verified" not in result.stdout


def _peak_rss_kb(*args):
    """Peak RSS of `python -m otpfast_cli ARGS` (a fresh parent, so no other child counts)."""
    code = ("import resource, subprocess, sys\n"
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "otpfast_cli", *args],
                         capture_output=True, text=True, timeout=300, check=True)
    return int(out.stdout)


@pytest.mark.skipif(NO_EXTENSIONS, reason="the pure-Python twin holds a chunk as Python objects")
def test_hotp_memory_stays_bounded(tmp_path):
    """5 M OTPs held at once need >= 55 MB (20 MB of uint32 + 35 MB of text); streamed, the
    peak grows by a few chunks over a --count 1 run, for generating and for --check."""
    count, whole_kb = 5_000_000, 5_000_000 * (4 + 7) // 1024
    base = _peak_rss_kb(*HOTP_ARGS, "--count", "1", "--out", "/dev/null")
    text = tmp_path / "otps.txt"
    generating = _peak_rss_kb(*HOTP_ARGS, "--count", str(count), "--out", str(text))
    assert text.stat().st_size == 7 * count
    checking = _peak_rss_kb(*HOTP_ARGS, "--count", str(count), "--check", str(text))
    assert generating - base < whole_kb / 2, (base, generating)
    assert checking - base < whole_kb / 2, (base, checking)
