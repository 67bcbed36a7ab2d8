"""Several nodes (data dirs) on one PostgreSQL store: `audit archive` moves the old part of
every node's chain (each with its own MACed anchor) while the nodes keep writing, and
`audit verify [--archive]` proves the rest on every node; a backup carries every chain's
head and restores to a store that verifies; the README's PostgreSQL roles for several nodes
work."""
import datetime
import hmac
import os
import shutil
import struct
import threading
import uuid

import pytest
from click.testing import CliRunner

from otpfast.datadir import DataDir
from otpfast.services.distribution import VerifyItem
from otpfast_cli.main import cli

pytestmark = pytest.mark.service

KEY = "3132333435363738393031323334353637383930"


def _run(*args):
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _code(counter):
    """RFC 4226 HOTP of KEY (6 digits)."""
    mac = hmac.digest(bytes.fromhex(KEY), struct.pack(">Q", counter), "sha1")
    offset = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10**6)


def _copy_node(source: DataDir, path: str) -> DataDir:
    """A second node made the way an operator could before `init --join`: the data dir
    copied without its node name and head files."""
    shutil.copytree(source.path, path)
    for name in os.listdir(path):
        if name == "node.id" or name.startswith("audit.head."):
            os.unlink(os.path.join(path, name))
    return DataDir(path)


def _verify(data_dir, account, counter):
    distribution = data_dir.distribution()
    try:
        return distribution.verify_many([VerifyItem(account, _code(counter), "127.0.0.1", None)])[0]
    finally:
        distribution.store.close()


def _enrol(data_dir, names):
    admin = data_dir.admin()
    try:
        for name in names:
            admin.add_account(name, "hotp", secret=bytes.fromhex(KEY), lockout=100)
    finally:
        admin.store.close()


def _intact(data_dir, *archives):
    args = [arg for path in archives for arg in ("--archive", str(path))]
    code, out = _run("audit", "verify", "--data-dir", data_dir.path, *args)
    assert code == 0 and "audit log intact" in out, out
    return out


def _two_nodes(tmp_path, pg_url):
    from ..services.test_datadir import _as_url

    a = DataDir(str(tmp_path / "a"))
    a.init(rsa_bits=2048, store_url=_as_url(pg_url))
    b = _copy_node(a, str(tmp_path / "b"))
    assert a.node_id() != b.node_id()
    return a, b


def _tomorrow():
    return (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).isoformat()


def test_archive_of_several_chains_while_the_nodes_write(tmp_path, pg_url):
    import psycopg

    a, b = _two_nodes(tmp_path, pg_url)
    _enrol(a, ["alice", "bob", "carol"])
    for counter in range(3):
        assert _verify(a, "alice", counter) and _verify(b, "bob", counter)
    assert _verify(b, "carol", 0)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        nodes = {row[0] for row in conn.execute("SELECT node FROM audit_head WHERE node IS NOT NULL")}
    assert nodes == {a.node_id(), b.node_id()}

    # node b keeps writing (carol, and alice: a row last written in the archived part)
    stop, results, errors = threading.Event(), [], []

    def writer():
        counter = 1
        while not stop.is_set() and counter < 40:
            try:
                results.append(_verify(b, "carol", counter))
                if counter == 3:
                    results.append(_verify(b, "alice", 3))
            except Exception as exc:        # reported below
                errors.append(exc)
                return
            counter += 1

    thread = threading.Thread(target=writer)
    thread.start()
    first = tmp_path / "first.jsonl"
    try:
        code, out = _run("audit", "archive", "--data-dir", a.path, "--before", _tomorrow(), str(first))
    finally:
        stop.set()
        thread.join(60)
    assert code == 0 and "chain" in out, out
    assert not errors and all(results), (errors, results)
    assert os.stat(first).st_mode & 0o077 == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        anchors = conn.execute("SELECT count(*) FROM audit_anchor").fetchone()[0]
    assert anchors >= 2                         # a MACed anchor per archived chain

    for node in (a, b):
        out = _intact(node, first)
        assert out.count(f"archive {first} intact: chain") >= 2, out
    # both nodes go on, a second archive joins the first, per chain
    assert _verify(a, "bob", 3) and _verify(b, "alice", 4) and not _verify(a, "alice", 4)
    second = tmp_path / "second.jsonl"
    code, out = _run("audit", "archive", "--data-dir", b.path, "--before", _tomorrow(), str(second))
    assert code == 0, out
    _intact(a, first, second)
    _intact(b, second, first)
    code, out = _run("audit", "verify", "--data-dir", a.path, "--archive", str(first))
    assert code == 1 and "anchor" in out, out      # the first alone no longer reaches the anchors

    # a forged anchor of a node's chain is reported
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE audit_anchor SET seq = seq + 1 WHERE id = (SELECT max(id) FROM audit_anchor)")
    code, out = _run("audit", "verify", "--data-dir", a.path)
    assert code == 1 and "anchor of chain" in out and "altered" in out, out


def test_sqlite_archive_file_format_is_unchanged(tmp_path):
    import json

    data_dir = DataDir(str(tmp_path / "d"))
    data_dir.init(rsa_bits=2048)
    _enrol(data_dir, ["alice"])
    path = tmp_path / "a.jsonl"
    code, out = _run("audit", "archive", "--data-dir", data_dir.path, "--before", _tomorrow(), str(path))
    assert code == 0 and out.startswith("archived entries 1.."), out
    header = json.loads(path.read_text().splitlines()[0])
    assert header["format"] == "otpfast-audit-archive-1" and "chain" not in path.read_text().splitlines()[1]
    _intact(data_dir, path)


def test_backup_of_several_chains_restores_every_head(tmp_path, pg_url, postgres_url):
    import psycopg

    from ..services.test_datadir import _as_url

    a, b = _two_nodes(tmp_path, pg_url)
    _enrol(a, ["alice", "bob"])
    for counter in range(3):
        assert _verify(a, "alice", counter) and _verify(b, "bob", counter)
    backup = str(tmp_path / "b.otpb")
    code, out = _run("backup", "create", backup, "--data-dir", b.path)
    assert code == 0, out
    with psycopg.connect(pg_url, autocommit=True) as conn:
        chains = [row[0] for row in conn.execute("SELECT id FROM audit_head WHERE id <> 1 ORDER BY id")]
    assert len(chains) >= 2

    schema = f"otpfast_r_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        target_conninfo = psycopg.conninfo.make_conninfo(postgres_url, options=f"-c search_path={schema}")
        target = DataDir(str(tmp_path / "restored"))
        code, out = _run("backup", "restore", backup, "--data-dir", target.path, "--store-url",
                         _as_url(target_conninfo))
        assert code == 0, out
        installed = sorted(int(name.rsplit(".", 1)[1]) for name in os.listdir(target.path)
                           if name.startswith("audit.head.") and name.rsplit(".", 1)[1].isdigit())
        assert installed == chains                  # every chain's head, not only chain 1's
        _intact(target)
        assert _verify(target, "alice", 3) and not _verify(target, "bob", 2)
        _intact(target)
        # a chain cut back in the database (its head row too) is caught by its head file
        with psycopg.connect(target_conninfo, autocommit=True) as conn:
            chain = chains[-1]
            seq = conn.execute("SELECT max(seq) FROM audit WHERE chain = %s", (chain,)).fetchone()[0]
            conn.execute("DELETE FROM audit WHERE chain = %s AND seq = %s", (chain, seq))
            conn.execute("UPDATE audit_head SET seq = a.seq, hash = a.hash FROM audit a"
                         " WHERE audit_head.id = %s AND a.chain = %s AND a.seq = %s", (chain, chain, seq - 1))
        code, out = _run("audit", "verify", "--data-dir", target.path)
        assert code == 1 and f"chain {chain}" in out and "removed from the end" in out, out
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_node_roles_recipe_one_owner_group_and_a_login_role_per_node(tmp_path, postgres_url, require_service):
    """The README's roles: a NOLOGIN group role owns the schema; each node logs in with a
    role of its own (pg_hba: one line per node) that acts as the group (ALTER ROLE ... SET
    role), so whichever node migrates, the tables stay the group's; revoking a node's LOGIN
    shuts it out and leaves the others serving."""
    import psycopg

    from ..services.test_datadir import _as_url

    suffix = uuid.uuid4().hex[:8]
    group, node_a, node_b, schema = (f"otpfast_{suffix}", f"otpfast_{suffix}_a", f"otpfast_{suffix}_b",
                                     f"otpfast_s_{suffix}")
    # the throwaway cluster trusts loopback: its superuser makes the roles
    admin_url = psycopg.conninfo.make_conninfo(postgres_url, user="postgres")
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            allowed = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    except psycopg.OperationalError:
        allowed = False
    require_service(allowed, "the test cluster's superuser (to create roles)")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {group} NOLOGIN")
        for role in (node_a, node_b):
            conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE {group}")
            conn.execute(f"ALTER ROLE {role} SET role = '{group}'")
        conn.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {group}")
    try:
        def url(role):
            return _as_url(psycopg.conninfo.make_conninfo(postgres_url, user=role,
                                                          options=f"-c search_path={schema}"))
        a = DataDir(str(tmp_path / "a"))
        a.init(rsa_bits=2048, store_url=url(node_a))
        _enrol(a, ["alice"])
        b = _copy_node(a, str(tmp_path / "b"))     # its own login role
        with open(b.file("store.url"), "w") as fh:
            fh.write(url(node_b) + "\n")
        assert _verify(a, "alice", 0) and _verify(b, "alice", 1) and not _verify(a, "alice", 1)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            owners = {row[0] for row in conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = %s",
                                                     (schema,))}
            assert owners == {group}
            conn.execute(f"ALTER ROLE {node_b} NOLOGIN")
        code, out = _run("audit", "verify", "--data-dir", b.path)
        assert code == 1 and "cannot open the store" in out, out
        _intact(a)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
            for role in (node_a, node_b, group):
                conn.execute(f"DROP ROLE {role}")
