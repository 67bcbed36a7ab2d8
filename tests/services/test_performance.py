"""Performance sanity for the group commit the network layer relies on (>= 10k durable
verifications/s end to end): Distribution.verify_many on SQLite (WAL, synchronous=FULL),
batches of 64 over 64 accounts, for OTPs issued by the server and for authenticator-app HOTP
codes. Figures are printed (pytest -s); the asserted floors are far below them so a busy
shared machine does not make the test flaky. Also: one batch of 1,000 issued OTPs."""
import secrets
import time

import pytest

from otpfast.hotp import HOTP
from otpfast.services.distribution import VerifyItem

pytestmark = pytest.mark.parametrize("store", ["sqlite"], indirect=True)
ACCOUNTS, BATCH, BATCHES = 64, 64, 48


def issued_items(store, clock, names, count):
    items, now = [], clock()
    with store.transaction() as tx:
        for j in range(count):
            account, otp = names[j % len(names)], f"{secrets.randbelow(10**6):06d}"
            tx.issue(account, "dev", store.keys.otp_digest(account, otp), now, now + 300)
            items.append(VerifyItem(account, otp, "bench"))
    return items


def app_items(store, names, count):
    tokens = {n: HOTP(bytes.fromhex(store.account(n).material["key"])) for n in names}
    return [VerifyItem(names[j % len(names)],
                       tokens[names[j % len(names)]].generate(j // len(names)), "bench")
            for j in range(count)]


@pytest.mark.parametrize("kind", ["issued", "app"])
def test_verify_many_batches_of_64(admin, distribution, store, clock, kind):
    names = [f"acct{i}" for i in range(ACCOUNTS)]
    for name in names:
        admin.add_account(name, "hotp")
    count = BATCH * BATCHES
    items = (issued_items(store, clock, names, count) if kind == "issued"
             else app_items(store, names, count))
    start = time.perf_counter()
    accepted = sum(sum(distribution.verify_many(items[i:i + BATCH]))
                   for i in range(0, count, BATCH))
    elapsed = time.perf_counter() - start
    print(f"\nverify_many {kind}, batches of {BATCH}: {count / elapsed:,.0f} items/s")
    assert accepted == count
    assert count / elapsed > 3_000
    assert store.verify_audit().ok


def test_verify_many_thousand_items_is_fast(admin, distribution, store, clock):
    names = [f"acct{i}" for i in range(10)]
    for name in names:
        admin.add_account(name, "hotp")
    timings = []
    for _ in range(3):
        items = issued_items(store, clock, names, 1000)
        start = time.perf_counter()
        results = distribution.verify_many(items)
        timings.append(time.perf_counter() - start)
        assert all(results)
    best = min(timings)
    print(f"\nverify_many(1000): best {best * 1e3:.1f} ms of {[round(t * 1e3, 1) for t in timings]}")
    assert best < 0.5
    assert store.verify_audit().entries == 3000 + 10 + 3   # + the issuing transactions' row records
