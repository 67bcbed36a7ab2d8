"""CLI: otpfast lfsr primitive / is-primitive (the logic is tested in tests/core)."""
import pytest
from click.testing import CliRunner

from otpfast_cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_lfsr_primitive_count_degree_20():
    result = run("lfsr", "primitive", "--degree", "20", "--count")
    assert result.exit_code == 0 and result.stdout == "24000\n"


def test_lfsr_primitive_index_and_all():
    result = run("lfsr", "primitive", "--degree", "5", "--all")
    assert result.exit_code == 0
    assert result.stdout.split() == ["0x25", "0x29", "0x2f", "0x37", "0x3b", "0x3d"]
    assert run("lfsr", "primitive", "--degree", "5", "--index", "2").stdout == "0x2f\n"
    assert run("lfsr", "primitive", "--degree", "20", "--index", "0").stdout == "0x100009\n"
    every = run("lfsr", "primitive", "--degree", "20", "--all").stdout.split()
    assert len(every) == 24000 and every[0] == "0x100009"


@pytest.mark.parametrize("poly, code, word", [("0x100009", 0, "primitive"), ("1048585", 0, "primitive"),
                                              ("0x100003", 1, "not primitive"), ("0x1f", 1, "not primitive")])
def test_lfsr_is_primitive_exit_code(poly, code, word):
    result = run("lfsr", "is-primitive", poly)
    assert result.exit_code == code and result.stdout.strip() == word


@pytest.mark.parametrize("args, hint", [
    (["is-primitive", "0x100008"], "POLY"),
    (["is-primitive", "0x3"], "POLY"),
    (["is-primitive", "abc"], "POLY"),
    (["primitive", "--degree", "1", "--count"], "--degree"),
    (["primitive", "--degree", "29", "--all"], "--degree"),
    (["primitive", "--degree", "5", "--index", "6"], "--index"),
    (["primitive", "--degree", "5"], "--count"),
    (["primitive", "--degree", "5", "--count", "--all"], "--count"),
])
def test_lfsr_bad_input_exits_2(args, hint):
    result = run("lfsr", *args)
    assert result.exit_code == 2 and hint in result.output
