"""Threshold OTPs per second through 3-of-5 share servers on loopback: issued (a device asks
three servers for their watermark, then for partials, checks three DLEQ proofs, combines,
Finalizes) and verified (a verifier gathers the outstanding counters from all five, asks three
for partials - each consumes the counter durably before answering - checks, combines, compares,
reports the outcome).

The five share servers are real `otpfast share-server serve` processes (SQLite,
synchronous=FULL); the devices and verifiers are asyncio clients in this process over
persistent TLS connections, one device per account (a device's own issues are sequential, as
on a phone), DEVICES accounts at once. Every OTP issued is checked to verify exactly once.

Figures:  python -m pytest bench/test_tprf_servers.py --benchmark-enable -q -s
Size:     OTPFAST_BENCH_TPRF_ROUNDS (OTPs per device, default 25; 3 with --benchmark-disable),
          OTPFAST_BENCH_TPRF_DEVICES (accounts / concurrent devices, default 8)
"""
import asyncio
import os
import subprocess
import sys
import time

import pytest

from otpfast.net import tprf
from otpfast.net.sharecluster import LocalCluster

N, T = 5, 3
ROUNDS = int(os.environ.get("OTPFAST_BENCH_TPRF_ROUNDS", "25"))
DEVICES = int(os.environ.get("OTPFAST_BENCH_TPRF_DEVICES", "8"))

pytestmark = pytest.mark.benchmark(group="tprf-servers")


def _start(datadir):
    process = subprocess.Popen([sys.executable, "-m", "otpfast", "share-server", "serve", "--listen", "127.0.0.1:0",
                                "--data-dir", datadir.path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = {}
    while len(lines) < 2:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        key, _, value = line.strip().partition(" ")
        lines[key] = value
    return process, lines["listening"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Five share-server processes; DEVICES accounts made by a DKG each; their credentials."""
    local = LocalCluster(str(tmp_path_factory.mktemp("tprf-bench")), N)
    local.init()
    admin = local.add_admin()
    verifier = local.add_verifier("login")
    devices = {f"user{i}": local.add_device(f"device{i}", f"user{i}") for i in range(DEVICES)}
    processes = []
    try:
        for server in local.cluster.servers:
            process, address = _start(local.datadirs[server["name"]])
            processes.append(process)
            server["address"] = address

        async def dkgs():
            for account in devices:
                entry, _signed, accused = await tprf.run_dkg(local.cluster, local.names, account, T, "admin", admin)
                assert not accused
                local.cluster.accounts[account] = entry
        asyncio.run(dkgs())
        yield local.cluster, verifier, devices
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
            process.stdout.close()
            process.stderr.close()


async def _workload(cluster, verifier, devices, rounds):
    """(seconds issuing, seconds verifying, OTPs): rounds of every device issuing one OTP at
    once, then the verifier checking all of them at once (and each replay refused)."""
    sessions = []
    try:
        for i, (account, credential) in enumerate(devices.items()):
            session = tprf.Session(cluster.servers, f"device{i}", credential)
            sessions.append(await session.__aenter__())
        checker = await tprf.Session(cluster.servers, "login", verifier).__aenter__()
        sessions.append(checker)
        # each device starts at a different quorum: the load spreads over all five servers
        names = [s["name"] for s in cluster.servers]
        accounts = [cluster.account(a) for a in devices]
        order = [sessions[i].clients[i % N:] + sessions[i].clients[:i % N] for i in range(len(accounts))]
        verify_order = [checker.clients[(i + 2) % N:] + checker.clients[:(i + 2) % N] for i in range(len(accounts))]
        assert all(len(s.clients) == N for s in sessions), names
        issuing = verifying = 0.0
        for _round in range(rounds):
            started = time.perf_counter()
            issued = await asyncio.gather(*(tprf.issue_with(order[i], a) for i, a in enumerate(accounts)))
            issuing += time.perf_counter() - started
            started = time.perf_counter()
            verdicts = await asyncio.gather(*(tprf.verify_with(verify_order[i], a, issued[i][0])
                                              for i, a in enumerate(accounts)))
            verifying += time.perf_counter() - started
            assert all(ok for ok, _answered, _cheaters in verdicts)
        replays = await asyncio.gather(*(tprf.verify_with(checker.clients, a, issued[i][0])
                                         for i, a in enumerate(accounts)))
        assert not any(ok for ok, _a, _c in replays)
        return issuing, verifying, rounds * len(accounts)
    finally:
        for session in sessions:
            await session.__aexit__(None, None, None)


def test_tprf_servers_issue_and_verify(benchmark, cluster):
    rounds = 3 if benchmark.disabled else ROUNDS
    result = {}

    def run():
        result["figures"] = asyncio.run(_workload(*cluster, rounds))

    benchmark.pedantic(run, rounds=1, iterations=1)
    issuing, verifying, otps = result["figures"]
    benchmark.extra_info.update(otps=otps, issued_per_second=round(otps / issuing, 1),
                                verified_per_second=round(otps / verifying, 1), servers=f"{T} of {N}",
                                devices=len(cluster[2]))
    print(f"\ntprf {T}-of-{N} share servers on loopback: {otps} OTPs, issued {otps / issuing:.0f}/s, "
          f"verified {otps / verifying:.0f}/s ({len(cluster[2])} devices at once)")
