"""Bulk enrolment (issue 10 item 5): ``account add-many`` - N TOTP users, fresh CSPRNG
secrets, one transaction, rows sealed in bulk, an otpauth URI per user - against what an
admin would do without it: ``account add`` + ``enroll`` per user, one transaction each
(Admin.add_account + Admin.enrollment_uri), timed on a sample in the same run and scaled.

N: $OTPFAST_BENCH_USERS, else 100,000 when timing and 2,000 under --benchmark-disable (CI).
Run:
    python -m pytest bench/test_enrol.py --benchmark-enable -s
"""
import base64
import os
import sqlite3
import time
from urllib.parse import parse_qs, urlparse

import pytest

from otpfast.services.admin import Admin
from otpfast.services.bulk import Bulk
from otpfast.services.distribution import Distribution
from otpfast.store import SQLiteStore, new_key
from otpfast.totp import TOTP

TARGET_SECONDS_PER_100K = 10.0
SAMPLE = 200        # users enrolled one by one for the comparison


@pytest.fixture
def users(request):
    env = os.environ.get("OTPFAST_BENCH_USERS")
    if env:
        return int(env)
    return 2_000 if request.config.getoption("benchmark_disable") else 100_000


def _store(path):
    os.makedirs(path, exist_ok=True)
    return SQLiteStore(os.path.join(path, "store.db"), new_key(),
                       head_path=os.path.join(path, "audit.head"), create=True)


@pytest.mark.benchmark(group="enrol-totp")
def test_enrol_add_many(benchmark, tmp_path, users):
    runs = iter(range(100))
    stores = []

    def setup():
        store = _store(str(tmp_path / f"run{next(runs)}"))
        stores.append(store)
        return (store, str(tmp_path / f"uris{len(stores)}.txt")), {}

    def add_many(store, uris_path):
        with open(uris_path, "w") as out:
            for _, name, uri in Bulk(store).add_many(
                    ((n, f"user{n:06d}", None) for n in range(1, users + 1)), "totp"):
                out.write(f"{name}\t{uri}\n")

    benchmark.pedantic(add_many, setup=setup, rounds=1, iterations=1)
    store = stores[-1]
    try:
        path = store.path
        with sqlite3.connect(path) as raw:
            assert raw.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == users
            assert raw.execute("SELECT COUNT(*) FROM tokens").fetchone()[0] == users
        with open(str(tmp_path / f"uris{len(stores)}.txt")) as uris:
            lines = uris.read().splitlines()
        assert len(lines) == users
        distribution = Distribution(store)
        for line in (lines[0], lines[users // 2], lines[-1]):       # a sample verifies
            name, uri = line.split("\t")
            secret = base64.b32decode(parse_qs(urlparse(uri).query)["secret"][0])
            distribution.verify(name, TOTP(secret).generate(), source="bench")
    finally:
        for opened in stores:
            opened.close()

    # the alternative, in the same run: one `account add` + `enroll` per user
    one_by_one = _store(str(tmp_path / "one-by-one"))
    try:
        admin = Admin(one_by_one)
        start = time.perf_counter()
        for n in range(SAMPLE):
            admin.add_account(f"user{n:06d}", "totp")
            admin.enrollment_uri(f"user{n:06d}")
        per_user_alone = (time.perf_counter() - start) / SAMPLE
    finally:
        one_by_one.close()
    stats = getattr(benchmark.stats, "stats", None)
    if stats is not None:
        seconds = stats.mean
        per_user = seconds / users
        ratio = per_user_alone / per_user
        benchmark.extra_info.update(users=users, seconds=round(seconds, 3),
                                    per_user_us=round(per_user * 1e6, 2),
                                    one_by_one_per_user_us=round(per_user_alone * 1e6, 1),
                                    speedup=round(ratio, 1))
        print(f"\nadd-many: {users} TOTP users in {seconds:.2f} s ({per_user * 1e6:.1f} us "
              f"each); one account add + enroll per user: {per_user_alone * 1e6:.0f} us each "
              f"(projected {per_user_alone * users:.0f} s): {ratio:.0f}x faster")
        if users >= 100_000:
            assert seconds * 100_000 / users <= TARGET_SECONDS_PER_100K
