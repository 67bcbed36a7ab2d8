"""Share-server *processes* SIGKILLed at random points while two verifiers race one OTP, then
restarted on the same data directory and port: never two accepts, never an accept without t
valid partials, and an accepted OTP is refused after every restart (the consumed marks were
durable before the partials left)."""
import asyncio
import random
import signal
import subprocess
import sys
import time

import pytest

from otpfast.errors import Refused
from otpfast.net import tprf
from otpfast.net.sharecluster import LocalCluster

pytestmark = pytest.mark.slow


def _start(datadir, listen):
    process = subprocess.Popen([sys.executable, "-m", "otpfast", "share-server", "serve", "--listen", listen,
                                "--data-dir", datadir.path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    deadline = time.monotonic() + 30
    address = None
    while address is None:
        line = process.stdout.readline()
        assert line and time.monotonic() < deadline, "share server did not start"
        if line.startswith("listening "):
            address = line.split()[1]
    return process, address


def test_kill_share_server_processes_mid_verification(tmp_path):
    local = LocalCluster(str(tmp_path), 5)
    local.init()
    admin = local.add_admin()
    device = local.add_device("phone", "alice")
    verifiers = {name: local.add_verifier(name) for name in ("login-a", "login-b")}
    processes = {}
    try:
        for server in local.cluster.servers:
            processes[server["name"]], server["address"] = _start(local.datadirs[server["name"]], "127.0.0.1:0")

        def restart(name):
            process = processes[name]
            if process.poll() is None:
                return
            process.stdout.close()
            processes[name], _ = _start(local.datadirs[name], local.cluster.server(name)["address"])

        async def scenario():
            entry, _signed, _accused = await tprf.run_dkg(local.cluster, local.names, "alice", 3, "admin", admin)
            local.cluster.accounts["alice"] = entry
            rng = random.Random(5)
            accepted_otps = []
            for _round in range(6):
                for name in local.names:
                    restart(name)
                try:
                    otp, _c, _a, _ch = await tprf.issue(local.cluster, "alice", "phone", device,
                                                        prefer=rng.sample(local.names, 3), timeout=5)
                except Refused:
                    continue
                victims = rng.sample(local.names, rng.randint(1, 3))

                async def killer():
                    await asyncio.sleep(rng.uniform(0, 0.05))
                    for name in victims:
                        processes[name].send_signal(signal.SIGKILL)

                async def attempt(name):
                    try:
                        return await tprf.verify(local.cluster, "alice", otp, name, verifiers[name],
                                                 prefer=rng.sample(local.names, 3), timeout=5)
                    except Refused:
                        return False, [], []

                a, b, _ = await asyncio.gather(attempt("login-a"), attempt("login-b"), killer())
                wins = [r for r in (a, b) if r[0]]
                assert len(wins) <= 1, (a, b)
                assert all(len(answered) >= 3 for _ok, answered, _ch in wins)
                if wins:
                    accepted_otps.append(otp)
                for name in victims:
                    processes[name].wait(timeout=20)
                    restart(name)
                for old in accepted_otps:
                    ok, _a, _c = await tprf.verify(local.cluster, "alice", old, "login-a", verifiers["login-a"],
                                                   timeout=5)
                    assert not ok
            return accepted_otps

        accepted = asyncio.run(scenario())
        assert accepted          # the test did exercise accepts, not only refusals
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=20)
            process.stdout.close()
