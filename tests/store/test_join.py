"""Joining a node to a PostgreSQL store (issue 12, item 1): ``otpfast init --join``."""
import os

import pytest
from click.testing import CliRunner

from otpfast.datadir import DataDir
from otpfast.errors import InvalidParameter, StoreError
from otpfast.store import atrest
from otpfast_cli.main import cli


@pytest.fixture
def store_url(pg_url):
    """pg_url (a conninfo) as the postgresql:// URL init takes."""
    import urllib.parse

    import psycopg
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    query = urllib.parse.urlencode({"options": info["options"]}, quote_via=urllib.parse.quote)
    return (f"postgresql://{info['user']}@{info['host']}:{info['port']}/{info['dbname']}"
            f"?{query}")


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch):
    monkeypatch.delenv(atrest.ENV_VAR, raising=False)
    monkeypatch.delenv("OTPFAST_STORE_URL", raising=False)


def test_join_makes_a_second_node_with_the_shared_key_and_its_own_identity(store_url, tmp_path):
    first = DataDir(str(tmp_path / "a"))
    first.init(store_url=store_url, rsa_bits=2048)
    second = DataDir(str(tmp_path / "b"))
    # a second plain init names the way instead of "the at-rest key does not match"
    with pytest.raises(StoreError, match="init --join"):
        second.init(store_url=store_url, rsa_bits=2048)
    assert not second.initialised and not os.path.exists(second.file("node.id"))
    with pytest.raises(InvalidParameter, match="at-rest key"):
        second.init(store_url=store_url, rsa_bits=2048, join=True)
    second.init(store_url=store_url, rsa_bits=2048, join=True,
                key_file=first.file("at-rest.key"))
    assert atrest.load_key(second.file("at-rest.key")) == atrest.load_key(first.file("at-rest.key"))
    assert second.node_id() != first.node_id()
    assert second.fingerprint() != first.fingerprint()      # its own TLS identity
    stores = [first.open_store(), second.open_store()]
    try:
        for store in stores:
            with store.transaction() as tx:
                tx.audit(1.0, "admin", "-", "-", "cli", "hello")
        chains = {row[0] for row in stores[0]._conn().execute(
            "SELECT node FROM audit_head WHERE node IS NOT NULL").fetchall()}
        assert chains == {first.node_id(), second.node_id()}
        for store in stores:
            report = store.verify_audit()
            assert report.ok, report.reason
    finally:
        for store in stores:
            store.close()


def test_join_refuses_a_database_without_a_store(store_url, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(atrest.encode_key(atrest.new_key()) + "\n")
    key_file.chmod(0o600)
    with pytest.raises(StoreError, match="no otpfast store in this database to join"):
        DataDir(str(tmp_path / "b")).init(store_url=store_url, rsa_bits=2048, join=True,
                                          key_file=str(key_file))


def test_join_cli_options(store_url, tmp_path):
    runner = CliRunner()
    first = tmp_path / "a"
    assert runner.invoke(cli, ["init", "--data-dir", str(first), "--store-url", store_url,
                               "--rsa-bits", "2048"]).exit_code == 0
    result = runner.invoke(cli, ["init", "--data-dir", str(tmp_path / "b"), "--join",
                                 "--rsa-bits", "2048"])
    assert result.exit_code == 2 and "--join" in result.output
    result = runner.invoke(cli, ["init", "--data-dir", str(tmp_path / "b"), "--join",
                                 "--store-url", store_url, "--rsa-bits", "2048",
                                 "--at-rest-key-file", str(first / "at-rest.key")])
    assert result.exit_code == 0, result.output
    assert "(node " in result.output
