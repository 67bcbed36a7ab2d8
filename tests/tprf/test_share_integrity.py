"""A writer of one share server's shares.db without its at-rest key (issue 13, share store
integrity): each edit is made with sqlite3 on a real file and is refused or reported; the
3-of-5 double accept it would allow fails end to end."""
import os
import shutil
import sqlite3

import pytest
from click.testing import CliRunner

from otpfast.errors import Refused, StoreError
from otpfast.services.shares import Principal, ShareServer
from otpfast.store.atrest import new_key
from otpfast.store.shares import HEAD_FILE, ISSUE, VERIFY, IntegrityError, ShareStore
from otpfast_cli.main import cli

PUBLIC = {"key": "00" * 32, "shares": {"1": "00" * 32}}


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "shares.db")


def _store(path, key):
    store = ShareStore(path, key)
    store.add_share("alice", "S1", 1, 2, b"\1" * 32, PUBLIC, b"transcript", 0.0)
    store.confirm("alice", b"transcript", {"1": "00"})
    store.add_principal("phone", "device", "alice", b"h" * 32, 0.0)
    store.add_principal("login", "verifier", None, b"v" * 32, 0.0)
    return store


def _sql(path, statement, *args):
    db = sqlite3.connect(path)
    try:
        rows = db.execute(statement, args).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


def _reopened_refuses(path, key, *calls):
    """The edit is refused by a fresh process (the whole check at open) and reported."""
    store = ShareStore(path, key)
    try:
        for call in calls:
            with pytest.raises(IntegrityError):
                call(store)
        report = store.verify()
        assert not report.ok and report.bad_rows
        return report
    finally:
        store.close()


def test_deleted_consumed_mark_is_refused(path):
    key = new_key()
    store = _store(path, key)
    assert store.mark("alice", 5, ISSUE) and store.mark("alice", 5, VERIFY)
    # clear the consumed bit (the mark) in place, while the server has the file open
    _sql(path, "UPDATE state SET consumed = zeroblob(8) WHERE account = 'alice'")
    with pytest.raises(IntegrityError):
        store.mark("alice", 5, VERIFY)
    store.close()
    report = _reopened_refuses(path, key, lambda s: s.mark("alice", 5, VERIFY), lambda s: s.status("alice"))
    assert "state row 'alice' fails its integrity check" in report.reason


def test_state_row_restored_from_an_older_copy_is_refused(path):
    """The mark removed by writing back the row as it was (valid MAC, older version)."""
    key = new_key()
    store = _store(path, key)
    assert store.mark("alice", 5, ISSUE)
    (old,) = _sql(path, "SELECT account, watermark, issued, consumed, ver, mac FROM state")
    assert store.mark("alice", 5, VERIFY)
    _sql(path, "INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?, ?, ?)", *old)
    with pytest.raises(IntegrityError, match="rolled back"):     # the running server
        store.mark("alice", 5, VERIFY)
    store.close()
    report = _reopened_refuses(path, key, lambda s: s.mark("alice", 5, VERIFY))   # after a restart
    assert "rolled back to an older copy" in report.reason


def test_lowered_watermark_is_refused(path):
    key = new_key()
    store = _store(path, key)
    assert store.mark("alice", 9, ISSUE)
    store.close()
    _sql(path, "UPDATE state SET watermark = 0 WHERE account = 'alice'")
    _reopened_refuses(path, key, lambda s: s.mark("alice", 3, ISSUE), lambda s: s.status("alice"))


def test_deleted_state_row_is_refused(path):
    key = new_key()
    store = _store(path, key)
    assert store.mark("alice", 1, VERIFY)
    store.close()
    _sql(path, "DELETE FROM state")
    report = _reopened_refuses(path, key, lambda s: s.mark("alice", 1, VERIFY))
    assert "deleted outside otpfast" in report.reason


@pytest.mark.parametrize("edit", [
    "UPDATE principals SET role = 'verifier', account = NULL WHERE name = 'phone'",
    "UPDATE principals SET credential_hash = (SELECT credential_hash FROM principals WHERE name = 'login') "
    "WHERE name = 'phone'",
    # the verifier's whole row (with its MAC and version) copied under the device's name
    "INSERT OR REPLACE INTO principals SELECT 'phone', role, account, credential_hash, created_at, ver, mac "
    "FROM principals WHERE name = 'login'",
])
def test_swapped_principal_is_refused(path, edit):
    key = new_key()
    _store(path, key).close()
    _sql(path, edit)
    _reopened_refuses(path, key, lambda s: s.principal("phone"))
    store = ShareStore(path, key)
    assert store.principal("login") == ("verifier", None, b"v" * 32)      # the other rows still work
    store.close()


def test_edited_share_row_is_refused_and_counted(tmp_path, path):
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = new_key()
    _store(path, key).close()
    _sql(path, "UPDATE shares SET signatures = NULL")       # "pending": a new DKG could replace it
    server = ShareServer(ShareStore(path, key), rsa.generate_private_key(public_exponent=65537, key_size=2048),
                         "sha256:" + "00" * 32)
    try:
        verifier = Principal("login", "verifier", None, b"k" * 32)
        with pytest.raises(Refused):
            server.evaluate(verifier, "alice", 0, VERIFY)
        with pytest.raises(Refused):
            server.status(verifier, "alice")
        assert server.integrity_refusals == 2
    finally:
        server.close()


def _copy(path, dest):
    """A consistent copy of a live store (as a backup tool would take it)."""
    source, target = sqlite3.connect(path), sqlite3.connect(dest)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def _restore(copy, path):
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    shutil.copyfile(copy, path)


def test_older_copy_of_shares_db_is_refused(tmp_path, path):
    key = new_key()
    store = _store(path, key)
    assert store.mark("alice", 5, ISSUE)
    _copy(path, str(tmp_path / "old.db"))
    assert store.mark("alice", 5, VERIFY)
    store.close()
    _restore(str(tmp_path / "old.db"), path)
    with pytest.raises(StoreError, match="removed from the end"):
        ShareStore(path, key)
    report = ShareStore(path, key, check=False).verify()
    assert report.first_bad is not None and "head file is at" in report.reason


def test_deleted_head_file_is_an_error(tmp_path, path):
    key = new_key()
    store = _store(path, key)
    assert store.mark("alice", 5, VERIFY)
    store.close()
    os.remove(str(tmp_path / HEAD_FILE))
    with pytest.raises(StoreError, match="head file is missing"):
        ShareStore(path, key)
    # an empty store without its head is simply new
    empty = str(tmp_path / "empty" / "shares.db")
    os.mkdir(os.path.dirname(empty))
    ShareStore(empty, key).close()
    os.remove(os.path.join(os.path.dirname(empty), HEAD_FILE))
    ShareStore(empty, key).close()


def test_edited_event_is_refused(path):
    key = new_key()
    store = _store(path, key)
    assert store.mark("alice", 5, VERIFY)
    store.close()
    _sql(path, "UPDATE events SET principal = 'someone-else' WHERE event = 'verify'")
    with pytest.raises(StoreError, match="was altered"):
        ShareStore(path, key)


def test_store_of_the_unauthenticated_layout_is_refused(path):
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE watermarks (account TEXT PRIMARY KEY, watermark INTEGER NOT NULL);"
                     "CREATE TABLE counters (account TEXT, counter INTEGER, issued INTEGER, consumed INTEGER);")
    db.close()
    with pytest.raises(StoreError, match="earlier otpfast .* re-create it"):
        ShareStore(path, new_key())


def test_share_server_verify_command(tmp_path):
    from otpfast.datadir import DataDir

    runner = CliRunner()
    data_dir = str(tmp_path / "s1")
    assert runner.invoke(cli, ["init", "--data-dir", data_dir]).exit_code == 0
    assert runner.invoke(cli, ["share-server", "principal", "add", "login", "--role", "verifier",
                               "--data-dir", data_dir]).exit_code == 0
    result = runner.invoke(cli, ["share-server", "verify", "--data-dir", data_dir])
    assert result.exit_code == 0 and "share store intact: 1 events" in result.output
    path = DataDir(data_dir).file("shares.db")
    _sql(path, "UPDATE principals SET role = 'admin'")
    result = runner.invoke(cli, ["share-server", "verify", "--data-dir", data_dir])
    assert result.exit_code == 1 and "principals row 'login' fails its integrity check" in result.output
    result = runner.invoke(cli, ["share-server", "principal", "list", "--data-dir", data_dir])
    assert result.exit_code == 1 and "login\tadmin\t-\tREFUSED" in result.output
    os.remove(DataDir(data_dir).file(HEAD_FILE))
    result = runner.invoke(cli, ["share-server", "verify", "--data-dir", data_dir])
    assert result.exit_code == 1 and "head file is missing" in result.output
    result = runner.invoke(cli, ["share-server", "principal", "list", "--data-dir", data_dir])
    assert result.exit_code == 1 and "fails its check" in result.output


@pytest.mark.parametrize("attack", ["clear-mark", "restore-row", "restore-file"])
def test_three_of_five_double_accept_fails(harness, tmp_path, attack):
    """Verifier 1 consumes counter c on s1,s2,s3; s3's store is edited to forget it; verifier 2
    gathers s3,s4,s5: no second accept (s3 refuses the account, or refuses to start)."""
    async def scenario(h):
        await h.dkg()
        otp, counter, _, _ = await h.issue(["s1", "s2", "s3"])
        path = h.local.datadirs["s3"].file("shares.db")
        (before,) = _sql(path, "SELECT account, watermark, issued, consumed, ver, mac FROM state")
        _copy(path, str(tmp_path / "s3-before.db"))
        assert (await h.verify(otp, ["s1", "s2", "s3"], verifier="login-a"))[0] is True
        await h.local.stop("s3")
        if attack == "clear-mark":
            _sql(path, "UPDATE state SET consumed = zeroblob(8)")
        elif attack == "restore-row":
            _sql(path, "INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?, ?, ?)", *before)
        else:
            _restore(str(tmp_path / "s3-before.db"), path)
        try:
            await h.local.start("s3")
        except StoreError:
            assert attack == "restore-file"         # the head file: s3 does not start
        else:
            assert attack != "restore-file"
        ok, answered, _ = await h.verify(otp, ["s3", "s4", "s5"], verifier="login-b")
        assert ok is False
        if attack != "restore-file":
            assert h.local.services["s3"].integrity_refusals >= 1
            assert "s3" not in answered
        # the next OTP goes on through the servers that are intact
        otp2, _, _, _ = await h.issue(["s1", "s2", "s4"])
        assert (await h.verify(otp2, ["s1", "s2", "s4"], verifier="login-a"))[0] is True
    harness(scenario)


def test_checkpoint_bounds_the_check_and_still_catches_rollbacks(tmp_path, path, monkeypatch):
    """A check at open that walked many events appends a checkpoint; the next check starts
    there, and a row restored from before the checkpoint, an older file, an altered anchor
    are still refused."""
    from otpfast.store import shares

    monkeypatch.setattr(shares, "CHECKPOINT_EVENTS", 5)
    key = new_key()
    store = _store(path, key)
    assert store.mark("alice", 1, ISSUE)
    (old,) = _sql(path, "SELECT account, watermark, issued, consumed, ver, mac FROM state")
    for counter in range(1, 8):
        assert store.mark("alice", counter, VERIFY)
    store.close()
    ShareStore(path, key).close()                     # walks 11 events, then checkpoints
    _copy(path, str(tmp_path / "old.db"))
    store = ShareStore(path, key)
    assert store.verify().entries == 1                # from the checkpoint on
    assert store.mark("alice", 9, ISSUE) and store.mark("alice", 9, VERIFY)
    store.close()
    assert _sql(path, "SELECT count(*) FROM events WHERE event = 'checkpoint'") == [(1,)]
    _sql(path, "INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?, ?, ?)", *old)
    report = _reopened_refuses(path, key, lambda s: s.mark("alice", 7, VERIFY))
    assert "rolled back to an older copy" in report.reason
    _restore(str(tmp_path / "old.db"), path)          # the whole file, from before the last marks
    with pytest.raises(StoreError, match="removed from the end"):
        ShareStore(path, key)
    _sql(path, "UPDATE anchor SET seq = seq + 1")
    with pytest.raises(StoreError, match="anchor was altered"):
        ShareStore(path, key)
    _sql(path, "DELETE FROM anchor")                   # gone: the check walks the whole log again
    store = ShareStore(path, key, check=False)
    assert store.verify().entries == 13
    store.close()


def test_a_serving_store_checks_itself_and_checkpoints(path, monkeypatch, caplog):
    from otpfast.store import shares

    monkeypatch.setattr(shares, "CHECKPOINT_EVENTS", 10)
    key = new_key()
    store = _store(path, key)
    for counter in range(30):
        assert store.mark("alice", counter, ISSUE)
    assert _sql(path, "SELECT count(*) > 1 FROM events WHERE event = 'checkpoint'") == [(1,)]
    assert store.verify().ok and store.verify().entries <= 11
    _sql(path, "UPDATE principals SET role = 'admin' WHERE name = 'login'")
    for counter in range(30, 60):
        assert store.mark("alice", counter, ISSUE)
    assert "the periodic check failed" in caplog.text       # found while serving, no checkpoint over it
    store.close()
    _reopened_refuses(path, key, lambda s: s.principal("login"))
