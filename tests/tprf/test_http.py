"""`otpfast serve --http --http-tprf-cluster ...`: privacyIDEA's /validate/check answers for
tprf tokens by gathering t partials (accepted once, replay refused, 503 below t)."""
import asyncio
import subprocess
import sys
import threading

import httpx
import pytest

from otpfast.datadir import DataDir
from otpfast.net import tprf
from otpfast.net.sharecluster import LocalCluster

from ..conftest import stop_process

pytestmark = pytest.mark.slow


class ClusterThread:
    """A LocalCluster serving from its own event loop in a thread."""

    def __init__(self, base):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.local = LocalCluster(str(base), 3)

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def close(self):
        self.call(self.local.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def test_http_validate_check_for_tprf_tokens(tmp_path):
    cluster = ClusterThread(tmp_path / "shares")
    local = cluster.local
    local.init()
    admin = local.add_admin()
    device = local.add_device("phone", "alice")
    verifier = local.add_verifier("login")
    credential_file = tmp_path / "login.cred"
    credential_file.write_text(verifier + "\n")
    credential_file.chmod(0o600)
    cluster.call(local.__aenter__())
    proc = None
    try:
        entry, _signed, _accused = cluster.call(tprf.run_dkg(local.cluster, local.names, "alice", 2, "admin", admin))
        local.cluster.accounts["alice"] = entry
        local.cluster.save()
        data_dir = DataDir(str(tmp_path / "data"))
        data_dir.init(rsa_bits=2048)
        proc = subprocess.Popen(
            [sys.executable, "-m", "otpfast_cli", "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir.path,
             "--http", "127.0.0.1:0", "--http-tprf-cluster", local.cluster.path, "--http-tprf-verifier", "login",
             "--http-tprf-credential-file", str(credential_file)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = [proc.stdout.readline() for _ in range(3)]
        url = "https://%s" % [line for line in lines if line.startswith("http ")][0].split()[1]

        def check(otp, **params):
            with httpx.Client(verify=False) as http:
                return http.post(url + "/validate/check", data={"user": "alice", "pass": otp, **params})

        otp, _c, _a, _ch = cluster.call(tprf.issue(local.cluster, "alice", "phone", device))
        first = check(otp)
        assert first.status_code == 200 and first.json()["result"]["value"] is True
        assert first.json()["detail"]["type"] == "tprf" and first.json()["detail"]["serial"] == entry["serial"]
        assert check(otp).json()["result"]["value"] is False
        by_serial = cluster.call(tprf.issue(local.cluster, "alice", "phone", device))[0]
        with httpx.Client(verify=False) as http:
            answer = http.post(url + "/validate/check", data={"serial": entry["serial"], "pass": by_serial})
        assert answer.json()["result"]["value"] is True
        cluster.call(local.stop("s1"))
        cluster.call(local.stop("s2"))
        assert check("123456").status_code == 503
    finally:
        if proc is not None:
            stop_process(proc)
            proc.stdout.close()
        cluster.close()
