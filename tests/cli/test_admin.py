import os
import re
import sqlite3

import pytest
from click.testing import CliRunner

from otpfast.datadir import DataDir
from otpfast.errors import InvalidToken
from otpfast.services.distribution import VerifyItem
from otpfast_cli.main import cli


@pytest.fixture
def run(tmp_path, monkeypatch):
    for var in ("OTPFAST_AT_REST_KEY", "OTPFAST_DATA_DIR", "OTPFAST_CREDENTIAL"):
        monkeypatch.delenv(var, raising=False)
    data_dir = str(tmp_path / "data")
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(cli, [*args[:2], "--data-dir", data_dir, *args[2:]]
                             if args[0] in ("authority", "client", "account", "audit")
                             else [args[0], "--data-dir", data_dir, *args[1:]], input=input)

    invoke.data_dir = data_dir
    return invoke


def _lock(data_dir, account, failures):
    """Wrong OTPs through the service (an edited failure count would be refused)."""
    distribution = DataDir(data_dir).distribution()
    try:
        distribution.verify_many([VerifyItem(account, "x", "test")] * failures)
    finally:
        distribution.store.close()


def _sql(data_dir, statement, params=()):
    conn = sqlite3.connect(os.path.join(data_dir, "store.db"))
    try:
        rows = conn.execute(statement, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


@pytest.fixture
def initialised(run):
    result = run("init", "--rsa-bits", "2048")
    assert result.exit_code == 0, result.output
    return run


def test_admin_init_and_fingerprint(run):
    result = run("init", "--rsa-bits", "2048")
    assert result.exit_code == 0, result.output
    fingerprint = result.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", fingerprint)
    assert run("fingerprint").stdout.strip() == fingerprint
    for name in ("at-rest.key", "keyserver.pem", "tls.key"):
        assert os.stat(os.path.join(run.data_dir, name)).st_mode & 0o777 == 0o600
    again = run("init", "--rsa-bits", "2048")
    assert again.exit_code == 2 and "--data-dir" in again.output


def test_admin_uninitialised_dir_fails_clearly(run):
    for args in (("fingerprint",), ("account", "list")):     # a usage error naming the option
        result = run(*args)
        assert result.exit_code == 2 and "otpfast init" in result.output
        assert "'--data-dir'" in result.output


def test_admin_authority_and_client_credentials(initialised):
    run = initialised
    result = run("authority", "add", "1")
    assert result.exit_code == 0
    credential = result.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", credential)
    assert "shown only once" in result.stderr
    dup = run("authority", "add", "1")
    assert dup.exit_code == 2 and "'ID'" in dup.output
    assert run("authority", "add", "0").exit_code == 2
    assert run("account", "add", "alice", "--type", "hotp").exit_code == 0
    device = run("client", "add", "phone", "--account", "alice")
    verifier = run("client", "add", "vpn", "--verifier")
    assert device.exit_code == verifier.exit_code == 0
    assert device.stdout.strip() != verifier.stdout.strip()
    with open(os.path.join(run.data_dir, "store.db"), "rb") as fh:
        assert credential.encode() not in fh.read()
    for args, hint in ((("client", "add", "x"), "--account"),
                       (("client", "add", "x", "--account", "alice", "--verifier"), "--account"),
                       (("client", "add", "x", "--account", "nobody"), "--account"),
                       (("client", "add", "phone", "--verifier"), "NAME")):
        result = run(*args)
        assert result.exit_code == 2 and hint in result.output, (args, result.output)


@pytest.mark.parametrize("args,option", [
    (("--type", "hotp", "--digits", "5"), "--digits"),
    (("--type", "totp", "--digits", "11"), "--digits"),
    (("--type", "hotp", "--lockout", "101"), "--lockout"),
    (("--type", "hotp", "--ttl", "0"), "--ttl"),
    (("--type", "hotp", "--ttl", "86401"), "--ttl"),
    (("--type", "totp", "--ttl", "60"), "--ttl"),
    (("--type", "hotp", "--algorithm", "md5"), "--algorithm"),
    (("--type", "hotp", "--authorities", "1,x"), "--authorities"),
    (("--type", "hotp", "--authorities", "1,1"), "--authorities"),
    (("--type", "hashchain", "--chain-length", "0"), "--chain-length"),
    (("--type", "hotp", "--chain-length", "5"), "--chain-length"),
    (("--type", "sha1"), "--type"),
    (("--type", "rsa-lfsr"), "--insecure-paper-mode"),
    (("--type", "rsa-primroot"), "--insecure-paper-mode"),
])
def test_admin_account_add_bad_input(initialised, args, option):
    result = initialised("account", "add", "bad", *args)
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_admin_insecure_types_warn(initialised):
    result = initialised("account", "add", "paper", "--type", "rsa-lfsr")
    assert "INSECURE" in result.stderr


def test_admin_account_lifecycle(initialised):
    run = initialised
    assert run("account", "add", "alice", "--type", "totp", "--digits", "8").exit_code == 0
    result = run("account", "add", "bob", "--type", "hashchain", "--authorities", "1,2")
    assert result.exit_code == 2 and "authority 1 is not registered" in result.output
    for i in range(1, 5):
        assert run("authority", "add", str(i)).exit_code == 0
    result = run("account", "add", "bob", "--type", "hashchain", "--authorities", "1,2,3,4")
    assert result.exit_code == 0 and "waits for the key ceremony" in result.stdout
    assert run("account", "add", "alice", "--type", "hotp").exit_code == 2
    listing = run("account", "list").stdout.splitlines()
    assert listing == ["alice\ttotp\tactive", "bob\thashchain\tpending"]
    show = run("account", "show", "alice").stdout
    assert "digits: 8" in show and "lockout: 10" in show and "key" not in show
    assert "locked: False" in show and "lockout_policy: temporary" in show
    assert run("account", "lock", "alice").exit_code == 0
    assert "LOCKED" in run("account", "list").stdout
    assert "locked_until: permanent" in run("account", "show", "alice").stdout
    assert run("account", "unlock", "alice").exit_code == 0
    assert "LOCKED" not in run("account", "list").stdout
    assert run("account", "unlock", "nobody").exit_code == 2
    assert run("account", "lock", "nobody").exit_code == 2
    result = run("account", "add", "carol", "--type", "hotp", "--lockout-policy", "permanent")
    assert result.exit_code == 0
    assert "lockout_policy: permanent" in run("account", "show", "carol").stdout
    result = run("account", "add", "dave", "--type", "hotp", "--lockout-policy", "never")
    assert result.exit_code == 2 and "--lockout-policy" in result.output
    assert run("account", "delete", "carol", "--yes").exit_code == 0
    assert run("account", "delete", "bob", input="n\n").exit_code == 1
    assert run("account", "delete", "bob", "--yes").exit_code == 0
    assert run("account", "list").stdout.splitlines() == ["alice\ttotp\tactive"]
    assert run("account", "show", "bob").exit_code == 2


def test_admin_enroll(initialised, tmp_path):
    run = initialised
    run("account", "add", "alice", "--type", "totp")
    run("account", "add", "chain", "--type", "hashchain")
    result = run("enroll", "alice")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("otpauth://totp/otpfast:alice?secret=")
    png = tmp_path / "qr.png"
    result = run("enroll", "alice", "--png", str(png))
    assert result.exit_code == 0 and png.read_bytes().startswith(b"\x89PNG")
    assert run("enroll", "alice", "--svg", str(tmp_path / "qr.png")).exit_code == 2
    result = run("enroll", "chain")
    assert result.exit_code == 2 and "hotp/totp" in result.output


def test_admin_audit_verify(initialised):
    run = initialised
    run("account", "add", "alice", "--type", "hotp")
    run("authority", "add", "1")
    result = run("audit", "verify")
    assert result.exit_code == 0 and "2 entries" in result.stdout
    conn = sqlite3.connect(os.path.join(run.data_dir, "store.db"))
    conn.execute("UPDATE audit SET account = 'mallory' WHERE seq = 1")
    conn.commit()
    conn.close()
    result = run("audit", "verify")
    assert result.exit_code == 1 and "entry 1" in result.output


def test_admin_wrong_at_rest_key(initialised, monkeypatch):
    monkeypatch.setenv("OTPFAST_AT_REST_KEY", "00" * 32)
    result = initialised("account", "list")
    assert result.exit_code == 1 and "at-rest key does not match" in result.output


def test_admin_audit_verify_lists_edited_rows(initialised):
    """Finding 6: rows edited without the at-rest key are refused by the CLI and listed by
    `audit verify` (exit 1)."""
    run = initialised
    run("account", "add", "alice", "--type", "hotp", "--lockout", "3")
    run("client", "add", "dev", "--account", "alice")
    run("client", "add", "rp", "--verifier")
    _lock(run.data_dir, "alice", 3)
    assert run("audit", "verify").exit_code == 0
    _sql(run.data_dir, "UPDATE accounts SET failures = 0 WHERE name = 'alice'")
    _sql(run.data_dir, "UPDATE clients SET verifier = 1, account = NULL WHERE name = 'dev'")
    result = run("account", "show", "alice")
    assert result.exit_code == 2 and "no account named" in result.output
    assert run("account", "list").stdout == ""
    result = run("audit", "verify")
    assert result.exit_code == 1 and "REFUSED (2)" in result.stderr
    assert "accounts row 'alice'" in result.stderr and "clients row 'dev'" in result.stderr


def test_admin_audit_verify_missing_head_file(initialised):
    """Finding 7: with audit.head deleted, the whole log truncated is no longer "intact"."""
    run = initialised
    run("authority", "add", "1")
    os.remove(os.path.join(run.data_dir, "audit.head"))
    _sql(run.data_dir, "DELETE FROM audit")
    _sql(run.data_dir, "DELETE FROM authorities")
    _sql(run.data_dir, "UPDATE audit_head SET seq = 0, hash = ?", (bytes(32),))
    result = run("audit", "verify")
    assert result.exit_code == 1 and "head file is missing" in result.stderr


def test_admin_audit_archive(initialised, tmp_path):
    """`audit archive --before DATE FILE`: the old entries move to FILE, the rest verifies
    from the anchor, the archive verifies on its own and joins up; a tampered anchor or
    archive is reported."""
    run = initialised
    run("authority", "add", "1")
    run("authority", "add", "2")
    archive = tmp_path / "old.jsonl"
    assert "nothing archived" in run("audit", "archive", "--before", "2001-01-01",
                                     str(archive)).stdout
    result = run("audit", "archive", "--before", "2999-01-01T00:00:00+01:00", str(archive))
    assert result.exit_code == 0, result.output
    assert "archived entries 1..2 (2)" in result.stdout
    assert os.stat(archive).st_mode & 0o777 == 0o600
    lines = archive.read_text().splitlines()
    assert len(lines) == 3 and "authority-added" in lines[1]
    run("authority", "add", "3")
    result = run("audit", "verify")
    assert result.exit_code == 0 and "from archive anchor 2" in result.stdout, result.output
    result = run("audit", "verify", "--archive", str(archive))
    assert result.exit_code == 0 and "entries 1..2 (2)" in result.stdout, result.output
    assert run("audit", "archive", "--before", "yesterday", str(tmp_path / "x")).exit_code == 2
    again = run("audit", "archive", "--before", "2001-01-01", str(archive))
    assert again.exit_code == 2 and "exists" in again.output
    # the archived authorities' rows are still covered: an edit is reported
    _sql(run.data_dir, "UPDATE authorities SET credential_hash = ? WHERE id = 1", (b"x" * 32,))
    result = run("audit", "verify")
    assert result.exit_code == 1 and "authorities row 1" in result.stderr
    _sql(run.data_dir, "UPDATE authorities SET credential_hash = ? WHERE id = 1",
         (_sql(run.data_dir, "SELECT credential_hash FROM authorities WHERE id = 2")[0][0],))
    # a tampered archive file
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(archive.read_text().replace("authority-added", "authority-added!", 1))
    result = run("audit", "verify", "--archive", str(tampered))
    assert result.exit_code == 1 and "BROKEN" in result.output
    # a tampered anchor (more entries deleted, the anchor moved without the key)
    _sql(run.data_dir, "DELETE FROM audit WHERE seq = 3")
    _sql(run.data_dir, "UPDATE audit_anchor SET seq = 3,"
         " hash = (SELECT hash FROM audit WHERE seq = 4)")
    result = run("audit", "verify")
    assert result.exit_code == 1 and "anchor was altered" in result.stderr


# -- the admin's everyday tools (issue 10 item 6) --------------------------------------------
def _json_lines(result):
    import json
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_admin_client_list_delete_rotate(initialised):
    run = initialised
    run("account", "add", "alice", "--type", "hotp")
    old = run("client", "add", "phone", "--account", "alice").stdout.strip()
    run("client", "add", "vpn", "--verifier")
    listing = run("client", "list").stdout.splitlines()
    assert [line.split("\t")[:3] for line in listing] == [["phone", "device", "alice"],
                                                          ["vpn", "verifier", "-"]]
    rows = _json_lines(run("client", "list", "--json"))
    assert [sorted(row) for row in rows] == [["account", "created", "name", "role"]] * 2
    assert rows[1] == {**rows[1], "name": "vpn", "role": "verifier", "account": None}
    assert old not in run("client", "list", "--json").stdout
    rotated = run("client", "rotate", "phone")
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", new) and new != old
    assert "shown only once" in rotated.stderr and "--pin sha256:" in rotated.stderr
    assert run("client", "rotate", "nobody").exit_code == 2
    assert run("client", "delete", "vpn", input="n\n").exit_code == 1
    assert run("client", "delete", "vpn", "--yes").exit_code == 0
    assert [r["name"] for r in _json_lines(run("client", "list", "--json"))] == ["phone"]
    result = run("client", "delete", "vpn", "--yes")
    assert result.exit_code == 2 and "no client named" in result.output


def test_admin_authority_list_delete(initialised):
    run = initialised
    for i in ("1", "6", "2147483647"):
        assert run("authority", "add", i).exit_code == 0
    assert [line.split("\t")[0] for line in run("authority", "list").stdout.splitlines()] == [
        "1", "6", "2147483647"]
    assert [r["id"] for r in _json_lines(run("authority", "list", "--json"))] == [1, 6, 2**31 - 1]
    run("account", "add", "carol", "--type", "hotp", "--authorities", "6,2147483647")
    result = run("authority", "delete", "6", "--yes")
    assert result.exit_code == 2 and "carol" in result.output and "'ID'" in result.output
    assert run("authority", "delete", "1", "--yes").exit_code == 0
    assert run("authority", "delete", "1", "--yes").exit_code == 2
    assert run("audit", "verify").exit_code == 0


def test_admin_account_delete_revokes_its_clients(initialised):
    run = initialised
    run("account", "add", "alice", "--type", "hotp")
    run("client", "add", "phone", "--account", "alice")
    run("client", "add", "vpn", "--verifier")
    result = run("account", "delete", "alice", "--yes")
    assert result.exit_code == 0
    assert "client phone (bound to alice) deleted" in result.stdout
    assert [r["name"] for r in _json_lines(run("client", "list", "--json"))] == ["vpn"]
    audit = _json_lines(run("audit", "list", "--account", "alice", "--json"))
    assert [e["outcome"] for e in audit] == ["account-added:hotp", "client-added",
                                             "account-deleted", "client-deleted"]


def test_admin_audit_list(initialised):
    run = initialised
    run("account", "add", "alice", "--type", "hotp")
    run("account", "add", "bob", "--type", "hotp")
    distribution = DataDir(run.data_dir).distribution()
    try:
        for source in ("203.0.113.1", "203.0.113.2"):
            with pytest.raises(InvalidToken):
                distribution.verify("alice", "000000", source=source)
    finally:
        distribution.store.close()
    lines = run("audit", "list", "--account", "alice", "--result", "rejected").stdout.splitlines()
    assert len(lines) == 2
    seq, when, event, account, client, source, outcome = lines[0].split("\t")
    assert (event, account, client, source, outcome) == (
        "verify", "alice", "-", "203.0.113.1", "rejected:wrong-expired-or-used")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", when)
    entries = _json_lines(run("audit", "list", "--json"))
    assert [e["account"] for e in entries] == ["alice", "bob", "alice", "alice"]
    assert all(e["intact"] for e in entries)
    later = entries[2]["epoch"]
    assert len(_json_lines(run("audit", "list", "--json", "--since", str(later)))) == 2
    assert len(_json_lines(run("audit", "list", "--json", "--since", "2999-01-01"))) == 0
    assert len(_json_lines(run("audit", "list", "--json", "--since", "2001-01-01T00:00Z"))) == 4
    assert _json_lines(run("audit", "list", "--json", "--result", "accepted")) == []
    for bad in ("yesterday", "12:00:00x", "-5"):
        result = run("audit", "list", "--since", bad)
        assert result.exit_code == 2 and "--since" in result.output, bad
    _sql(run.data_dir, "UPDATE audit SET source = '10.0.0.1' WHERE seq = 3")
    assert "ALTERED" in run("audit", "list").stdout.splitlines()[2]


def test_admin_json_on_show_and_audit_verify(initialised):
    import json
    run = initialised
    run("account", "add", "chain", "--type", "hashchain", "--chain-length", "3")
    info = json.loads(run("account", "show", "chain", "--json").stdout)
    assert info["name"] == "chain" and info["uses_left"] == 3 and info["counter"] == 0
    assert "seed" not in info and "material" not in info
    listed = _json_lines(run("account", "list", "--json"))
    assert listed == [info]
    result = run("audit", "verify", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["ok"] and report["entries"] == 1
    assert sorted(report) == ["anchor_seq", "archives", "bad_rows", "entries", "first_bad",
                              "head_hash", "head_seq", "ok", "reason"]
    _sql(run.data_dir, "UPDATE accounts SET counter = 2 WHERE name = 'chain'")
    result = run("audit", "verify", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and not report["ok"] and len(report["bad_rows"]) == 1


def test_admin_hash_chain_exhausted_is_explained(initialised):
    import json
    from otpfast.services import masking

    run = initialised
    run("account", "add", "chain", "--type", "hashchain", "--chain-length", "1")
    credential = run("client", "add", "phone", "--account", "chain").stdout.strip()
    distribution = DataDir(run.data_dir).distribution()
    try:
        phone = distribution.login("phone", credential)
        issued = distribution.request(phone, "chain")
        otp = masking.unmask(phone.session_key, "chain", issued.nonce, issued.masked,
                             issued.expires_at_ms)
    finally:
        distribution.store.close()
    assert json.loads(run("account", "show", "chain", "--json").stdout)["uses_left"] == 0
    show = run("account", "show", "chain")
    assert "uses_left: 0" in show.stdout and "used up" in show.stderr
    assert "EXHAUSTED" in run("account", "list").stdout
    result = run("verify", "--account", "chain", "--json", otp)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"account": "chain", "accepted": True,
                                         "result": "accepted"}
    result = run("verify", "--account", "chain", otp)
    assert result.exit_code == 1 and "used up (0 uses left)" in result.stderr
    outcomes = [e["outcome"] for e in _json_lines(run("audit", "list", "--json",
                                                      "--account", "chain"))]
    assert outcomes[-1] == "rejected:chain-exhausted"


def test_admin_audit_list_after_an_archive_is_intact(initialised, tmp_path):
    run = initialised
    run("authority", "add", "1")
    run("authority", "add", "2")
    assert run("audit", "archive", "--before", "2999-01-01", str(tmp_path / "a.jsonl")).exit_code == 0
    run("authority", "add", "3")
    entries = _json_lines(run("audit", "list", "--json"))
    assert entries and all(e["intact"] for e in entries)
    assert entries[-1]["outcome"] == "authority-added" and entries[-1]["client"] == "authority:3"
