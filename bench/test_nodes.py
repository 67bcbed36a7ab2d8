"""Nodes on one PostgreSQL store (issue 12, item 2): 1 node vs 2 nodes vs 1 node with 2
worker processes, in one run, plus the earlier design (2 processes on one shared audit
chain: the cluster-wide write lock) for comparison.

Each "node process" is a separate OS process with its own PostgresStore (its own node id,
so its own audit chain; ``--workers 2`` = two processes of one node id) running the real
``Distribution.verify_many`` group commit in a closed loop: batches of BATCH valid HOTP
codes of its own accounts (every one accepted and durable before the next batch). Printed
per scenario: verified/s (all processes, closed loop: saturated), p99 of the batch latency
(= each verification's store latency), and, per verification, the time spent in the one statement every node
serialises on (``nextval('row_versions')``, a round trip: an upper bound of the serial
part) and the time holding the account row locks (waited for only by a batch naming the
same account). Then 1 vs 2 nodes at the same offered load (open loop, 60 % of one node's
capacity): the p99 a client sees below saturation (on 2 shared cores a saturated closed
loop only measures CPU time-sharing). The Amdahl projection for 4/8/16 nodes on separate
machines uses the measured serial fraction.

    OTPFAST_BENCH_NODES_SECONDS   seconds per scenario and round (default 1.5)
    OTPFAST_BENCH_NODES_ROUNDS    rounds, interleaved (default 1; quote medians of 3+)
    OTPFAST_TEST_POSTGRES_URL     an existing database (else a throwaway cluster)

    python -m pytest bench/test_nodes.py --benchmark-disable -q -s
"""
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("OTPFAST_BENCH_NODES_SECONDS", "1.5"))
ROUNDS = int(os.environ.get("OTPFAST_BENCH_NODES_ROUNDS", "1"))
BATCH = 32
ACCOUNTS_PER_PROCESS = 64
KEY_HEX = "3132333435363738393031323334353637383930"
# name -> node id per process (None: chain 1, shared by both: the earlier global lock)
SCENARIOS = {"1 node": ["n1"], "2 nodes": ["n1", "n2"], "1 node, --workers 2": ["n1", "n1"],
             "2 processes, one shared chain (before)": [None, None]}

WORKER = r"""
import hmac, json, statistics, struct, sys, time
from otpfast.services.distribution import Distribution, VerifyItem
from otpfast.store.postgres import PostgresStore

url, key_hex, node, head, names, seconds, batch, start_at, rate = json.loads(sys.argv[1])
store = PostgresStore(url, bytes.fromhex(key_hex), node=node, head_path=head)
secret = bytes.fromhex(%(secret)r)
counters = {name: store.account(name).counter for name in names}

def code(counter):
    mac = hmac.digest(secret, struct.pack(">Q", counter), "sha1")
    o = mac[-1] & 15
    return "%%06d" %% ((struct.unpack(">I", mac[o:o + 4])[0] & 0x7FFFFFFF) %% 10**6)

timers = {"nextval": 0.0, "locked": 0.0}
conn = store._conn()
real_execute = conn.execute
lock_started = [None]

def execute(query, params=None, **kw):
    t = time.perf_counter()
    try:
        return real_execute(query, params, **kw)
    finally:
        if "nextval('row_versions')" in query:
            timers["nextval"] += time.perf_counter() - t
        elif "FOR UPDATE" in query and "FROM accounts" in query:
            lock_started[0] = t
        elif query == "COMMIT" and lock_started[0] is not None:
            timers["locked"] += time.perf_counter() - lock_started[0]
            lock_started[0] = None

conn.execute = execute
dist = Distribution(store, clock=time.time)
while time.time() < start_at:
    time.sleep(0.001)
latencies, verified, accepted, i = [], 0, 0, 0
begin = time.perf_counter()
end = begin + seconds
while time.perf_counter() < end:
    chosen = [names[(i + k) %% len(names)] for k in range(batch)]
    items = [VerifyItem(name, code(counters[name]), "bench") for name in chosen]
    for name in chosen:
        counters[name] += 1
    t = time.perf_counter()
    if rate:        # open loop: batch k is due at begin + k * batch / rate; lateness counts
        due = begin + i / rate
        if due > t:
            time.sleep(due - t)
        t = due
    i += batch
    results = dist.verify_many(items)
    latencies.append(time.perf_counter() - t)
    verified += len(items)
    accepted += sum(results)
store.close()
print(json.dumps({"verified": verified, "accepted": accepted, "latencies": latencies,
                  "nextval": timers["nextval"], "locked": timers["locked"]}))
""" % {"secret": KEY_HEX}


@pytest.fixture(scope="module")
def pg_url():
    url = os.environ.get("OTPFAST_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    cluster = os.path.join(tempfile.gettempdir(), f"otpfast-bench-pg-{os.getpid()}")
    script = str(ROOT / "tools" / "start-postgres.sh")
    started = subprocess.run([script, cluster], capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        pytest.skip(f"no PostgreSQL: {started.stderr.strip()[-200:]}")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([script, "--stop", cluster], capture_output=True, timeout=60)
        shutil.rmtree(cluster, ignore_errors=True)


@pytest.fixture(scope="module")
def world(pg_url, tmp_path_factory):
    """A fresh schema with enough accounts for every process of every scenario."""
    import psycopg

    from otpfast.services.admin import Admin
    from otpfast.store import new_key
    from otpfast.store.postgres import PostgresStore

    schema = f"otpfast_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = psycopg.conninfo.make_conninfo(pg_url, options=f"-c search_path={schema}")
    key = new_key()
    directory = tmp_path_factory.mktemp("nodes")
    store = PostgresStore(url, key, create=True, head_path=str(directory / "audit.head"))
    admin = Admin(store, clock=time.time)
    most = max(len(nodes) for nodes in SCENARIOS.values())
    names = [f"u{i}" for i in range(most * ACCOUNTS_PER_PROCESS)]
    for name in names:
        admin.add_account(name, "hotp", secret=bytes.fromhex(KEY_HEX), lockout=100, window=50)
    yield {"url": url, "key": key, "dir": directory, "names": names, "store": store}
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _run(world, nodes, rate=0.0):
    start_at = time.time() + 1.0        # every process imported and connected
    procs = []
    for index, node in enumerate(nodes):
        names = world["names"][index * ACCOUNTS_PER_PROCESS:(index + 1) * ACCOUNTS_PER_PROCESS]
        node_dir = world["dir"] / (node or "shared")
        node_dir.mkdir(exist_ok=True)
        args = [world["url"], world["key"].hex(), node, str(node_dir / "audit.head"), names,
                SECONDS, BATCH, start_at, rate / len(nodes)]
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)],
                                      stdout=subprocess.PIPE, text=True,
                                      env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}))
    outs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=SECONDS + 60)
        assert proc.returncode == 0
        outs.append(json.loads(out))
    verified = sum(o["verified"] for o in outs)
    assert sum(o["accepted"] for o in outs) == verified        # every code accepted, once
    latencies = sorted(x for o in outs for x in o["latencies"])
    p99 = latencies[-(-len(latencies) * 99 // 100) - 1]
    if rate:
        assert verified >= 0.8 * rate * SECONDS, "the processes could not keep up the load"
    return {"rate": verified / SECONDS, "p99_ms": p99 * 1000,
            "serial_us": sum(o["nextval"] for o in outs) / verified * 1e6,
            "locked_us": sum(o["locked"] for o in outs) / verified * 1e6,
            "busy_us": sum(sum(o["latencies"]) for o in outs) / verified * 1e6}


def amdahl(serial_fraction: float, n: int) -> float:
    return 1.0 / (serial_fraction + (1.0 - serial_fraction) / n)


def test_nodes_throughput(world):
    rounds: dict = {name: [] for name in SCENARIOS}
    for _ in range(ROUNDS):
        for name, nodes in SCENARIOS.items():
            rounds[name].append(_run(world, nodes))
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
           for name, runs in rounds.items()}
    one = med["1 node"]
    lines = [f"\nnodes on PostgreSQL: batches of {BATCH}, {SECONDS} s x {ROUNDS} round(s), medians"]
    for name, m in med.items():
        lines.append(f"  {name:40s} {m['rate']:8.0f} verified/s ({m['rate'] / one['rate']:.2f}x)"
                     f"  p99 {m['p99_ms']:6.2f} ms ({m['p99_ms'] / one['p99_ms']:.2f}x)"
                     f"  per verification: {m['busy_us']:.0f} us in verify_many,"
                     f" {m['locked_us']:.0f} us holding its account rows,"
                     f" {m['serial_us']:.2f} us in nextval")
    # latency at the same offered load (open loop, 60 % of one node's capacity, split over
    # the processes): what a client sees below saturation
    load = 0.6 * one["rate"]
    paced: dict = {name: [] for name in ("1 node", "2 nodes")}
    for _ in range(ROUNDS):
        for name in paced:
            paced[name].append(_run(world, SCENARIOS[name], rate=load))
    p99 = {name: statistics.median(r["p99_ms"] for r in runs) for name, runs in paced.items()}
    lines.append(f"  at the same offered load ({load:.0f} verifications/s, open loop): p99"
                 f" 1 node {p99['1 node']:.2f} ms, 2 nodes {p99['2 nodes']:.2f} ms"
                 f" ({p99['2 nodes'] / p99['1 node']:.2f}x)")
    s = one["serial_us"] / one["busy_us"]
    lines.append(f"  serial fraction (nextval round trip / verify_many time, 1 node): {s:.4f}")
    for n in (4, 8, 16):
        lines.append(f"  Amdahl, {n:2d} nodes on separate machines: {amdahl(s, n):5.2f}x ="
                     f" {one['rate'] * amdahl(s, n):8.0f} verified/s (before the database"
                     " server's own CPU and WAL limit)")
    print("\n".join(lines))
    assert world["store"].verify_audit().ok
