"""CLI: otpfast batch rsa-lfsr / rsa-primroot (the logic is tested in tests/core)."""
import array
import json
import math
import pathlib
import re

import pytest
from click.testing import CliRunner

from otpfast_cli.main import cli

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "vectors"
PAPER = ["--p", "991", "--q", "997", "--e", "65537"]


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_names_real_options(command, message):
    """Every --option the error names is an option of `batch COMMAND` (as in test_batch_otp)."""
    options = {opt for param in cli.get_command(None, "batch").get_command(None, command).params
               for opt in param.opts}
    named = set(re.findall(r"--[a-z][a-z0-9-]*", message[message.index("Error:"):]))
    assert named and named <= options, (named - options, message)


@pytest.fixture(scope="module")
def vectors():
    return json.loads((VECTORS / "rsa_paper.json").read_text())


def _expected(rows):
    return [f"{otp:06d}" for _, otp in rows if otp is not None]


def test_rsa_lfsr_text_matches_paper_vectors(vectors):
    lf = vectors["lfsr"]
    want = _expected(lf["candidates"])
    result = run("batch", "rsa-lfsr", *PAPER, "--poly", lf["poly"], "--state", hex(lf["state"]),
                 "--count", str(len(want)))
    assert result.exit_code == 0, result.output
    assert result.stdout.split("\n") == want + [""]
    assert result.stderr == ""  # nothing generated, nothing announced


def test_rsa_primroot_text_matches_paper_vectors(vectors):
    pr = vectors["primroot"]
    want = _expected(pr["candidates"])
    result = run("batch", "rsa-primroot", *PAPER, "--start", str(pr["start"]), "--count", str(len(want)))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == want


@pytest.mark.parametrize("command, stream", [
    ("rsa-lfsr", ["--poly", "0x100009", "--state", "0x1234"]),
    ("rsa-primroot", ["--prime", "999983", "--generator", "5", "--start", "77"]),
])
def test_rsa_u32_file_equals_text_and_checks(tmp_path, command, stream):
    u32, text = tmp_path / "otps.u32", tmp_path / "otps.txt"
    args = ["batch", command, *PAPER, *stream, "--count", "70000", "--threads", "2"]
    assert run(*args, "--format", "u32", "--out", str(u32)).exit_code == 0
    assert run(*args, "--out", str(text)).exit_code == 0
    values = array.array("I")
    values.frombytes(u32.read_bytes())
    assert len(values) == 70000
    assert [f"{v:06d}" for v in values] == text.read_text().split()
    check = ["batch", command, *PAPER, *stream]
    result = run(*check, "--format", "u32", "--check", str(u32))
    assert result.exit_code == 0 and "70000 of 70000 OTPs verified" in result.stdout
    result = run(*check, "--check", str(text))
    assert result.exit_code == 0 and "70000 of 70000 OTPs verified" in result.stdout
    # alter two OTPs: 69998 verify, exit 1
    values[5] ^= 1
    values[69999] = 0
    u32.write_bytes(values.tobytes())
    result = run(*check, "--format", "u32", "--check", str(u32))
    assert result.exit_code == 1 and "69998 of 70000 OTPs verified" in result.stdout


def test_rsa_lfsr_check_against_other_stream_fails(tmp_path):
    text = tmp_path / "otps.txt"
    run("batch", "rsa-lfsr", *PAPER, "--poly", "0x100009", "--state", "5", "--count", "50", "--out", str(text))
    result = run("batch", "rsa-lfsr", *PAPER, "--poly", "0x100009", "--state", "6", "--check", str(text))
    assert result.exit_code == 1
    assert re.search(r"^\d+ of 50 OTPs verified", result.stdout)


def test_rsa_lfsr_generated_parameters_are_announced_and_repeat(tmp_path):
    result = run("batch", "rsa-lfsr", "--count", "20")
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("generated ")
    repeat = lines[-1].split()
    assert repeat[:3] == ["otpfast", "batch", "rsa-lfsr"]
    again = run(*repeat[1:])
    assert again.exit_code == 0 and again.stdout == result.stdout
    options = dict(zip(repeat[3::2], repeat[4::2]))
    p, q = int(options["--p"]), int(options["--q"])
    assert len(str(p * q - 1)) == 6
    assert all(len(x) == 6 for x in result.stdout.split())
    poly = int(options["--poly"], 16)
    assert poly.bit_length() == 21  # degree 20 by default


def test_rsa_lfsr_random_poly_of_given_degree_and_digits():
    result = run("batch", "rsa-lfsr", "--digits", "8", "--degree", "30", "--count", "5")
    assert result.exit_code == 0, result.output
    repeat = result.stderr.strip().splitlines()[-1].split()
    options = dict(zip(repeat[3::2], repeat[4::2]))
    assert int(options["--poly"], 16).bit_length() == 31
    assert all(len(x) == 8 for x in result.stdout.split())


def test_rsa_lfsr_random_e_for_given_primes():
    result = run("batch", "rsa-lfsr", "--p", "991", "--q", "997", "--poly", "0x100009", "--state", "1",
                 "--count", "3")
    assert result.exit_code == 0
    assert "generated e;" in result.stderr
    e = int(dict(zip(*[iter(result.stderr.split()[5:])] * 2))["--e"])
    assert math.gcd(e, math.lcm(990, 996)) == 1


def test_rsa_primroot_default_generator_announced():
    result = run("batch", "rsa-primroot", *PAPER, "--count", "4")
    assert result.exit_code == 0
    assert "--prime 999983 --generator 5 --start" in result.stderr


def test_rsa_threads_do_not_change_output():
    args = ["batch", "rsa-lfsr", *PAPER, "--poly", "0x100009", "--state", "9", "--count", "100000"]
    one = run(*args, "--threads", "1").stdout
    assert one == run(*args, "--threads", "2").stdout == run(*args, "--method", "sqm").stdout


@pytest.mark.parametrize("args, option", [
    (["--p", "990", "--q", "997"], "--p"),                              # composite p
    (["--p", "991", "--q", "996"], "--q"),
    (["--p", "991", "--q", "991"], "--q"),
    (["--p", "991"], "--q"),                                            # q missing
    (["--p", "991", "--q", "997", "--e", "3"], "--e"),                  # e not coprime to lambda
    (["--p", "991", "--q", "997", "--e", "1"], "--e"),
    (["--e", "65537"], "--e"),                                          # e without p, q
    (["--p", "65537", "--q", "65539"], "--p"),                          # N >= 2^32
    ([*PAPER, "--poly", "0x100008"], "--poly"),                         # no bit 0
    ([*PAPER, "--poly", "0x100003"], "--poly"),                         # not primitive
    ([*PAPER, "--poly", "0x100009", "--state", "0"], "--state"),
    ([*PAPER, "--poly", "0x100009", "--state", "0x100000"], "--state"),
    ([*PAPER, "--poly", "0x100009", "--degree", "21"], "--degree"),
    ([*PAPER, "--degree", "1"], "--degree"),
    (["--digits", "1"], "--digits"),
    ([*PAPER, "--digits", "7"], "--digits"),
    ([*PAPER, "--threads", "0"], "--threads"),                         # the core's num_threads
    ([*PAPER, "--poly", "zzz"], "--poly"),
])
def test_rsa_lfsr_bad_input_exits_2_naming_the_option(args, option):
    result = run("batch", "rsa-lfsr", *args, "--count", "5")
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert_names_real_options("rsa-lfsr", result.stderr)


@pytest.mark.parametrize("count", ["0", "-5"])
def test_rsa_count_must_be_positive(count):
    result = run("batch", "rsa-lfsr", *PAPER, "--count", count)
    assert result.exit_code == 2 and "--count" in result.output


def test_rsa_unwritable_out_exits_2(tmp_path):
    target = tmp_path / "missing-dir" / "otps.txt"
    result = run("batch", "rsa-lfsr", *PAPER, "--count", "5", "--out", str(target))
    assert result.exit_code == 2 and "--out" in result.output
    assert not target.exists()


@pytest.mark.parametrize("args, option", [
    (["--prime", "999981"], "--prime"),
    (["--prime", "999983", "--generator", "4"], "--generator"),
    (["--start", "-1"], "--start"),
])
def test_rsa_primroot_bad_input_exits_2_naming_the_option(args, option):
    result = run("batch", "rsa-primroot", *PAPER, *args, "--count", "5")
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert_names_real_options("rsa-primroot", result.stderr)


def test_rsa_check_needs_the_full_stream(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("000001\n")
    result = run("batch", "rsa-lfsr", *PAPER, "--check", str(f))
    assert result.exit_code == 2 and "--poly" in result.output and "--state" in result.output


@pytest.mark.parametrize("content, fmt", [(b"12x\n", "text"), (b"", "text"), (b"\x01\x02\x03", "u32")])
def test_rsa_check_bad_file_exits_2(tmp_path, content, fmt):
    f = tmp_path / "x"
    f.write_bytes(content)
    result = run("batch", "rsa-lfsr", *PAPER, "--poly", "0x100009", "--state", "1", "--format", fmt,
                 "--check", str(f))
    assert result.exit_code == 2 and "--check" in result.output


def test_rsa_help_labels_the_scheme_insecure():
    for command in ("rsa-lfsr", "rsa-primroot"):
        text = run("batch", command, "--help").output
        assert "INSECURE" in text and "PREDICTABLE" in text and "never for logins" in text.replace("\n", " ")
    assert "INSECURE" in run("batch", "--help").output


def test_rsa_chunked_run_continues_the_stream(monkeypatch):
    from otpfast_cli import batch_io
    args = ["batch", "rsa-lfsr", *PAPER, "--poly", "0x100009", "--state", "0x77", "--count", "5500"]
    whole = run(*args).stdout
    monkeypatch.setattr(batch_io, "CHUNK", 1000)
    assert run(*args).stdout == whole
    args = ["batch", "rsa-primroot", *PAPER, "--start", "12", "--count", "2500"]
    monkeypatch.setattr(batch_io, "CHUNK", 1 << 22)
    whole = run(*args).stdout
    monkeypatch.setattr(batch_io, "CHUNK", 1000)
    assert run(*args).stdout == whole


def test_rsa_progress_bar_on_a_terminal(monkeypatch):
    from otpfast_cli import batch_io
    monkeypatch.setattr(batch_io, "CHUNK", 1000)
    args = ["batch", "rsa-lfsr", *PAPER, "--poly", "0x100009", "--state", "0x77", "--count", "3000"]
    quiet = run(*args)
    assert "generating" not in quiet.stderr          # CliRunner's stderr is not a terminal
    monkeypatch.setattr(batch_io, "show_progress", lambda count: count > batch_io.CHUNK)
    loud = run(*args)
    assert loud.exit_code == 0 and loud.stdout == quiet.stdout
    assert "generating" in loud.stderr


@pytest.mark.parametrize("command, stream", [
    ("rsa-lfsr", ["--poly", "0x100009", "--state", "0x1234"]),
    ("rsa-primroot", ["--start", "77"]),
])
def test_rsa_check_takes_the_generation_count(tmp_path, command, stream):
    f = tmp_path / "otps.txt"
    generate = ["batch", command, *PAPER, *stream, "--count", "300"]
    assert run(*generate, "--out", str(f)).exit_code == 0
    result = run(*generate, "--check", str(f))          # the generating command line + --check
    assert result.exit_code == 0 and "300 of 300 OTPs verified" in result.stdout
    result = run("batch", command, *PAPER, *stream, "--count", "299", "--check", str(f))
    assert result.exit_code == 2 and "verified" not in result.stdout
    assert "Invalid value for '--count'" in result.stderr and "holds 300 OTPs, not 299" in result.stderr


def test_rsa_needs_count_or_check():
    result = run("batch", "rsa-lfsr", *PAPER, "--poly", "0x100009", "--state", "1")
    assert result.exit_code == 2 and "--count" in result.stderr and "--check" in result.stderr
