"""Two server processes on one store (each backend): every OTP is accepted exactly once, and
the audit log stays one intact chain."""
import json
import os
import subprocess
import sys

from otpfast.services.admin import Admin
from otpfast.services.distribution import Distribution
from otpfast.services.masking import unmask
from otpfast.store.atrest import ENV_VAR

# Each worker opens its own store from $OTPFAST_AT_REST_KEY, says "ready", waits for "go" on
# stdin (so both race), then prints a JSON list of what it accepted.
STORE_WORKER = r"""
import json, sys, threading
from otpfast.store.atrest import load_key


def open_store(kind, target):
    if kind == "sqlite":
        from otpfast.store import SQLiteStore
        return SQLiteStore(target, load_key(None))
    from otpfast.store.postgres import PostgresStore
    return PostgresStore(target, load_key(None))


kind, target, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = open_store(kind, target)
digests = [store.keys.otp_digest("alice", f"{i:06d}") for i in range(n)]
won, errors, lock = [], [], threading.Lock()

def worker():
    try:
        attempt()
    except BaseException as exc:
        errors.append(exc)
        raise

def attempt():
    for i, digest in enumerate(digests):
        with store.transaction() as tx:
            accepted = tx.use_issued("alice", digest, 50.0)
            tx.audit(50.0, "verify", "alice", "rp", "net", "accepted" if accepted else "replay")
        if accepted:
            with lock:
                won.append(i)

print("ready", flush=True)
sys.stdin.readline()
pool = [threading.Thread(target=worker) for _ in range(threads)]
for t in pool:
    t.start()
for t in pool:
    t.join()
store.close()
if errors:
    sys.exit(f"a worker thread failed: {errors[0]!r}")
print(json.dumps(won), flush=True)
"""

SERVICE_WORKER = r"""
import json, sys
from otpfast.services.distribution import Distribution, VerifyItem
from otpfast.store.atrest import load_key


def open_store(kind, target):
    if kind == "sqlite":
        from otpfast.store import SQLiteStore
        return SQLiteStore(target, load_key(None))
    from otpfast.store.postgres import PostgresStore
    return PostgresStore(target, load_key(None))


kind, target, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
otps = json.loads(sys.stdin.readline())
store = open_store(kind, target)
distribution = Distribution(store, clock=lambda: 1000.0)
print("ready", flush=True)
sys.stdin.readline()
won = []
for start in range(0, len(otps), batch):
    chunk = otps[start:start + batch]
    results = distribution.verify_many([VerifyItem("alice", otp, "net") for otp in chunk])
    won += [otp for otp, ok in zip(chunk, results) if ok]
store.close()
print(json.dumps(won), flush=True)
"""


def race(script, args, key, stdin_first=None, processes=2):
    env = dict(os.environ, **{ENV_VAR: key.hex()})
    procs = [subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(processes)]
    try:
        for proc in procs:
            if stdin_first is not None:
                proc.stdin.write(stdin_first + "\n")
                proc.stdin.flush()
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [proc.returncode for proc in procs] == [0] * processes
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def test_two_processes_use_each_issued_otp_once(backend, store, key):
    n = 60
    with store.transaction() as tx:
        tx.add_account("alice", "hotp", {"lockout": 10}, {"key": "00"}, None, 1.0)
        for i in range(n):
            tx.issue("alice", "dev", store.keys.otp_digest("alice", f"{i:06d}"), 1.0, 100.0)
    wins = race(STORE_WORKER, [backend.kind, backend.target, n, 3], key)
    assert sorted(wins[0] + wins[1]) == list(range(n))      # each exactly once, none lost
    report = store.verify_audit()
    assert report.ok and report.entries == 2 * 3 * n + 1    # one linear chain, no entry lost


def test_two_processes_verify_many_accepts_each_otp_once(backend, store, key):
    """The real services (Admin, Distribution.verify_many group commit) in two processes."""
    admin = Admin(store, clock=lambda: 1000.0)
    admin.add_account("alice", "hotp", lockout=100)
    credential = admin.add_client("phone", account="alice")
    distribution = Distribution(store, clock=lambda: 1000.0)
    phone = distribution.login("phone", credential.encode())
    otps = []
    for _ in range(30):
        issued = distribution.request(phone, "alice")
        otps.append(unmask(phone.session_key, "alice", issued.nonce, issued.masked, issued.expires_at_ms))
    wins = race(SERVICE_WORKER, [backend.kind, backend.target, 5], key,
                stdin_first=json.dumps(otps))
    assert sorted(wins[0] + wins[1]) == sorted(otps)
    assert len(wins[0]) + len(wins[1]) == len(otps)
    assert store.account("alice").failures < 100
    report = store.verify_audit()
    verifies = [e for e in store.audit_entries() if e.event == "verify"]
    assert report.ok and len(verifies) == 2 * len(otps)
    assert sum(e.outcome == "accepted" for e in verifies) == len(otps)
