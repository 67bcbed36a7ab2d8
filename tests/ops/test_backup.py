"""`otpfast backup create|restore`: a consistent copy with the keys and the audit anchor,
taken while a server writes; a restore into a fresh data dir that `audit verify` accepts
and that serves; encrypted or 0600; never over a live data dir without --force; a tampered
backup refused before anything is written. SQLite and PostgreSQL."""
import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import uuid

import pytest
from click.testing import CliRunner

from otpfast.datadir import DataDir
from otpfast.net.client import connect
from otpfast.services import masking
from otpfast_cli.main import cli
from ..conftest import stop_process


def _run(*args):
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _populate(data_dir):
    admin = data_dir.admin()
    admin.add_account("alice", "hashchain", chain_length=500)
    device = admin.add_client("alice-device", account="alice")
    relay = admin.add_client("relay", verifier=True)
    admin.store.close()
    return device, relay


def _otps(data_dir, device, count):
    distribution = data_dir.distribution()
    try:
        session = distribution.login("alice-device", device.encode())
        out = []
        for _ in range(count):
            issued = distribution.request(session, "alice")
            out.append(masking.unmask(session.session_key, "alice", issued.nonce, issued.masked,
                                      issued.expires_at_ms))
        return out
    finally:
        distribution.store.close()


def _verify_many(data_dir, otps):
    distribution = data_dir.distribution()
    try:
        from otpfast.services.distribution import VerifyItem
        return distribution.verify_many([VerifyItem("alice", otp, "127.0.0.1", None) for otp in otps])
    finally:
        distribution.store.close()


def test_backup_while_writing_restores_into_a_fresh_dir_that_verifies_and_serves(tmp_path):
    source = DataDir(str(tmp_path / "source"))
    source.init(rsa_bits=2048)
    device, relay = _populate(source)
    # writes go on while the backup is taken: the copy is one consistent snapshot
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            _verify_many(source, _otps(source, device, 3))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        code, out = _run("backup", "create", str(tmp_path / "b.otpb"), "--data-dir", source.path)
    finally:
        stop.set()
        thread.join(30)
    assert code == 0, out
    assert stat.S_IMODE(os.stat(tmp_path / "b.otpb").st_mode) == 0o600
    assert "not encrypted: mode 0600" in out

    target = DataDir(str(tmp_path / "restored"))
    code, out = _run("backup", "restore", str(tmp_path / "b.otpb"), "--data-dir", target.path)
    assert code == 0, out
    code, out = _run("audit", "verify", "--data-dir", target.path)
    assert code == 0 and "intact" in out, out
    assert target.fingerprint() == source.fingerprint()
    assert stat.S_IMODE(os.stat(target.path).st_mode) == 0o700

    # the restored dir serves: a client pinned to the source's key verifies an OTP issued there
    otp = _otps(target, device, 1)[0]
    proc = subprocess.Popen([sys.executable, "-m", "otpfast_cli", "serve", "--listen", "127.0.0.1:0",
                             "--data-dir", target.path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        host, port = proc.stdout.readline().split()[1].rsplit(":", 1)

        async def check():
            async with connect(host, int(port), pin=source.fingerprint()) as client:
                await client.authenticate("relay", relay)
                return await client.verify("alice", otp), await client.verify("alice", otp)
        assert asyncio.run(check()) == (True, False)        # accepted once
    finally:
        stop_process(proc)
        proc.communicate()
    code, out = _run("audit", "verify", "--data-dir", target.path)
    assert code == 0, out


def test_restore_never_overwrites_without_force_and_backup_never_overwrites_a_file(tmp_path):
    data_dir = DataDir(str(tmp_path / "d"))
    data_dir.init(rsa_bits=2048)
    backup = str(tmp_path / "b.otpb")
    assert _run("backup", "create", backup, "--data-dir", data_dir.path)[0] == 0
    code, out = _run("backup", "create", backup, "--data-dir", data_dir.path)
    assert code == 2 and "FILE" in out and "exists" in out
    _populate(data_dir)             # changed since the backup
    code, out = _run("backup", "restore", backup, "--data-dir", data_dir.path)
    assert code == 2 and "--data-dir" in out and "--force" in out
    assert data_dir.admin().store.account("alice") is not None          # untouched
    code, out = _run("backup", "restore", backup, "--data-dir", data_dir.path, "--force")
    assert code == 0, out
    admin = data_dir.admin()
    try:
        assert admin.store.account("alice") is None                     # back to the backup
    finally:
        admin.store.close()
    assert _run("audit", "verify", "--data-dir", data_dir.path)[0] == 0
    code, out = _run("backup", "create", str(tmp_path / "x"), "--data-dir", str(tmp_path / "nothing"))
    assert code == 2 and "--data-dir" in out


def test_encrypted_backup_needs_its_passphrase(tmp_path):
    data_dir = DataDir(str(tmp_path / "d"))
    data_dir.init(rsa_bits=2048)
    (tmp_path / "pw").write_text("correct horse battery staple\n")
    (tmp_path / "wrong").write_text("incorrect horse battery\n")
    (tmp_path / "short").write_text("short\n")
    backup = tmp_path / "b.otpb"
    code, out = _run("backup", "create", str(backup), "--data-dir", data_dir.path, "--passphrase-file",
                     str(tmp_path / "short"))
    assert code == 2 and "--passphrase-file" in out and not backup.exists()
    code, out = _run("backup", "create", str(backup), "--data-dir", data_dir.path, "--passphrase-file",
                     str(tmp_path / "pw"))
    assert code == 0 and "encrypted" in out
    key_text = (tmp_path / "d" / "at-rest.key").read_bytes().strip()
    assert key_text not in backup.read_bytes() and b"BEGIN" not in backup.read_bytes()
    for args in ([], ["--passphrase-file", str(tmp_path / "wrong")]):
        code, out = _run("backup", "restore", str(backup), "--data-dir", str(tmp_path / "r"), *args)
        assert code == 2 and "--passphrase-file" in out, out
        assert not os.path.exists(tmp_path / "r" / "store.db")
    code, out = _run("backup", "restore", str(backup), "--data-dir", str(tmp_path / "r"), "--passphrase-file",
                     str(tmp_path / "pw"))
    assert code == 0, out
    assert _run("audit", "verify", "--data-dir", str(tmp_path / "r"))[0] == 0


def test_a_tampered_or_foreign_backup_is_refused_before_anything_is_written(tmp_path):
    import tarfile

    data_dir = DataDir(str(tmp_path / "d"))
    data_dir.init(rsa_bits=2048)
    _populate(data_dir)
    backup = tmp_path / "b.otpb"
    assert _run("backup", "create", str(backup), "--data-dir", data_dir.path)[0] == 0
    # edit a row of the store inside the backup (no at-rest key: its MAC fails)
    work = tmp_path / "work"
    with tarfile.open(backup, "r:gz") as tar:
        tar.extractall(work, filter="data")
    conn = sqlite3.connect(work / "store.db")
    conn.execute("UPDATE clients SET verifier = 1 WHERE name = 'alice-device'")
    conn.commit()
    conn.close()
    tampered = tmp_path / "t.otpb"
    with tarfile.open(tampered, "w:gz") as tar:
        for name in sorted(os.listdir(work)):
            tar.add(work / name, arcname=name)
    code, out = _run("backup", "restore", str(tampered), "--data-dir", str(tmp_path / "r"))
    assert code == 1 and "audit verify fails" in out, out
    assert not os.path.exists(tmp_path / "r" / "store.db")
    (tmp_path / "junk").write_bytes(b"not a backup")
    code, out = _run("backup", "restore", str(tmp_path / "junk"), "--data-dir", str(tmp_path / "r"))
    assert code == 2 and "FILE" in out and "not an otpfast backup" in out


@pytest.mark.service
def test_postgres_backup_restores_into_an_empty_database(tmp_path, pg_url, postgres_url):
    import psycopg

    from ..services.test_datadir import _as_url

    source = DataDir(str(tmp_path / "source"))
    source.init(rsa_bits=2048, store_url=_as_url(pg_url))
    device, _relay = _populate(source)
    _verify_many(source, _otps(source, device, 5))
    backup = str(tmp_path / "b.otpb")
    code, out = _run("backup", "create", backup, "--data-dir", source.path)
    assert code == 0 and "postgresql" in out, out

    schema = f"otpfast_r_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        target_url = _as_url(psycopg.conninfo.make_conninfo(postgres_url, options=f"-c search_path={schema}"))
        target = DataDir(str(tmp_path / "restored"))
        code, out = _run("backup", "restore", backup, "--data-dir", target.path, "--store-url", target_url)
        assert code == 0, out
        code, out = _run("audit", "verify", "--data-dir", target.path)
        assert code == 0 and "intact" in out, out
        # the restored store issues and accepts (identity sequences moved past the copied rows)
        otps = _otps(target, device, 2)
        assert _verify_many(target, otps) == [True, True]
        assert _run("audit", "verify", "--data-dir", target.path)[0] == 0
        # a database that holds a store is not restored over without --force
        code, out = _run("backup", "restore", backup, "--data-dir", str(tmp_path / "again"), "--store-url", target_url)
        assert code == 2 and "--store-url" in out
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
