"""The tprf CLI: usage errors exit 2 naming the option; the whole flow through real
`otpfast share-server serve` processes; `otpfast demo --threshold`."""
import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from otpfast_cli.main import cli

from ..conftest import stop_process


def _otpfast(env, *args, check=None):
    result = subprocess.run([sys.executable, "-m", "otpfast", *args], env=env, capture_output=True, text=True,
                            timeout=60)
    if check is not None:
        assert result.returncode == check, (args, result.stdout, result.stderr)
    return result


@pytest.fixture
def cluster_file(tmp_path):
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"servers": [{"name": f"s{i}", "address": f"127.0.0.1:{i}",
                                             "pin": "sha256:" + "00" * 32} for i in (1, 2, 3)]}))
    return str(path)


@pytest.mark.parametrize("args, option", [
    (["token", "add", "alice", "--type", "tprf"], None),
    (["token", "add", "alice", "--type", "tprf", "--cluster", "{c}", "--threshold", "1"], "--threshold"),
    (["token", "add", "alice", "--type", "tprf", "--cluster", "{c}", "--share-servers", "s1,s9"],
     "--share-servers"),
    (["token", "add", "alice", "--type", "hotp", "--cluster", "{c}"], None),
    (["token", "add", "alice", "--type", "tprf", "--cluster", "{c}", "--period", "30"], None),
    (["token", "add", "a\tb", "--type", "tprf", "--cluster", "{c}"], "USER"),
    (["token", "add", "alice", "--type", "tprf", "--cluster", "{c}", "--digits", "9"], "--digits"),
    (["request", "--cluster", "{c}", "--server", "h:1", "--client", "p", "--account", "a"], None),
    (["request", "--cluster", "nope.json", "--client", "p", "--account", "a"], "--cluster"),
    (["request", "--cluster", "{c}", "--client", "p", "--account", "alice"], "--account"),
    (["verify", "--cluster", "{c}", "--client", "v", "--account", "alice", "123456"], "--account"),
    (["verify", "--cluster", "{c}", "--account", "alice", "123456"], None),
    (["serve", "--listen", "127.0.0.1:0", "--http-tprf-cluster", "{c}"], "--http-tprf-cluster"),
    (["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--http-tprf-cluster", "{c}"],
     "--http-tprf-cluster"),
    (["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--http-tprf-verifier", "v"],
     "--http-tprf-verifier"),
    (["distserver", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--http-tprf-cluster", "nope.json",
      "--http-tprf-verifier", "v", "--http-tprf-credential-file", "x"], "--http-tprf-cluster"),
])
def test_cli_tprf_usage_errors_exit_2(cluster_file, args, option):
    result = CliRunner().invoke(cli, [a.replace("{c}", cluster_file) for a in args],
                                env={"OTPFAST_CREDENTIAL": "x" * 43})
    assert result.exit_code == 2, result.output
    if option is not None:
        assert option in result.output


class ShareServerProcess:
    def __init__(self, env, data_dir):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otpfast", "share-server", "serve", "--listen", "127.0.0.1:0", "--data-dir",
             data_dir], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = {}
        deadline = time.monotonic() + 30
        while len(lines) < 2:
            line = self.process.stdout.readline()
            assert line, self.process.stderr.read()
            key, _, value = line.strip().partition(" ")
            lines[key] = value
            assert time.monotonic() < deadline
        self.address, self.pin = lines["listening"], lines["fingerprint"]


@pytest.mark.slow
def test_cli_tprf_flow_through_share_server_processes(tmp_path):
    env = dict(os.environ)
    env.pop("OTPFAST_CREDENTIAL", None)
    dirs = [str(tmp_path / f"d{i}") for i in (1, 2, 3)]
    for d in dirs:
        _otpfast(env, "init", "--data-dir", d, "--rsa-bits", "2048", check=0)
    creds = {}
    for name, role in (("admin", "admin"), ("phone", "device"), ("login", "verifier")):
        extra = ["--account", "alice"] if role == "device" else []
        out = _otpfast(env, "share-server", "principal", "add", name, "--role", role, *extra, "--data-dir", dirs[0],
                       check=0).stdout.strip()
        creds[name] = tmp_path / f"{name}.cred"
        creds[name].write_text(out + "\n")
        for d in dirs[1:]:
            _otpfast(env, "share-server", "principal", "add", name, "--role", role, *extra, "--data-dir", d,
                     "--credential-file", str(creds[name]), check=0)
    ids = [_otpfast(env, "share-server", "peer", "id", "--data-dir", d, check=0).stdout.strip() for d in dirs]
    for d in dirs:
        for key_id in ids:
            _otpfast(env, "share-server", "peer", "add", key_id, "--data-dir", d, check=0)
    _otpfast(env, "share-server", "peer", "add", "sha256:xyz", "--data-dir", dirs[0], check=2)
    servers = [ShareServerProcess(env, d) for d in dirs]
    cluster = str(tmp_path / "cluster.json")
    try:
        for i, server in enumerate(servers, 1):
            _otpfast(env, "share-server", "cluster-add", "--cluster", cluster, f"s{i}", server.address,
                     "--pin", server.pin, check=0)
        added = _otpfast(env, "token", "add", "alice", "--type", "tprf", "--threshold", "2", "--cluster", cluster,
                         "--credential-file", str(creds["admin"]), check=0)
        assert "tprf, 2 of 3" in added.stderr and "signed by all 3 share servers" in added.stderr
        assert oct(os.stat(cluster).st_mode & 0o777) == "0o600"
        otp = _otpfast(env, "request", "--cluster", cluster, "--client", "phone", "--account", "alice",
                       "--credential-file", str(creds["phone"]), check=0).stdout.strip()
        assert len(otp) == 6 and otp.isdigit()
        verify = ["verify", "--cluster", cluster, "--client", "login", "--account", "alice",
                  "--credential-file", str(creds["login"]), otp]
        assert _otpfast(env, *verify, check=0).stdout.strip() == "accepted"
        assert _otpfast(env, *verify, check=1).stdout.strip() == "rejected"
        # a device cannot verify (the share servers refuse it and consume nothing)
        otp = _otpfast(env, "request", "--cluster", cluster, "--client", "phone", "--account", "alice",
                       "--credential-file", str(creds["phone"]), check=0).stdout.strip()
        _otpfast(env, "verify", "--cluster", cluster, "--client", "phone", "--account", "alice",
                 "--credential-file", str(creds["phone"]), otp, check=1)
        assert _otpfast(env, *verify[:-1], otp, check=0).stdout.strip() == "accepted"
        stop_process(servers[0].process)
        stop_process(servers[1].process)
        failed = _otpfast(env, "request", "--cluster", cluster, "--client", "phone", "--account", "alice",
                          "--credential-file", str(creds["phone"]), check=3)
        assert "error" in failed.stderr
        listing = _otpfast(env, "share-server", "accounts", "--data-dir", dirs[0], check=0).stdout
        assert "alice\tshare 1\tt=2\tactive" in listing
        shown = _otpfast(env, "share-server", "transcript", "alice", "--data-dir", dirs[0], check=0).stdout
        assert shown.count(": signed") == 3 and "qualified dealers: 1,2,3" in shown
        history = _otpfast(env, "share-server", "events", "alice", "--data-dir", dirs[0], check=0).stdout
        assert "counter 0\tissued to phone" in history and "counter 0\tconsumed by login" in history
    finally:
        for server in servers:
            if server.process.poll() is None:
                stop_process(server.process)
            server.process.stdout.close()
            server.process.stderr.close()


def test_cli_demo_threshold_runs():
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["demo", "--threshold"])
    assert result.exit_code == 0, result.output
    assert "demo ok: every step behaved" in result.output
    assert "login stops" in result.output and "FAILED" not in result.output
    assert time.monotonic() - started < 60


def test_cli_tprf_malformed_cluster_file_exit_2(tmp_path):
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"servers": [{"name": "s1", "address": "127.0.0.1:1", "pin": "sha256:12"}]}))
    result = CliRunner().invoke(cli, ["request", "--cluster", str(path), "--client", "p", "--account", "a"],
                                env={"OTPFAST_CREDENTIAL": "x" * 43})
    assert result.exit_code == 2 and "--cluster" in result.output and "pin" in result.output
