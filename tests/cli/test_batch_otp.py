"""CLI: otpfast batch hotp|totp|hashchain, enroll-uri, qr (logic is tested in tests/schemes)."""
import array
import base64
import hashlib
import json
import pathlib

import pyotp
import pytest
from click.testing import CliRunner

from otpfast_cli.main import cli

KEY_HEX = "3132333435363738393031323334353637383930"
KEY_B32 = base64.b32encode(bytes.fromhex(KEY_HEX)).decode()
VECTORS = pathlib.Path(__file__).resolve().parent.parent / "vectors"


def run(*args, input=None, env=None):
    return CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=False)


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


def test_short_passphrase_exits_2():
    result = run("batch", "hashchain", "--rfc2289", "--seed", "TeSt", "--sequence", "5", input="too short\n")
    assert result.exit_code == 2
    assert "--passphrase" in result.stderr and "10 to 63" in result.stderr


def test_missing_secret_is_a_usage_error():
    assert run("batch", "hotp", "--count", "1").exit_code == 2


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
