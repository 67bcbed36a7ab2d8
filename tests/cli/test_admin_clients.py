"""`otpfast client add --admin`: the admin role (the HTTPS admin API), alone or with
--verifier, never with --account; kept by `client rotate`."""
import json

import pytest
from click.testing import CliRunner

from otpfast.datadir import DataDir
from otpfast_cli.main import cli


@pytest.fixture
def data_dir(tmp_path):
    path = str(tmp_path / "data")
    DataDir(path).init(rsa_bits=2048)
    return path


def invoke(data_dir, *args):
    return CliRunner().invoke(cli, [*args, "--data-dir", data_dir])


def roles(data_dir):
    out = invoke(data_dir, "client", "list", "--json").stdout
    return {row["name"]: row["role"] for row in map(json.loads, out.splitlines())}


def test_client_add_admin_roles(data_dir):
    assert invoke(data_dir, "client", "add", "ops", "--admin").exit_code == 0
    assert invoke(data_dir, "client", "add", "both", "--admin", "--verifier").exit_code == 0
    assert invoke(data_dir, "client", "add", "rp", "--verifier").exit_code == 0
    assert roles(data_dir) == {"ops": "admin", "both": "verifier+admin", "rp": "verifier"}
    assert invoke(data_dir, "client", "rotate", "ops").exit_code == 0
    assert roles(data_dir)["ops"] == "admin"
    store = DataDir(data_dir).open_store()
    assert store.client("ops").admin and not store.client("rp").admin
    store.close()


def test_client_add_admin_with_account_is_a_usage_error(data_dir):
    invoke(data_dir, "account", "add", "alice", "--type", "hotp")
    result = invoke(data_dir, "client", "add", "dev", "--account", "alice", "--admin")
    assert result.exit_code == 2 and "--admin" in result.output
    assert invoke(data_dir, "client", "add", "nothing").exit_code == 2
