import contextlib

import pytest

from otpfast.errors import StoreUnavailable
from otpfast.services.distribution import Distribution, VerifyItem
from otpfast.services.throttle import Rate, RateLimiter


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_throttle_burst_then_rate():
    clock = Clock()
    limiter = RateLimiter(Rate(rate=2.0, burst=3), clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.blocked("a")
    clock.now += 0.5                      # one token back
    assert limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")             # keys are independent


def test_throttle_charge_counts_without_asking():
    clock = Clock()
    limiter = RateLimiter(Rate(rate=1.0, burst=2), clock=clock)
    limiter.charge("x")
    limiter.charge("x")
    limiter.charge("x")                   # never below zero
    assert limiter.blocked("x")
    clock.now += 1.0
    assert not limiter.blocked("x") and limiter.allow("x")


def test_throttle_tokens_peeks_without_taking():
    clock = Clock()
    limiter = RateLimiter(Rate(rate=2.0, burst=3), clock=clock)
    assert limiter.tokens("new") == 3 and len(limiter) == 0   # asking creates no bucket
    limiter.charge("x")
    limiter.charge("x")
    assert limiter.tokens("x") == 1 and limiter.tokens("x") == 1
    clock.now += 0.25
    assert limiter.tokens("x") == 1.5


def test_throttle_memory_bounded_oldest_out():
    clock = Clock()
    limiter = RateLimiter(Rate(rate=0.001, burst=1), clock=clock, max_keys=100)
    assert limiter.allow("victim") and not limiter.allow("victim")
    for i in range(1000):
        limiter.allow(f"k{i}")
    assert len(limiter) == 100
    assert not limiter.blocked("unknown")


def test_throttle_rejects_bad_rate():
    with pytest.raises(ValueError):
        Rate(rate=0, burst=1)


def test_throttle_refund_gives_back_one_token_up_to_the_burst():
    limiter = RateLimiter(Rate(rate=1.0, burst=2), clock=Clock())
    limiter.charge("a")
    limiter.charge("a")
    assert limiter.blocked("a")
    limiter.refund("a")
    assert limiter.tokens("a") == 1 and not limiter.blocked("a")
    limiter.refund("a")
    limiter.refund("a")
    assert limiter.tokens("a") == 2          # never above the burst
    limiter.refund("never-charged")
    assert len(limiter) == 1


def test_rolled_back_batch_gives_its_failures_back(store, admin, clock):
    """A batch whose transaction failed before COMMIT is decided again (the verifier
    retries it): its wrong OTPs count against the source once, not twice."""
    admin.add_account("alice", "hotp")

    class CommitLost:
        def __init__(self, inner):
            self._inner, self.failures = inner, 1

        def __getattr__(self, name):
            return getattr(self._inner, name)

        @contextlib.contextmanager
        def transaction(self, **kwargs):
            with self._inner.transaction(**kwargs) as tx:
                yield tx
                if self.failures:
                    self.failures -= 1
                    raise StoreUnavailable("connection lost", committed=False)

    distribution = Distribution(CommitLost(store), clock=clock)
    burst = distribution._failed_sources.limit.burst
    wrong = [VerifyItem("alice", "000000", "192.0.2.9"), VerifyItem("alice", "111111", "192.0.2.9")]
    with pytest.raises(StoreUnavailable):
        distribution.verify_many(wrong)
    assert distribution._failed_sources.tokens("192.0.2.9") == burst      # given back
    assert distribution.verify_many(wrong) == [False, False]
    assert distribution._failed_sources.tokens("192.0.2.9") == burst - 2  # counted once
