"""Performance sanity for the group commit the network layer relies on (>= 10k durable
verifications/s end to end): verify_many of 1,000 issued OTPs in one transaction, WAL with
synchronous=FULL. Target well under 100 ms; asserted at 500 ms so a busy shared machine
does not make the test flaky. The measured figure is printed (pytest -s)."""
import secrets
import time

from otpfast.services.distribution import VerifyItem


def test_verify_many_thousand_items_is_fast(admin, distribution, store, clock):
    for i in range(10):
        admin.add_account(f"acct{i}", "hotp")
    timings = []
    for _ in range(3):
        items = []
        now = clock()
        with store.transaction() as tx:
            for j in range(1000):
                account = f"acct{j % 10}"
                otp = f"{secrets.randbelow(10**6):06d}"
                tx.issue(account, "dev", store.keys.otp_digest(account, otp), now, now + 300)
                items.append(VerifyItem(account, otp, "bench"))
        start = time.perf_counter()
        results = distribution.verify_many(items)
        timings.append(time.perf_counter() - start)
        assert all(results)
    best = min(timings)
    print(f"\nverify_many(1000): best {best * 1e3:.1f} ms of {[round(t * 1e3, 1) for t in timings]}")
    assert best < 0.5
    assert store.verify_audit().entries == 3000 + 10
