"""``otpfast token import|export``, ``account add --secret-file`` and ``account add-many``
(the logic is tested in tests/services/test_bulk.py)."""
import base64
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from otpfast.datadir import DataDir
from otpfast.errors import InvalidToken
from otpfast.hotp import HOTP
from otpfast.importers import read_pskc
from otpfast.keyuri import parse_uri
from otpfast.services.distribution import Distribution
from otpfast_cli.main import cli

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "pskc"
RFC4226_KEY = b"12345678901234567890"
PSK_HEX = "12345678901234567890123456789012"


@pytest.fixture
def run(tmp_path, monkeypatch):
    for var in ("OTPFAST_AT_REST_KEY", "OTPFAST_DATA_DIR", "OTPFAST_CREDENTIAL"):
        monkeypatch.delenv(var, raising=False)
    data_dir = str(tmp_path / "data")
    runner = CliRunner()

    def invoke(*args, input=None):
        args = [*args[:2], "--data-dir", data_dir, *args[2:]]
        return runner.invoke(cli, args, input=input)

    assert runner.invoke(cli, ["init", "--data-dir", data_dir, "--rsa-bits", "2048"]
                         ).exit_code == 0
    invoke.data_dir = data_dir
    return invoke


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _state(data_dir):
    store = DataDir(data_dir).open_store()
    try:
        return ([a.name for a in store.accounts()], [t.serial for t in store.tokens()],
                len(list(store.audit_entries())))
    finally:
        store.close()


def _verify(data_dir, user, otp):
    store = DataDir(data_dir).open_store()
    try:
        Distribution(store).verify(user, otp, source="test")
    finally:
        store.close()


@pytest.mark.parametrize("figure, option, secret", [
    (3, None, None), (6, "--psk-file", PSK_HEX), (7, "--password-file", "qwerty")])
def test_bulk_cli_import_rfc6030(run, tmp_path, figure, option, secret):
    args = ["token", "import", str(VECTORS / f"rfc6030-figure{figure}.pskcxml"),
            "--format", "pskc", "--user", "bob"]
    if option:
        args += [option, _file(tmp_path, "key", secret + "\n")]
    result = _ok(run(*args))
    assert "987654321" in result.stdout and "imported 1 tokens" in result.stderr
    assert RFC4226_KEY.hex() not in result.output and "GEZDGNBV" not in result.output
    user = result.stdout.split("\t")[2].split()[-1]
    with pytest.raises(InvalidToken):
        _verify(run.data_dir, user, "755224")
    _verify(run.data_dir, user, "84755224")
    _verify(run.data_dir, user, "94287082")


def test_bulk_cli_import_tampered_or_wrong_key_imports_nothing(run, tmp_path):
    data = (VECTORS / "rfc6030-figure6.pskcxml").read_bytes()
    match = re.search(rb"<(\w+:)?ValueMAC>\s*([A-Za-z0-9+/=]+)\s*<", data)
    mac = bytearray(base64.b64decode(match.group(2)))
    mac[0] ^= 1
    bad = tmp_path / "bad.pskcxml"
    bad.write_bytes(data[:match.start(2)] + base64.b64encode(bytes(mac)) + data[match.end(2):])
    before = _state(run.data_dir)
    for path, key in ((bad, PSK_HEX), (VECTORS / "rfc6030-figure6.pskcxml", "00" * 16)):
        result = run("token", "import", str(path), "--format", "pskc", "--user", "bob",
                     "--psk-file", _file(tmp_path, "psk", key))
        assert result.exit_code == 2 and "KeyPackage 1" in result.output, result.output
        assert "nothing" in result.output
    assert _state(run.data_dir) == before


def test_bulk_cli_import_oathcsv_and_uri(run, tmp_path):
    _ok(run("account", "add", "carol", "--type", "totp"))
    key = RFC4226_KEY.hex()
    csv_path = _file(tmp_path, "seeds.csv", f"# vendor\nHW1, {key}, hotp, 6, 0\n"
                                            f"HW2, {(b'z' * 20).hex()}, totp, 8\n")
    _ok(run("token", "import", csv_path, "--format", "oathcsv", "--user", "carol"))
    _verify(run.data_dir, "carol", HOTP(RFC4226_KEY).generate(0))
    b32 = base64.b32encode(b"w" * 20).decode()
    uri_path = _file(tmp_path, "uris.txt", f"otpauth://hotp/Acme:dan?secret={b32}&counter=2\n")
    result = _ok(run("token", "import", uri_path, "--format", "uri", "--json"))
    assert '"new_user": true' in result.stdout and b32 not in result.output
    _verify(run.data_dir, "dan", HOTP(b"w" * 20).generate(2))


def test_bulk_cli_import_bad_line_named_nothing_imported(run, tmp_path):
    key = RFC4226_KEY.hex()
    before = _state(run.data_dir)
    path = _file(tmp_path, "seeds.csv", f"HW1, {key}\nHW2, {key}\nHW3, nothex\n")
    result = run("token", "import", path, "--format", "oathcsv", "--user", "eve")
    assert result.exit_code == 2 and "line 3" in result.output, result.output
    path = _file(tmp_path, "seeds2.csv", f"HW1, {key}\n")       # no user anywhere
    result = run("token", "import", path, "--format", "oathcsv")
    assert result.exit_code == 2 and "line 1" in result.output and "--user" in result.output
    _ok(run("token", "import", str(VECTORS / "rfc6030-figure3.pskcxml"), "--format", "pskc"))
    again = run("token", "import", str(VECTORS / "rfc6030-figure3.pskcxml"), "--format", "pskc")
    assert again.exit_code == 2 and "exists already" in again.output
    assert len(_state(run.data_dir)[1]) == len(before[1]) + 1


def test_bulk_cli_export(run, tmp_path, require_service):
    _ok(run("account", "add", "gus", "--type", "hotp", "--secret-file",
            _file(tmp_path, "s", RFC4226_KEY.hex() + "\n")))
    _ok(run("token", "add", "gus", "--type", "recovery"))
    _ok(run("account", "add", "hal", "--type", "totp"))
    out = tmp_path / "export.pskcxml"
    result = _ok(run("token", "export", "--format", "pskc", "--psk-file",
                     _file(tmp_path, "psk", PSK_HEX), "--out", str(out)))
    assert "recovery" in result.stderr and "skipped" in result.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert RFC4226_KEY.hex() not in out.read_text()
    specs = read_pskc(out.read_bytes(), psk=bytes.fromhex(PSK_HEX))
    assert {(s.user, s.type) for s in specs} == {("gus", "hotp"), ("hal", "totp")}
    assert [s.secret for s in specs if s.user == "gus"] == [RFC4226_KEY]
    # python-pskc itself reads it back equal
    import pskc
    container = pskc.PSKC(str(out))
    container.encryption.key = bytes.fromhex(PSK_HEX)
    assert {(k.serial, k.secret, k.counter, k.response_length) for k in container.keys} == \
        {(s.serial, s.secret, s.counter, s.digits) for s in specs}
    refused = run("token", "export", "--format", "pskc", "--out", str(out))
    assert refused.exit_code == 2 and "--psk-file" in refused.output
    # pskctool (oath-toolkit) accepts the file: a service test
    pskctool = shutil.which("pskctool")
    require_service(pskctool is not None, "pskctool (oath-toolkit)")
    check = subprocess.run([pskctool, "--validate", str(out)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and check.stdout.strip() == "OK", check.stdout + check.stderr


test_bulk_cli_export = pytest.mark.service(test_bulk_cli_export)


def test_bulk_cli_account_add_secret_file(run, tmp_path):
    b32 = base64.b32encode(RFC4226_KEY).decode().lower().rstrip("=")
    _ok(run("account", "add", "ivy", "--type", "hotp", "--digits", "8", "--secret-file",
            _file(tmp_path, "b32", b32 + "\nignored\n")))
    _verify(run.data_dir, "ivy", "84755224")
    for text in ("not a secret!\n", "abcd\n"):
        result = run("account", "add", "jon", "--type", "hotp", "--secret-file",
                     _file(tmp_path, "bad", text))
        assert result.exit_code == 2 and "--secret-file" in result.output, result.output
        assert text.strip() not in result.output
    result = run("account", "add", "kim", "--type", "hashchain", "--secret-file",
                 _file(tmp_path, "s", RFC4226_KEY.hex()))
    assert result.exit_code == 2 and "--secret-file" in result.output


def test_bulk_cli_add_many(run, tmp_path):
    users = _file(tmp_path, "users.csv", "# name, issuer\nann\nben, Acme Corp\n\ncat\n")
    uris, qr = tmp_path / "uris.txt", tmp_path / "qr"
    result = _ok(run("account", "add-many", "--from", users, "--type", "totp",
                     "--uris-out", str(uris), "--qr-dir", str(qr)))
    assert "3 totp accounts added" in result.stderr and "secret=" not in result.output
    assert stat.S_IMODE(os.stat(uris).st_mode) == 0o600
    lines = [line.split("\t") for line in uris.read_text().splitlines()]
    assert [name for name, _ in lines] == ["ann", "ben", "cat"]
    assert parse_uri(lines[1][1]).issuer == "Acme Corp"
    assert sorted(os.listdir(qr)) == ["ann.png", "ben.png", "cat.png"]
    assert all(stat.S_IMODE(os.stat(qr / f).st_mode) == 0o600 for f in os.listdir(qr))
    # an existing user on line 3: nothing added, no URI file left behind
    before = _state(run.data_dir)
    again = _file(tmp_path, "again.csv", "dee\neli\nann\n")
    out2 = tmp_path / "uris2.txt"
    result = run("account", "add-many", "--from", again, "--type", "totp",
                 "--uris-out", str(out2))
    assert result.exit_code == 2 and "line 3" in result.output, result.output
    assert not out2.exists() and not (tmp_path / "uris2.txt.partial").exists()
    assert _state(run.data_dir) == before
    result = run("account", "add-many", "--from", again, "--type", "totp")
    assert result.exit_code == 2 and "--uris-out" in result.output
    qr2 = tmp_path / "qr2"
    result = run("account", "add-many", "--from", again, "--type", "totp", "--qr-dir", str(qr2))
    assert result.exit_code == 2 and "line 3" in result.output
    assert os.listdir(qr2) == []                # QR files of the rolled-back users removed
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"fay\ngil\n\xff\xfe\n")
    result = run("account", "add-many", "--from", str(bad), "--type", "totp",
                 "--uris-out", str(out2))
    assert result.exit_code == 2 and "UTF-8" in result.output and "--from" in result.output
    assert _state(run.data_dir) == before and not out2.exists()


def test_bulk_cli_add_many_qr_names_stay_in_the_directory(run, tmp_path):
    users = _file(tmp_path, "users.csv", "../evil\n.hidden\nx y\nok@example.com\n")
    qr = tmp_path / "qr"
    _ok(run("account", "add-many", "--from", users, "--type", "hotp", "--qr-dir", str(qr)))
    assert sorted(os.listdir(qr)) == sorted(["_evil~1.png", "hidden~2.png", "x_y~3.png",
                                             "ok@example.com.png"])
    assert not (tmp_path / "evil.png").exists()
