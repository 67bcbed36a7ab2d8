"""`otpfast rotate at-rest|rsa|tls`: the at-rest key replaced in one transaction (secrets
re-encrypted, rows and the audit chain MACed again) with everything still working after it;
crash-safe either side of the COMMIT; a tampered store refused; SQLite and PostgreSQL."""
import datetime
import os
import sqlite3

import pytest
from click.testing import CliRunner

from otpfast.datadir import DataDir
from otpfast.errors import StoreError
from otpfast.services import masking
from otpfast.services.distribution import VerifyItem
from otpfast.services.usertokens import TokenAdmin
from otpfast.store import atrest
from otpfast_cli.main import cli

PIN = "4711-pin"


def _run(*args):
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _setup(data_dir, tmp_path, archive=True):
    """Accounts of each kind of secret, a PIN, recovery codes, an archived part of the log
    (``archive``), and an OTP issued but not yet used."""
    admin = data_dir.admin()
    admin.add_account("alice", "hashchain", chain_length=100)
    admin.add_account("bob", "hotp")
    admin.add_account("erin", "hashchain", chain_length=20)
    device = admin.add_client("alice-device", account="alice")
    bob_device = admin.add_client("bob-device", account="bob")
    TokenAdmin(admin.store).set_pin("bob", PIN)
    _token, codes = TokenAdmin(admin.store).add("erin", "recovery", count=3)
    admin.store.close()
    if archive:
        tomorrow = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).isoformat()
        code, out = _run("audit", "archive", "--data-dir", data_dir.path, "--before", tomorrow,
                         str(tmp_path / "archive.jsonl"))
        assert code == 0, out
    return {"device": device, "bob_device": bob_device, "codes": codes,
            "pending": _issue(data_dir, "alice-device", device, "alice")}


def _issue(data_dir, client, credential, account):
    distribution = data_dir.distribution()
    try:
        session = distribution.login(client, credential.encode())
        issued = distribution.request(session, account)
        return masking.unmask(session.session_key, account, issued.nonce, issued.masked, issued.expires_at_ms)
    finally:
        distribution.store.close()


def _verify(data_dir, account, otp):
    distribution = data_dir.distribution()
    try:
        return distribution.verify_many([VerifyItem(account, otp, "127.0.0.1", None)])[0]
    finally:
        distribution.store.close()


def _intact(data_dir):
    code, out = _run("audit", "verify", "--data-dir", data_dir.path)
    assert code == 0 and "intact" in out, out


def _check_everything_works(data_dir, state):
    _intact(data_dir)
    assert _verify(data_dir, "alice", state["pending"])              # issued before the rotation
    assert _verify(data_dir, "alice", _issue(data_dir, "alice-device", state["device"], "alice"))
    otp = _issue(data_dir, "bob-device", state["bob_device"], "bob")
    assert not _verify(data_dir, "bob", otp)                         # no PIN: refused
    assert _verify(data_dir, "bob", PIN + _issue(data_dir, "bob-device", state["bob_device"], "bob"))
    assert _verify(data_dir, "erin", state["codes"][0])              # recovery code (same pepper)
    _intact(data_dir)


def test_rotate_at_rest_reencrypts_and_everything_still_works(tmp_path):
    data_dir = DataDir(str(tmp_path / "d"))
    data_dir.init(rsa_bits=2048)
    state = _setup(data_dir, tmp_path)
    old_key = (tmp_path / "d" / "at-rest.key").read_text()
    conn = sqlite3.connect(data_dir.file("store.db"))
    old_material = conn.execute("SELECT material_enc FROM accounts WHERE name = 'bob'").fetchone()[0]
    conn.close()
    code, out = _run("rotate", "at-rest", "--data-dir", data_dir.path)
    assert code == 0, out
    new_key = (tmp_path / "d" / "at-rest.key").read_text()
    assert new_key != old_key and not os.path.exists(data_dir.file("at-rest.key.new"))
    assert os.stat(data_dir.file("at-rest.key")).st_mode & 0o077 == 0
    conn = sqlite3.connect(data_dir.file("store.db"))
    assert conn.execute("SELECT material_enc FROM accounts WHERE name = 'bob'").fetchone()[0] != old_material
    assert conn.execute("SELECT outcome FROM audit ORDER BY seq DESC LIMIT 1").fetchone()[0] == "at-rest-key-rotated"
    conn.close()
    # the old key no longer opens the store
    from otpfast.store import SQLiteStore
    with pytest.raises(StoreError, match="does not match"):
        SQLiteStore(data_dir.file("store.db"), atrest.decode_key(old_key))
    _check_everything_works(data_dir, state)
    # and a second rotation (a 96-byte key carrying the pepper on)
    state["pending"] = _issue(data_dir, "alice-device", state["device"], "alice")
    state["codes"].pop(0)
    assert _run("rotate", "at-rest", "--data-dir", data_dir.path)[0] == 0
    _check_everything_works(data_dir, state)


def _crash(data_dir, after_commit):
    """Run the rotation up to the renames; ``after_commit`` False: die just before COMMIT."""
    from otpfast import rotate
    from otpfast.store.chain import HeadFile
    from otpfast.store.rekey import rekey

    class Crash(Exception):
        pass

    store = data_dir.open_store()
    root = atrest.new_key()

    def before_commit(heads):
        key = root + store.keys.carried
        rotate._write_new(data_dir.file("at-rest.key") + ".new", atrest.encode_key(key).encode() + b"\n")
        HeadFile(data_dir.file("audit.head") + ".new", atrest.AtRestKeys(key).head_mac).rewrite(*heads[1])
        if not after_commit:
            raise Crash()

    try:
        rekey(store, root, before_commit)
    except Crash:
        pass
    finally:
        store._head_file.close()
        for conn in store._connections:   # a crash: no clean close, no rename
            conn.close()
    assert os.path.exists(data_dir.file("at-rest.key.new"))
    return root


@pytest.mark.parametrize("after_commit", [False, True], ids=["before-commit", "after-commit"])
def test_rotate_at_rest_crash_either_side_of_commit_is_settled(tmp_path, after_commit, caplog):
    data_dir = DataDir(str(tmp_path / "d"))
    data_dir.init(rsa_bits=2048)
    state = _setup(data_dir, tmp_path)
    old_key = (tmp_path / "d" / "at-rest.key").read_text()
    new_root = _crash(data_dir, after_commit)
    _check_everything_works(data_dir, state)                         # the next open settles it
    assert not os.path.exists(data_dir.file("at-rest.key.new"))
    assert not os.path.exists(data_dir.file("audit.head.new"))
    key = (tmp_path / "d" / "at-rest.key").read_text()
    if after_commit:
        assert atrest.decode_key(key)[:32] == new_root and "finished an interrupted" in caplog.text
    else:
        assert key == old_key and "did not commit" in caplog.text


def test_rotate_at_rest_refuses_a_tampered_store_and_changes_nothing(tmp_path):
    data_dir = DataDir(str(tmp_path / "d"))
    data_dir.init(rsa_bits=2048)
    _setup(data_dir, tmp_path)
    conn = sqlite3.connect(data_dir.file("store.db"))
    conn.execute("UPDATE accounts SET failures = 0, counter = counter + 5 WHERE name = 'bob'")
    conn.commit()
    conn.close()
    before = (tmp_path / "d" / "at-rest.key").read_bytes()
    code, out = _run("rotate", "at-rest", "--data-dir", data_dir.path)
    assert code == 1 and "refused, nothing changed" in out, out
    assert (tmp_path / "d" / "at-rest.key").read_bytes() == before
    assert not os.path.exists(data_dir.file("at-rest.key.new"))


def test_rotate_at_rest_refuses_a_share_server_data_dir_and_changes_nothing(tmp_path):
    """shares.db is under the same at-rest key and not re-encrypted by the rotation: refused
    (exit 2 naming --data-dir) rather than leaving a share store that no longer opens."""
    data_dir = DataDir(str(tmp_path / "d"))
    data_dir.init(rsa_bits=2048)
    data_dir.share_server().store.close()         # the share-server role's store, created
    before = (tmp_path / "d" / "at-rest.key").read_bytes()
    code, out = _run("rotate", "at-rest", "--data-dir", data_dir.path)
    assert code == 2 and "--data-dir" in out and "shares.db" in out, out
    assert (tmp_path / "d" / "at-rest.key").read_bytes() == before
    data_dir.share_server().store.close()         # still opens


def test_rotate_at_rest_with_the_key_in_the_environment_exits_2(tmp_path, monkeypatch):
    monkeypatch.setenv(atrest.ENV_VAR, "11" * 32)
    data_dir = DataDir(str(tmp_path / "d"))
    data_dir.init(rsa_bits=2048)
    code, out = _run("rotate", "at-rest", "--data-dir", data_dir.path)
    assert code == 2 and "--data-dir" in out and atrest.ENV_VAR in out


@pytest.mark.service
def test_rotate_at_rest_on_postgres(tmp_path, pg_url):
    from ..services.test_datadir import _as_url

    data_dir = DataDir(str(tmp_path / "d"))
    data_dir.init(rsa_bits=2048, store_url=_as_url(pg_url))
    state = _setup(data_dir, tmp_path)      # every node chain archived: an anchor of its own
    code, out = _run("rotate", "at-rest", "--data-dir", data_dir.path)
    assert code == 0, out
    _check_everything_works(data_dir, state)


def test_rotate_rsa_keeps_the_old_key_and_the_keyserver_uses_the_new(tmp_path):
    data_dir = DataDir(str(tmp_path / "d"))
    data_dir.init(rsa_bits=2048)
    before = data_dir.keyserver().public_key_pem()
    code, out = _run("rotate", "rsa", "--data-dir", data_dir.path, "--rsa-bits", "2048")
    assert code == 0 and "restart" in out, out
    kept = [name for name in os.listdir(data_dir.path) if name.startswith("keyserver.pem.") and name.endswith(".old")]
    assert len(kept) == 1 and os.stat(data_dir.file(kept[0])).st_mode & 0o077 == 0
    service = data_dir.keyserver()
    try:
        assert service.public_key_pem() != before
    finally:
        service.close()
    code, out = _run("rotate", "rsa", "--data-dir", data_dir.path, "--rsa-bits", "1024")
    assert code == 2 and "--rsa-bits" in out


def test_rotate_tls_options(tmp_path):
    data_dir = DataDir(str(tmp_path / "d"))
    data_dir.init(rsa_bits=2048)
    pin = data_dir.fingerprint()
    code, out = _run("rotate", "tls", "--data-dir", data_dir.path, "--keep-key")
    assert code == 0 and out.splitlines()[0] == pin
    other = DataDir(str(tmp_path / "other"))
    other.init(rsa_bits=2048)
    code, out = _run("rotate", "tls", "--data-dir", data_dir.path, "--tls-cert", other.file("tls.crt"),
                     "--tls-key", data_dir.file("tls.key"))
    assert code == 2 and "--tls-cert" in out and "not for that private key" in out
    code, out = _run("rotate", "tls", "--data-dir", data_dir.path, "--tls-cert", other.file("tls.crt"))
    assert code == 2 and "--tls-cert" in out
    code, out = _run("rotate", "tls", "--data-dir", data_dir.path, "--tls-cert", other.file("tls.crt"),
                     "--tls-key", other.file("tls.key"))
    assert code == 0 and out.splitlines()[0] == other.fingerprint() == data_dir.fingerprint()
    code, out = _run("rotate", "tls", "--data-dir", str(tmp_path / "none"))
    assert code == 2 and "--data-dir" in out
